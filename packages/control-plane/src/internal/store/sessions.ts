// The `sessions` table and its state history (`session_history`). Transitions move forward only:
// pending -> creating -> running -> terminating -> terminated (steps may be skipped), or to failed from any
// non-final state, and the hibernation loop running -> hibernating -> hibernated -> creating; a change and its history row land in one statement. A session's create and delete command
// ids are not columns: they are the latest such commands of the session in the `commands` table.
import type { AgentId, CommandId, SessionId, SessionPhase, SessionSpec, TemplateName, UserId } from "@streamspace/protocol"
import { Array as Arr, Effect } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import type { Fragment } from "effect/sql/Statement"
import { date, type Db, type Row, strOrUndefined, type Transition } from "./db.ts"
import { bytes, millicores } from "../teams/quota.ts"
import type { StoreError } from "./error.ts"

export type IdleAction = "hibernate" | "delete"

/** The lifecycle policy a session was created with (ms; 0 = no limit): see internal/sessions/policy.ts. */
export interface SessionPolicy {
  readonly idle_timeout_ms: number
  readonly max_lifetime_ms: number
  readonly idle_action: IdleAction
  readonly warn_before_ms: number
}

export interface SessionRecord {
  readonly id: SessionId
  readonly userId: UserId
  readonly template: TemplateName
  /** The agent the session was placed on. */
  readonly agentId: AgentId
  /** The region the user asked for, if any. */
  readonly region: string | undefined
  readonly state: SessionPhase
  /** Short machine-readable cause of the current state, e.g. `ImagePullBackOff`, `lost_on_agent`. */
  readonly reason: string | undefined
  readonly message: string | undefined
  /** The resolved spec as sent to the agent. */
  readonly spec: SessionSpec
  readonly createCommandId: CommandId | undefined
  readonly deleteCommandId: CommandId | undefined
  /** The latest hibernate_session command (a resume's resume_session counts as the create command). */
  readonly hibernateCommandId?: CommandId | undefined
  /** Idle and lifetime limits; absent for sessions created before policies existed (no limits). */
  readonly policy?: SessionPolicy | undefined
  /** The team the session is charged to (issue 18); undefined: none (the user is in no team). */
  readonly team?: string | undefined
  readonly createdAt: Date
  readonly updatedAt: Date
}

export type NewSession = Pick<SessionRecord, "id" | "userId" | "template" | "agentId" | "spec" | "region" | "policy" | "team">

/**
 * Who made a state change: a user (their token's `sub`: the owner or an admin), an agent (its report or its
 * answer to a command), or the control plane itself (a deadline, a reconcile, a policy).
 */
export type Actor = `user:${string}` | `agent:${string}` | "system"

/** One row of a session's state history (the first is `pending`, written by `insert`). */
export interface SessionEvent {
  readonly sessionId: SessionId
  readonly state: SessionPhase
  readonly reason: string | undefined
  readonly message: string | undefined
  /** Undefined for rows written before actors were recorded. */
  readonly actor: Actor | undefined
  readonly at: Date
}

/** Where a page of sessions (newest first) ends: the last session's creation time and id. */
export interface SessionKey {
  readonly createdAt: Date
  readonly id: string
}

/** What a transition records besides the state. */
export interface TransitionDetail {
  readonly reason?: string | undefined
  readonly message?: string | undefined
  readonly actor?: Actor | undefined
}

export interface SessionFilter {
  readonly userId?: string | undefined
  readonly agentId?: string | undefined
  readonly states?: ReadonlyArray<SessionPhase> | undefined
}

