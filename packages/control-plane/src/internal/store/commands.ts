// The `commands` table: the durable command log. Every command the control plane persists, with the exact
// payload sent to the agent and a timestamp per lifecycle step. Transitions move forward only:
// pending -> sent -> ack -> completed | failed (steps may be skipped; completed and failed are final), guarded
// in the UPDATE, so a late or duplicate report never moves a command backwards and two writers cannot both win.
import type { AgentId, Command, CommandError, CommandId, CommandResult, CommandState, SessionId } from "@streamspace/protocol"
import { Array as Arr, Effect } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import { date, dateOrUndefined, type Db, type Row, type Transition } from "./db.ts"
import type { StoreError } from "./error.ts"

export interface CommandRecord {
  readonly id: CommandId
  readonly agentId: AgentId
  readonly sessionId: SessionId | undefined
  /** The `command` payload exactly as sent, and re-sent, to the agent (id, deadline, traceparent, action, args). */
  readonly command: Command
  readonly action: Command["action"]
  readonly state: CommandState
  readonly result: CommandResult | undefined
  readonly error: CommandError | undefined
  /** How many times it was sent (0 while pending). */
  readonly attempts: number
  /** `command.deadline`, as a Date. */
  readonly deadline: Date
  readonly createdAt: Date
  readonly sentAt: Date | undefined
  readonly ackedAt: Date | undefined
  readonly completedAt: Date | undefined
  readonly failedAt: Date | undefined
}

/** A command to log: id, deadline and traceparent are the payload's own. */
export interface NewCommand {
  readonly agentId: AgentId
  readonly sessionId?: SessionId | undefined
  readonly command: Command
}

export interface CommandsTable {
  /** Inserts in state `pending`, attempts 0. NotFound if the agent or session does not exist; Conflict if the id exists. */
  readonly insert: (command: NewCommand) => Effect.Effect<CommandRecord, StoreError>
  /** Inserts several, each as `insert` does, in one statement (group commit): all or none. */
  readonly insertMany: (commands: NonEmptyReadonlyArray<NewCommand>) => Effect.Effect<ReadonlyArray<CommandRecord>, StoreError>
  readonly get: (id: string) => Effect.Effect<CommandRecord, StoreError>
  /** pending, sent and ack commands (of one agent, or all), oldest first: what to redeliver or time out after a restart. */
  readonly listUnfinished: (agentId?: string) => Effect.Effect<ReadonlyArray<CommandRecord>, StoreError>
  /** A session's commands, oldest first. */
  readonly listBySession: (sessionId: string) => Effect.Effect<ReadonlyArray<CommandRecord>, StoreError>
  /**
   * Moves forward only (see above). Stamps `sentAt` (and counts an attempt), `ackedAt`, `completedAt` with
   * `result`, or `failedAt` with `error`. Returns `changed: false` and writes nothing when the command is
   * already there or past it. NotFound for an unknown id.
   */
  readonly transition: (
    id: string,
    to: Exclude<CommandState, "pending">,
    outcome?: { readonly result?: CommandResult | undefined; readonly error?: CommandError | undefined }
  ) => Effect.Effect<Transition<CommandRecord>, StoreError>
  /** `transition` of several commands to `sent` or `ack` in one statement (group commit), in the order of `ids`. */
  readonly transitionMany: (ids: NonEmptyReadonlyArray<string>, to: "sent" | "ack") => Effect.Effect<ReadonlyArray<Transition<CommandRecord>>, StoreError>
  /** `transition` of several commands to `completed`, each with its result, in one statement (group commit). */
  readonly completeMany: (
    outcomes: NonEmptyReadonlyArray<{ readonly id: string; readonly result: CommandResult }>
  ) => Effect.Effect<ReadonlyArray<Transition<CommandRecord>>, StoreError>
  /** Records a redelivery of a `sent` or `ack` command: attempts + 1 and `sentAt` = now, state unchanged. */
  readonly resend: (id: string) => Effect.Effect<Transition<CommandRecord>, StoreError>
}

/** Rebuilt exactly as first sent: the payload column keeps the args. */
export const toCommand = (r: Row): CommandRecord => {
  const deadline = date(r.deadline_at)
  const traceparent = r.traceparent === null || r.traceparent === undefined ? {} : { traceparent: String(r.traceparent) }
  return {
    id: r.id as CommandId,
    agentId: r.agent_id as AgentId,
    sessionId: (r.session_id ?? undefined) as SessionId | undefined,
    command: { command_id: r.id, deadline: deadline.toISOString(), ...traceparent, action: r.action, args: r.payload } as Command,
    action: r.action as Command["action"],
    state: r.state as CommandState,
    result: (r.result ?? undefined) as CommandResult | undefined,
    error: (r.error ?? undefined) as CommandError | undefined,
    attempts: Number(r.attempts),
    deadline,
    createdAt: date(r.created_at),
    sentAt: dateOrUndefined(r.sent_at),
    ackedAt: dateOrUndefined(r.acked_at),
    completedAt: dateOrUndefined(r.completed_at),
    failedAt: dateOrUndefined(r.failed_at)
  }
}

const commandFrom: Record<Exclude<CommandState, "pending">, ReadonlyArray<CommandState>> = {
  sent: ["pending"],
  ack: ["pending", "sent"],
  completed: ["pending", "sent", "ack"],
  failed: ["pending", "sent", "ack"]
}
export const UNFINISHED_COMMAND_STATES: ReadonlyArray<CommandState> = ["pending", "sent", "ack"]

