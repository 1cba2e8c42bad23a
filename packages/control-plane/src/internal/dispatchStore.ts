// What the dispatcher persists about a command, and the narrow slice of the Store it needs. Transitions are
// guarded in the store (only from the listed states), so a late or duplicate report never moves a command
// backwards and two writers cannot both win.
import type { AgentId, Command, CommandError, CommandErrorCode, CommandId, CommandResult, CommandState } from "@streamspace/protocol"
import { Effect, Option } from "effect"
import type { CommandRecord } from "../CommandDispatcher.ts"
import type { Command as CommandRow, StoreShape } from "../Store.ts"

export interface StoredCommand extends CommandRecord {
  /** The exact `command` payload sent to the agent (id, deadline, traceparent, action, args): re-sent as is. */
  readonly command: Command
  readonly sessionId: string | undefined
}

export interface TransitionPatch {
  readonly at: Date
  readonly result?: CommandResult
  readonly error?: CommandError
}

export interface DispatchStore {
  readonly insert: (command: StoredCommand) => Effect.Effect<void, unknown>
  readonly get: (id: CommandId) => Effect.Effect<Option.Option<StoredCommand>, unknown>
  /** Moves the command to `to` when its state is one of `from`; the updated command, or None when the guard failed. */
  readonly transition: (
    id: CommandId,
    from: ReadonlyArray<CommandState>,
    to: CommandState,
    patch: TransitionPatch
  ) => Effect.Effect<Option.Option<StoredCommand>, unknown>
  /** Every command still pending, sent or acked, oldest first. */
  readonly listOpen: Effect.Effect<ReadonlyArray<StoredCommand>, unknown>
  /** Records a redelivery of a sent or acked command (attempts + 1). */
  readonly resent: (id: CommandId) => Effect.Effect<void, unknown>
}

export const OPEN_STATES: ReadonlyArray<CommandState> = ["pending", "sent", "ack"]

/** The DispatchStore on the control plane's Store (whose transitions are forward-only by themselves). */
export const dispatchStoreFrom = (store: StoreShape): DispatchStore => ({
  insert: (c) =>
    Effect.asVoid(store.commands.insert({
      id: c.id,
      agentId: c.agentId,
      sessionId: c.sessionId ?? null,
      action: c.action,
      payload: c.command.args,
      traceparent: c.command.traceparent ?? null,
      deadlineAt: c.deadline
    })),
  get: (id) =>
    store.commands.get(id).pipe(
      Effect.map((row) => Option.some(fromRow(row))),
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(Option.none()))
    ),
  transition: (id, _from, to, patch) =>
    to === "pending"
      ? Effect.succeed(Option.none())
      : Effect.map(
        store.commands.transition(id, to, { result: patch.result, error: patch.error }),
        (t) => (t.changed ? Option.some(fromRow(t.row)) : Option.none())
      ),
  listOpen: Effect.map(store.commands.listUnfinished(), (rows) => rows.map(fromRow)),
  resent: (id) => Effect.asVoid(store.commands.resend(id))
})

const fromRow = (row: CommandRow): StoredCommand => ({
  id: row.id as CommandId,
  agentId: row.agentId as AgentId,
  action: row.action as Command["action"],
  state: row.state,
  result: (row.result ?? undefined) as CommandResult | undefined,
  error: row.error === null
    ? undefined
    : { code: row.error.code as CommandErrorCode, message: row.error.message, retryable: row.error.retryable ?? false },
  createdAt: row.createdAt,
  sentAt: row.sentAt ?? undefined,
  ackedAt: row.ackedAt ?? undefined,
  completedAt: row.completedAt ?? undefined,
  failedAt: row.failedAt ?? undefined,
  deadline: row.deadlineAt,
  // Rebuilt exactly as first sent: the payload column keeps the args.
  command: {
    command_id: row.id,
    deadline: row.deadlineAt.toISOString(),
    ...(row.traceparent === null ? {} : { traceparent: row.traceparent }),
    action: row.action,
    args: row.payload
  } as Command,
  sessionId: row.sessionId ?? undefined
})