export interface SessionsTable {
  /**
   * Inserts in state `pending` with its first history row, in one statement. NotFound if the user, template
   * or agent does not exist; Conflict if the id exists.
   */
  readonly insert: (session: NewSession, actor?: Actor) => Effect.Effect<SessionRecord, StoreError>
  /**
   * Inserts several, each as `insert` does, in one statement (group commit): all or none. A failure names the
   * first session only; callers that need each one's own error insert them one at a time after it.
   */
  readonly insertMany: (sessions: NonEmptyReadonlyArray<{ readonly session: NewSession; readonly actor?: Actor | undefined }>) => Effect.Effect<ReadonlyArray<SessionRecord>, StoreError>
  readonly get: (id: string) => Effect.Effect<SessionRecord, StoreError>
  /** Oldest first. */
  readonly list: (filter?: SessionFilter) => Effect.Effect<ReadonlyArray<SessionRecord>, StoreError>
  /**
   * Newest first (created_at, then id, both descending): at most `limit` sessions (all when undefined) that
   * come after `after` in that order (keyset pagination, stable while sessions are added).
   */
  readonly page: (filter: SessionFilter, limit: number | undefined, after: SessionKey | undefined) => Effect.Effect<ReadonlyArray<SessionRecord>, StoreError>
  /**
   * Moves forward only (see above). When it moves, reason/message are set (cleared when absent) and a history
   * row is appended in the same statement; otherwise nothing is written and `changed` is false. NotFound for
   * an unknown id.
   */
  readonly transition: (
    id: string,
    to: Exclude<SessionPhase, "pending">,
    detail?: TransitionDetail
  ) => Effect.Effect<Transition<SessionRecord>, StoreError>
  /**
   * Changes the reason and message of an ended (terminated or failed) session, with a history row: a delete that
   * reached its pod after the session had ended. Does nothing to a live one (`changed` false).
   */
  readonly annotateEnded: (id: string, detail: TransitionDetail) => Effect.Effect<Transition<SessionRecord>, StoreError>
  /** The state history, oldest first. NotFound for an unknown id. */
  readonly history: (id: string) => Effect.Effect<ReadonlyArray<SessionEvent>, StoreError>
  /** Sessions per state (states with none are absent). */
  readonly countByState: () => Effect.Effect<ReadonlyMap<SessionPhase, number>, StoreError>
  /** Sessions not yet terminated or failed, per agent (agents with none are absent). */
  readonly countActiveByAgent: () => Effect.Effect<ReadonlyMap<string, number>, StoreError>
}

