// Where Sessions keeps its records: the Store (`onStore`), or memory (`makeMemoryRepo`: tests and throwaway
// demos). Records are the Store's own types; Sessions owns every rule about them and keeps them in memory, so
// the repository only writes through and loads them at start.
import type { SessionId, SessionPhase, TemplateName, UserId } from "@streamspace/protocol"
import { Array as Arr, Clock, Effect, Schema } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import type { Role } from "../../Auth.ts"
import { quotaIssue } from "../teams/quota.ts"
import {
  type Actor,
  type NewTemplate,
  patchedTemplate,
  type SessionEvent,
  type SessionKey,
  type SessionRecord,
  type StoreError,
  type StoreShape,
  type TemplatePatch,
  type TemplateRecord,
  templateRecord
} from "../../Store.ts"

export class RepoError extends Schema.TaggedError<RepoError>()("RepoError", {
  reason: Schema.Literals(["Conflict", "Unavailable", "QuotaExceeded"]),
  message: Schema.String,
  /** The team and quota at fault (QuotaExceeded: the database's guard refused the insert). */
  team: Schema.optionalKey(Schema.String),
  quota: Schema.optionalKey(Schema.String)
}) {}

export interface SessionRepo {
  /** Makes sure the user row exists (sessions refer to it); keeps the role current. */
  readonly ensureUser: (id: UserId, role: Role) => Effect.Effect<void, RepoError>
  /** The live session records (not terminated or failed), for the in-memory view at start. */
  readonly loadSessions: Effect.Effect<ReadonlyArray<SessionRecord>, RepoError>
  /** Ended sessions (terminated, failed) per state, for the sessions gauge at start. */
  readonly countEnded: Effect.Effect<ReadonlyMap<SessionPhase, number>, RepoError>
  /** One session record, live or ended. */
  readonly getSession: (id: string) => Effect.Effect<SessionRecord | undefined, RepoError>
  /** Newest first (created, then id, descending), at most `limit` (all when undefined), after `after`; one user's or all. */
  readonly pageSessions: (userId: UserId | undefined, limit: number | undefined, after: SessionKey | undefined) => Effect.Effect<ReadonlyArray<SessionRecord>, RepoError>
  /** Writes a new record (state `pending`) and its first history row, made by `actor`. */
  readonly insertSession: (record: SessionRecord, actor: Actor) => Effect.Effect<void, RepoError>
  /** Writes several new records not charged to a team, as `insertSession` does, in one statement: all or none. */
  readonly insertSessions: (records: NonEmptyReadonlyArray<{ readonly record: SessionRecord; readonly actor: Actor }>) => Effect.Effect<void, RepoError>
  /** Writes a state change; `from` is the state it had, for the state history, which records `actor`. */
  readonly updateSession: (record: SessionRecord, from: SessionPhase, actor: Actor) => Effect.Effect<void, RepoError>
  /** The state history of a session, oldest first (empty for an unknown id). */
  readonly loadHistory: (id: SessionId) => Effect.Effect<ReadonlyArray<SessionEvent>, RepoError>
  readonly listTemplates: Effect.Effect<ReadonlyArray<TemplateRecord>, RepoError>
  readonly getTemplate: (name: TemplateName) => Effect.Effect<TemplateRecord | undefined, RepoError>
  /** The template as stored; Conflict when the name is taken. */
  readonly insertTemplate: (template: NewTemplate) => Effect.Effect<TemplateRecord, RepoError>
  /** The template as changed; undefined when there is none of that name. */
  readonly updateTemplate: (name: TemplateName, patch: TemplatePatch) => Effect.Effect<TemplateRecord | undefined, RepoError>
  /** False when there is none of that name. */
  readonly deleteTemplate: (name: TemplateName) => Effect.Effect<boolean, RepoError>
}

/** Every state but the final ones (terminated, failed): what Sessions keeps in memory. */
const LIVE: ReadonlyArray<SessionPhase> = ["pending", "creating", "running", "terminating", "hibernating", "hibernated"]

/** Newest first: created, then id, descending (the Store's page order). */
const newestFirst = (a: SessionRecord, b: SessionRecord) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
const isAfter = (s: SessionRecord, key: SessionKey) => s.createdAt.getTime() < key.createdAt.getTime() || (s.createdAt.getTime() === key.createdAt.getTime() && s.id < key.id)

