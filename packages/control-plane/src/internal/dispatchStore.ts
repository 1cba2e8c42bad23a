// What the dispatcher persists about a command, and the narrow slice of the Store it needs. Transitions are
// guarded in the store (only from the listed states), so a late or duplicate report never moves a command
// backwards and two writers cannot both win.
import type { Command, CommandError, CommandId, CommandResult, CommandState } from "@streamspace/protocol"
import type { Effect, Option } from "effect"
import type { CommandRecord } from "../CommandDispatcher.ts"

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
}

export const OPEN_STATES: ReadonlyArray<CommandState> = ["pending", "sent", "ack"]

/** Applies a transition to an in-memory record (shared by the memory store and tests). */
export const applyTransition = (c: StoredCommand, to: CommandState, patch: TransitionPatch): StoredCommand => ({
  ...c,
  state: to,
  sentAt: to === "sent" ? patch.at : c.sentAt,
  ackedAt: to === "ack" ? patch.at : c.ackedAt,
  completedAt: to === "completed" ? patch.at : c.completedAt,
  failedAt: to === "failed" ? patch.at : c.failedAt,
  result: patch.result ?? c.result,
  error: patch.error ?? c.error
})
