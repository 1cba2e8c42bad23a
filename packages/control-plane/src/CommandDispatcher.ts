// CommandDispatcher: persists each command (pending), sends it (sent), records ack and the outcome
// (completed | failed), applies the deadline (failed as timeout), re-sends unacked commands when the agent
// reconnects and after a control-plane restart, and lets callers await the outcome.
import type { AgentId, Command, CommandError, CommandId, CommandResult, CommandState } from "@streamspace/protocol"
import type { Duration, Effect } from "effect"
import { Context, Schema } from "effect"

export class CommandDispatcherError extends Schema.TaggedError<CommandDispatcherError>()("CommandDispatcherError", {
  reason: Schema.Literals(["NotFound", "AgentUnavailable", "Store"]),
  message: Schema.String
}) {}

/** A command as the caller describes it: the dispatcher adds id, deadline and traceparent. */
export type CommandRequest = { [A in Command["action"]]: { readonly action: A; readonly args: Extract<Command, { action: A }>["args"] } }[Command["action"]]

export interface CommandRecord {
  readonly id: CommandId
  readonly agentId: AgentId
  readonly action: Command["action"]
  readonly state: CommandState
  readonly result: CommandResult | undefined
  readonly error: CommandError | undefined
  readonly createdAt: Date
  readonly sentAt: Date | undefined
  readonly ackedAt: Date | undefined
  readonly completedAt: Date | undefined
  readonly failedAt: Date | undefined
  readonly deadline: Date
}

export type CommandOutcome =
  | { readonly _tag: "Completed"; readonly record: CommandRecord; readonly result: CommandResult }
  | { readonly _tag: "Failed"; readonly record: CommandRecord; readonly error: CommandError }

export interface CommandDispatcherShape {
  /** Persists and (if the agent is connected) sends a command; returns at once with the record. */
  readonly dispatch: (
    agentId: AgentId,
    request: CommandRequest,
    options?: { readonly timeout?: Duration.Input; readonly sessionId?: string }
  ) => Effect.Effect<CommandRecord, CommandDispatcherError>
  /** Waits for the outcome of a command (including ones dispatched before a restart). */
  readonly await: (id: CommandId) => Effect.Effect<CommandOutcome, CommandDispatcherError>
  readonly get: (id: CommandId) => Effect.Effect<CommandRecord, CommandDispatcherError>
}

export class CommandDispatcher extends Context.Service<CommandDispatcher, CommandDispatcherShape>()("control-plane/CommandDispatcher") {}