export const makeCommands = ({ json, jsonOrNull, mustExist, now, one, q, refsChecked, sql }: Db): CommandsTable => {
  const get = (id: string) => q("command", id, sql<Row>`SELECT * FROM commands WHERE id = ${id}`).pipe(Effect.flatMap((rows) => one("command", id, rows, toCommand)))

  /** The result of a guarded UPDATE: the new row, or the unchanged one. */
  const moved = (id: string, rows: ReadonlyArray<Row>) =>
    rows.length === 0 ? Effect.map(get(id), (row) => ({ changed: false, row })) : Effect.succeed({ changed: true, row: toCommand(rows[0]!) })

  /** `moved` for each of `ids`, from the rows a guarded multi-row UPDATE returned. */
  const movedEach = (ids: ReadonlyArray<string>, rows: ReadonlyArray<Row>) => {
    const byId = new Map(rows.map((r) => [r.id as string, r]))
    return Effect.forEach(ids, (id) => {
      const row = byId.get(id)
      return moved(id, row === undefined ? [] : [row])
    })
  }

  const commandRow = (c: NewCommand, at: Date) => ({
    id: c.command.command_id,
    agent_id: c.agentId,
    session_id: c.sessionId ?? null,
    action: c.command.action,
    payload: json(c.command.args),
    traceparent: c.command.traceparent ?? null,
    state: "pending",
    result: null,
    error: null,
    attempts: 0,
    deadline_at: new Date(c.command.deadline),
    created_at: at
  })

  return {
    insert: Effect.fn("Store.commands.insert")(function*(c: NewCommand) {
      const at = yield* now
      const id = c.command.command_id
      const sessionId = c.sessionId ?? null
      const rows = yield* refsChecked(
        "command",
        id,
        sql<Row>`INSERT INTO commands ${sql.insert(commandRow(c, at))} RETURNING *`,
        Effect.gen(function*() {
          yield* mustExist("agent", c.agentId, "agents", "id")
          if (sessionId !== null) yield* mustExist("session", sessionId, "sessions", "id")
        })
      )
      return toCommand(rows[0]!)
    }),
    insertMany: Effect.fn("Store.commands.insertMany")(function*(cs: NonEmptyReadonlyArray<NewCommand>) {
      const at = yield* now
      const rows = yield* q("command", cs[0].command.command_id, sql<Row>`INSERT INTO commands ${sql.insert(Arr.map(cs, (c) => commandRow(c, at)))} RETURNING *`)
      const byId = new Map(rows.map((r) => [r.id as string, toCommand(r)]))
      return cs.map((c) => byId.get(c.command.command_id)!)
    }),
    get: Effect.fn("Store.commands.get")(function*(id: string) {
      return yield* get(id)
    }),
    listUnfinished: Effect.fn("Store.commands.listUnfinished")(function*(agentId?: string) {
      const byAgent = agentId === undefined ? sql`` : sql`AND agent_id = ${agentId}`
      return (yield* q(
        "command",
        agentId ?? "*",
        sql<Row>`SELECT * FROM commands WHERE state IN ${sql.in(UNFINISHED_COMMAND_STATES)} ${byAgent} ORDER BY created_at, id`
      )).map(toCommand)
    }),
    listBySession: Effect.fn("Store.commands.listBySession")(function*(sessionId: string) {
      return (yield* q("command", sessionId, sql<Row>`SELECT * FROM commands WHERE session_id = ${sessionId} ORDER BY created_at, id`)).map(toCommand)
    }),
    transition: Effect.fn("Store.commands.transition")(function*(
      id: string,
      to: Exclude<CommandState, "pending">,
      outcome?: { readonly result?: CommandResult | undefined; readonly error?: CommandError | undefined }
    ) {
      const at = yield* now
      const set = to === "sent"
        ? sql`sent_at = ${at}, attempts = attempts + 1`
        : to === "ack"
        ? sql`acked_at = ${at}`
        : to === "completed"
        ? sql`completed_at = ${at}, result = ${jsonOrNull(outcome?.result)}`
        : sql`failed_at = ${at}, error = ${jsonOrNull(outcome?.error)}`
      const rows = yield* q("command", id, sql<Row>`UPDATE commands SET state = ${to}, ${set} WHERE id = ${id} AND state IN ${sql.in(commandFrom[to])} RETURNING *`)
      return yield* moved(id, rows)
    }),
    transitionMany: Effect.fn("Store.commands.transitionMany")(function*(ids: NonEmptyReadonlyArray<string>, to: "sent" | "ack") {
      const at = yield* now
      const set = to === "sent" ? sql`sent_at = ${at}, attempts = attempts + 1` : sql`acked_at = ${at}`
      const rows = yield* q("command", ids[0], sql<Row>`UPDATE commands SET state = ${to}, ${set} WHERE id IN ${sql.in(ids)} AND state IN ${sql.in(commandFrom[to])} RETURNING *`)
      return yield* movedEach(ids, rows)
    }),
    completeMany: Effect.fn("Store.commands.completeMany")(function*(outcomes: NonEmptyReadonlyArray<{ readonly id: string; readonly result: CommandResult }>) {
      const at = yield* now
      const values = sql.csv(outcomes.map((o) => sql`(${o.id}, ${json(o.result)})`))
      const rows = yield* q(
        "command",
        outcomes[0].id,
        sql<Row>`UPDATE commands AS c SET state = 'completed', completed_at = ${at}, result = v.result
          FROM (VALUES ${values}) AS v(id, result)
          WHERE c.id = v.id AND c.state IN ${sql.in(commandFrom.completed)} RETURNING c.*`
      )
      return yield* movedEach(outcomes.map((o) => o.id), rows)
    }),
    resend: Effect.fn("Store.commands.resend")(function*(id: string) {
      const at = yield* now
      const rows = yield* q("command", id, sql<Row>`UPDATE commands SET attempts = attempts + 1, sent_at = ${at} WHERE id = ${id} AND state IN ('sent', 'ack') RETURNING *`)
      return yield* moved(id, rows)
    })
  }
}