const fromStore = (e: StoreError) => new RepoError({ reason: e.reason._tag === "Conflict" ? "Conflict" : "Unavailable", message: e.message })

const newSession = (r: SessionRecord) => ({ id: r.id, userId: r.userId, template: r.template, agentId: r.agentId, spec: r.spec, region: r.region, policy: r.policy, team: r.team })

/**
 * The repository on the Store. The Store's state machine (forward only, terminated/failed final) is the one
 * Sessions enforces, so a transition Sessions makes is one the Store accepts; command ids are the Store's own
 * (the latest create and delete command of each session).
 */
export const onStore = (store: StoreShape): SessionRepo => ({
  ensureUser: (id, role) => store.users.upsert({ id, name: id, role }).pipe(Effect.asVoid, Effect.mapError(fromStore)),
  loadSessions: store.sessions.list({ states: LIVE }).pipe(Effect.mapError(fromStore)),
  countEnded: store.sessions.countByState().pipe(
    Effect.map((m) => new Map([...m].filter(([state]) => !LIVE.includes(state)))),
    Effect.mapError(fromStore)
  ),
  getSession: (id) =>
    store.sessions.get(id).pipe(
      Effect.map((s): SessionRecord | undefined => s),
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(undefined)),
      Effect.mapError(fromStore)
    ),
  pageSessions: (userId, limit, after) => store.sessions.page({ userId }, limit, after).pipe(Effect.mapError(fromStore)),
  insertSession: (r, actor) => {
    const insert = store.sessions.insert(newSession(r), actor)
    // A charged session is written under its team's row lock, after the database's own count of what the team
    // holds: replicas that each checked the quota in memory cannot overshoot it together.
    const guarded = r.team === undefined ? insert : store.withTransaction(Effect.gen(function*() {
      const charge = yield* store.teams.lockCharge(r.team!)
      const issue = charge === undefined ? undefined : quotaIssue(charge.team, charge.held, r.spec.resources)
      if (issue !== undefined) return yield* new RepoError({ reason: "QuotaExceeded", message: issue.message, team: r.team!, quota: issue.quota })
      return yield* insert
    }))
    return guarded.pipe(
      Effect.asVoid,
      Effect.mapError((e) => (e._tag === "RepoError" ? e : fromStore(e)))
    )
  },
  insertSessions: (records) => store.sessions.insertMany(Arr.map(records, ({ actor, record }) => ({ session: newSession(record), actor }))).pipe(Effect.asVoid, Effect.mapError(fromStore)),
  updateSession: (r, from, actor) =>
    r.state === from && (r.state === "terminated" || r.state === "failed")
      ? store.sessions.annotateEnded(r.id, { reason: r.reason, message: r.message, actor }).pipe(Effect.asVoid, Effect.mapError(fromStore))
      : r.state === from || r.state === "pending"
      ? Effect.void
      : store.sessions.transition(r.id, r.state, { reason: r.reason, message: r.message, actor }).pipe(
        Effect.mapError(fromStore),
        Effect.flatMap((t) =>
          t.changed
            ? Effect.void
            : Effect.fail(new RepoError({ reason: "Conflict", message: `session ${r.id} is ${t.row.state} in the store; cannot move it to ${r.state}` }))
        )
      ),
  loadHistory: (id) =>
    store.sessions.history(id).pipe(
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed([])),
      Effect.mapError(fromStore)
    ),
  listTemplates: store.templates.list().pipe(Effect.mapError(fromStore)),
  getTemplate: (name) =>
    store.templates.get(name).pipe(
      Effect.map((t): TemplateRecord | undefined => t),
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(undefined)),
      Effect.mapError(fromStore)
    ),
  insertTemplate: (t) => store.templates.insert(t).pipe(Effect.mapError(fromStore)),
  updateTemplate: (name, patch) =>
    store.templates.update(name, patch).pipe(
      Effect.map((t): TemplateRecord | undefined => t),
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(undefined)),
      Effect.mapError(fromStore)
    ),
  deleteTemplate: (name) =>
    store.templates.remove(name).pipe(
      Effect.as(true),
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(false)),
      Effect.mapError(fromStore)
    )
})