export const toSession = (r: Row): SessionRecord => ({
  id: r.id as SessionId,
  userId: r.user_id as UserId,
  template: r.template as TemplateName,
  agentId: r.agent_id as AgentId,
  region: strOrUndefined(r.region),
  state: r.state as SessionPhase,
  reason: strOrUndefined(r.reason),
  message: strOrUndefined(r.message),
  spec: r.spec as SessionSpec,
  createCommandId: strOrUndefined(r.create_command_id) as CommandId | undefined,
  deleteCommandId: strOrUndefined(r.delete_command_id) as CommandId | undefined,
  hibernateCommandId: strOrUndefined(r.hibernate_command_id) as CommandId | undefined,
  policy: (r.policy ?? undefined) as SessionPolicy | undefined,
  ...(r.team === null || r.team === undefined ? {} : { team: r.team as string }),
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

const toSessionEvent = (r: Row): SessionEvent => ({
  sessionId: r.session_id as SessionId,
  state: r.state as SessionPhase,
  reason: strOrUndefined(r.reason),
  message: strOrUndefined(r.message),
  actor: strOrUndefined(r.actor) as Actor | undefined,
  at: date(r.at)
})

/** Where each target state may be reached from (forward only). */
const sessionFrom: Record<Exclude<SessionPhase, "pending">, ReadonlyArray<SessionPhase>> = {
  creating: ["pending", "hibernated"],
  running: ["pending", "creating", "hibernating"],
  terminating: ["pending", "creating", "running", "hibernating", "hibernated"],
  terminated: ["pending", "creating", "running", "terminating", "hibernating", "hibernated"],
  failed: ["pending", "creating", "running", "terminating", "hibernating", "hibernated"],
  hibernating: ["running"],
  hibernated: ["hibernating"]
}
const ACTIVE_SESSION_STATES: ReadonlyArray<SessionPhase> = ["pending", "creating", "running", "terminating", "hibernating"]

export const makeSessions = ({ json, mustExist, now, one, q, refsChecked, sql }: Db): SessionsTable => {
  /** The columns of a session row `t` plus its latest create and delete command ids. */
  const withCommandIds = (t: string): Fragment =>
    sql`${sql(t)}.*,
      (SELECT c.id FROM commands c WHERE c.session_id = ${sql(t)}.id AND c.action IN ('create_session', 'resume_session') ORDER BY c.created_at DESC, c.id DESC LIMIT 1) AS create_command_id,
      (SELECT c.id FROM commands c WHERE c.session_id = ${sql(t)}.id AND c.action = 'delete_session' ORDER BY c.created_at DESC, c.id DESC LIMIT 1) AS delete_command_id,
      (SELECT c.id FROM commands c WHERE c.session_id = ${sql(t)}.id AND c.action = 'hibernate_session' ORDER BY c.created_at DESC, c.id DESC LIMIT 1) AS hibernate_command_id`

  const get = (id: string) =>
    q("session", id, sql<Row>`SELECT ${withCommandIds("s")} FROM sessions s WHERE s.id = ${id}`).pipe(
      Effect.flatMap((rows) => one("session", id, rows, toSession))
    )

  const where = (filter: SessionFilter | undefined, extra: ReadonlyArray<Fragment> = []) => {
    const clauses: Array<Fragment> = [...extra]
    if (filter?.userId !== undefined) clauses.push(sql`s.user_id = ${filter.userId}`)
    if (filter?.agentId !== undefined) clauses.push(sql`s.agent_id = ${filter.agentId}`)
    if (filter?.states !== undefined) {
      clauses.push(filter.states.length === 0 ? sql`false` : sql`s.state IN ${sql.in(filter.states)}`)
    }
    return clauses.length === 0 ? sql`` : sql`WHERE ${sql.and(clauses)}`
  }

  const sessionRow = (s: NewSession, at: Date) => ({
    id: s.id,
    user_id: s.userId,
    template: s.template,
    agent_id: s.agentId,
    state: "pending",
    reason: null,
    message: null,
    spec: json(s.spec),
    region: s.region ?? null,
    policy: s.policy === undefined ? null : json(s.policy),
    team: s.team ?? null,
    cpu_millicores: millicores(s.spec.resources?.cpu),
    memory_bytes: bytes(s.spec.resources?.memory),
    created_at: at,
    updated_at: at
  })

  return {
    insert: Effect.fn("Store.sessions.insert")(function*(s: NewSession, actor?: Actor) {
      const at = yield* now
      // One statement (so atomic without a transaction): the session row and its first history row. A missing
      // user, template or agent fails the foreign key; only then is each looked up, to name it in NotFound.
      const rows = yield* refsChecked(
        "session",
        s.id,
        sql<Row>`WITH s AS (
            INSERT INTO sessions ${sql.insert(sessionRow(s, at))} RETURNING *
          ), h AS (
            INSERT INTO session_history (session_id, state, reason, message, actor, at) SELECT id, state, reason, message, ${actor ?? null}, created_at FROM s
          )
          SELECT * FROM s`,
        Effect.gen(function*() {
          yield* mustExist("user", s.userId, "users", "id")
          yield* mustExist("template", s.template, "templates", "name")
          yield* mustExist("agent", s.agentId, "agents", "id")
        })
      )
      return toSession(rows[0]!)
    }),
    insertMany: Effect.fn("Store.sessions.insertMany")(function*(items: NonEmptyReadonlyArray<{ readonly session: NewSession; readonly actor?: Actor | undefined }>) {
      const at = yield* now
      // The history rows are written in the same statement: their foreign key is checked at its end.
      const history = Arr.map(items, ({ actor, session }) => ({ session_id: session.id, state: "pending", reason: null, message: null, actor: actor ?? null, at }))
      const rows = yield* q(
        "session",
        items[0].session.id,
        sql<Row>`WITH s AS (
            INSERT INTO sessions ${sql.insert(Arr.map(items, ({ session }) => sessionRow(session, at)))} RETURNING *
          ), h AS (
            INSERT INTO session_history ${sql.insert(history)}
          )
          SELECT * FROM s`
      )
      const byId = new Map(rows.map((r) => [r.id as string, toSession(r)]))
      return items.map(({ session }) => byId.get(session.id)!)
    }),
    get: Effect.fn("Store.sessions.get")(function*(id: string) {
      return yield* get(id)
    }),
    list: Effect.fn("Store.sessions.list")(function*(filter?: SessionFilter) {
      return (yield* q("session", "*", sql<Row>`SELECT ${withCommandIds("s")} FROM sessions s ${where(filter)} ORDER BY s.created_at, s.id`)).map(toSession)
    }),
    page: Effect.fn("Store.sessions.page")(function*(filter: SessionFilter, limit: number | undefined, after: SessionKey | undefined) {
      const before = after === undefined ? [] : [sql`(s.created_at, s.id) < (${after.createdAt}, ${after.id})`]
      const cap = limit === undefined ? sql`` : sql`LIMIT ${limit}`
      return (yield* q("session", "*", sql<Row>`SELECT ${withCommandIds("s")} FROM sessions s ${where(filter, before)} ORDER BY s.created_at DESC, s.id DESC ${cap}`)).map(toSession)
    }),
    transition: Effect.fn("Store.sessions.transition")(function*(
      id: string,
      to: Exclude<SessionPhase, "pending">,
      detail?: TransitionDetail
    ) {
      const at = yield* now
      const reason = detail?.reason ?? null
      const message = detail?.message ?? null
      const actor = detail?.actor ?? null
      // One statement: the guarded update and, only when it matched, the history row.
      const rows = yield* q(
        "session",
        id,
        sql<Row>`WITH u AS (
            UPDATE sessions SET state = ${to}, reason = ${reason}, message = ${message}, updated_at = ${at}
            WHERE id = ${id} AND state IN ${sql.in(sessionFrom[to])} RETURNING *
          ), h AS (
            INSERT INTO session_history (session_id, state, reason, message, actor, at) SELECT id, state, reason, message, ${actor}, updated_at FROM u
          )
          SELECT ${withCommandIds("u")} FROM u`
      )
      if (rows.length === 0) return { changed: false, row: yield* get(id) }
      return { changed: true, row: toSession(rows[0]!) }
    }),
    annotateEnded: Effect.fn("Store.sessions.annotateEnded")(function*(id: string, detail: TransitionDetail) {
      const at = yield* now
      const rows = yield* q(
        "session",
        id,
        sql<Row>`WITH u AS (
            UPDATE sessions SET reason = ${detail.reason ?? null}, message = ${detail.message ?? null}, updated_at = ${at}
            WHERE id = ${id} AND state IN ('terminated', 'failed') RETURNING *
          ), h AS (
            INSERT INTO session_history (session_id, state, reason, message, actor, at) SELECT id, state, reason, message, ${detail.actor ?? null}, updated_at FROM u
          )
          SELECT ${withCommandIds("u")} FROM u`
      )
      if (rows.length === 0) return { changed: false, row: yield* get(id) }
      return { changed: true, row: toSession(rows[0]!) }
    }),
    history: Effect.fn("Store.sessions.history")(function*(id: string) {
      const rows = yield* q("session", id, sql<Row>`SELECT * FROM session_history WHERE session_id = ${id} ORDER BY seq`)
      if (rows.length === 0) yield* get(id) // NotFound, or (impossibly) a session without history
      return rows.map(toSessionEvent)
    }),
    countByState: Effect.fn("Store.sessions.countByState")(function*() {
      const rows = yield* q("session", "*", sql<Row>`SELECT state, count(*)::int AS n FROM sessions GROUP BY state`)
      return new Map(rows.map((r) => [r.state as SessionPhase, Number(r.n)]))
    }),
    countActiveByAgent: Effect.fn("Store.sessions.countActiveByAgent")(function*() {
      const rows = yield* q(
        "session",
        "*",
        sql<Row>`SELECT agent_id, count(*)::int AS n FROM sessions
          WHERE agent_id IS NOT NULL AND state IN ${sql.in(ACTIVE_SESSION_STATES)} GROUP BY agent_id`
      )
      return new Map(rows.map((r) => [r.agent_id as string, Number(r.n)]))
    })
  }
}