/** The template every install starts with (the same one the Store's migration seeds). */
export const demoTemplate = (at: Date): TemplateRecord =>
  templateRecord({ name: "demo" as TemplateName, displayName: "Demo desktop", image: "streamspace/demo-desktop:latest", vncPort: 5900 }, at)

export interface MemoryRepo extends SessionRepo {
  /** State changes per session, oldest first: [from, to]. */
  readonly history: Map<string, Array<readonly [SessionPhase, SessionPhase]>>
  /** The full history rows per session (what `history(id)` answers). */
  readonly events: Map<string, Array<SessionEvent>>
  readonly sessions: Map<string, SessionRecord>
}

export const makeMemoryRepo = (seed: ReadonlyArray<TemplateRecord> = [demoTemplate(new Date(0))]): MemoryRepo => {
  const sessions = new Map<string, SessionRecord>()
  const templates = new Map<string, TemplateRecord>(seed.map((t) => [t.name, t]))
  const history = new Map<string, Array<readonly [SessionPhase, SessionPhase]>>()
  const events = new Map<string, Array<SessionEvent>>()
  const event = (r: SessionRecord, actor: Actor): SessionEvent => ({ sessionId: r.id, state: r.state, reason: r.reason, message: r.message, actor, at: r.updatedAt })
  const insertSession = (r: SessionRecord, actor: Actor) =>
    Effect.suspend(() => {
      if (sessions.has(r.id)) return Effect.fail(new RepoError({ reason: "Conflict", message: `session ${r.id} exists` }))
      sessions.set(r.id, r)
      history.set(r.id, [])
      events.set(r.id, [event(r, actor)])
      return Effect.void
    })
  return {
    sessions,
    history,
    events,
    ensureUser: () => Effect.void,
    loadSessions: Effect.sync(() => [...sessions.values()].filter((s) => LIVE.includes(s.state))),
    getSession: (id) => Effect.sync(() => sessions.get(id)),
    countEnded: Effect.sync(() => {
      const m = new Map<SessionPhase, number>()
      for (const s of sessions.values()) if (!LIVE.includes(s.state)) m.set(s.state, (m.get(s.state) ?? 0) + 1)
      return m
    }),
    pageSessions: (userId, limit, after) =>
      Effect.sync(() => {
        const all = [...sessions.values()].filter((s) => (userId === undefined || s.userId === userId) && (after === undefined || isAfter(s, after))).sort(newestFirst)
        return limit === undefined ? all : all.slice(0, limit)
      }),
    insertSession,
    insertSessions: (records) =>
      Effect.suspend(() =>
        records.some(({ record }) => sessions.has(record.id))
          ? Effect.fail(new RepoError({ reason: "Conflict", message: "a session exists" }))
          : Effect.forEach(records, ({ actor, record }) => insertSession(record, actor), { discard: true })
      ),
    updateSession: (r, from, actor) =>
      Effect.sync(() => {
        sessions.set(r.id, r)
        if (from === r.state) return
        history.get(r.id)?.push([from, r.state])
        events.get(r.id)?.push(event(r, actor))
      }),
    loadHistory: (id) => Effect.sync(() => events.get(id) ?? []),
    listTemplates: Effect.sync(() => [...templates.values()].sort((a, b) => (a.name < b.name ? -1 : 1))),
    getTemplate: (name) => Effect.sync(() => templates.get(name)),
    insertTemplate: (t) =>
      Effect.flatMap(Clock.currentTimeMillis, (ms) => {
        if (templates.has(t.name)) return Effect.fail(new RepoError({ reason: "Conflict", message: `template ${t.name} exists` }))
        const record = templateRecord(t, new Date(ms))
        templates.set(t.name, record)
        return Effect.succeed(record)
      }),
    updateTemplate: (name, patch) =>
      Effect.map(Clock.currentTimeMillis, (ms) => {
        const current = templates.get(name)
        if (current === undefined) return undefined
        const next = patchedTemplate(current, patch, new Date(ms))
        templates.set(name, next)
        return next
      }),
    deleteTemplate: (name) => Effect.sync(() => templates.delete(name))
  }
}
