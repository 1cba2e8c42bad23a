// CommandDispatcher: persists each session command (pending), sends it (sent), records ack and the outcome
// (completed | failed), applies the deadline (failed as timeout), re-sends unacked commands when the agent
// reconnects and after a control-plane restart, and lets callers await the outcome. It is the one consumer
// of agents' command reports (AgentHub routes them here). Tunnel commands do not go through it: a viewer's
// `vnc_connect` and `vnc_disconnect` are AgentHub.openTunnel's, and are never persisted.
//
// The steps on the log are in internal/commandLog.ts.
import type { AgentId, Command, CommandId, SessionId } from "@streamspace/protocol"
import { Traceparent } from "@streamspace/protocol"
import type { Duration as D } from "effect"
import { Clock, Context, Duration, Effect, Layer, Option, Schema } from "effect"
import { HttpTraceContext } from "effect/http"
import { randomUUID } from "node:crypto"
import { AgentHub } from "./AgentHub.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import {
  armDeadline,
  awaitOutcome,
  CommandDispatcherError,
  type CommandOutcome,
  load,
  makeCommandLog,
  onReport,
  recover,
  redeliver,
  storeError,
  track,
  transition
} from "./internal/commandLog.ts"
import { joinCluster, redeliverFromStore, wakeHolder } from "./internal/commandRouting.ts"
import { GROUP_COMMIT_MAX, makeGroupCommit } from "./internal/groupCommit.ts"
import { currentReplicas } from "./Replicas.ts"
import { type CommandRecord, Store } from "./Store.ts"

export { CommandDispatcherError, type CommandOutcome } from "./internal/commandLog.ts"
export type { CommandRecord } from "./Store.ts"

/** The actions that go through the durable log (tunnel commands are AgentHub's). */
export type LoggedAction = Exclude<Command["action"], "vnc_connect" | "vnc_disconnect">

/** A command as the caller describes it: the protocol's `Command` without id, deadline and traceparent, which the dispatcher adds. */
export type CommandRequest = { [A in LoggedAction]: Pick<Extract<Command, { readonly action: A }>, "action" | "args"> }[LoggedAction]

export interface CommandDispatcherShape {
  /** Persists and (if the agent is connected) sends a command; returns at once with the record. */
  readonly dispatch: (
    agentId: AgentId,
    request: CommandRequest,
    options?: { readonly timeout?: D.Input; readonly sessionId?: SessionId }
  ) => Effect.Effect<CommandRecord, CommandDispatcherError>
  /** Waits for the outcome of a command (including ones dispatched before a restart). */
  readonly await: (id: CommandId) => Effect.Effect<CommandOutcome, CommandDispatcherError>
  readonly get: (id: CommandId) => Effect.Effect<CommandRecord, CommandDispatcherError>
}

const isTraceparent = Schema.is(Traceparent)

/** The W3C traceparent of the current span, when there is one, so the agent continues the trace. */
const currentTraceparent = Effect.map(Effect.option(Effect.currentSpan), (span) =>
  Option.flatMap(span, (s) => Option.filter(Option.fromUndefinedOr(HttpTraceContext.toHeaders(s)["traceparent"]), isTraceparent)))

/** Builds the dispatcher on the Store and the hub. Background fibers (deadlines) live in the surrounding scope. */
export const make = Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  const hub = yield* AgentHub
  const store = yield* Store
  const replicas = yield* currentReplicas
  const log = yield* makeCommandLog(hub, store)
  if (replicas.clustered) yield* joinCluster(log, replicas, config.replicaLease)
  yield* hub.subscribe({
    // With replicas, another replica may have persisted commands for this agent: they are read from the Store.
    onConnected: (agentId, _hello) => replicas.clustered ? redeliverFromStore(log, agentId) : redeliver(log, agentId),
    onCommandReport: (agentId, report) => onReport(log, agentId, report)
  })
  yield* recover(log)
  // Commands dispatched while others are being written go together, in one statement (group commit); each is
  // still sent only once its row is committed.
  const insert = yield* makeGroupCommit({ one: store.commands.insert, many: store.commands.insertMany, max: GROUP_COMMIT_MAX })

  const dispatch = Effect.fn("CommandDispatcher.dispatch")(function*(
    agentId: AgentId,
    request: CommandRequest,
    options?: { readonly timeout?: D.Input; readonly sessionId?: SessionId }
  ) {
    const agent = yield* hub.get(agentId)
    if (Option.isNone(agent)) return yield* new CommandDispatcherError({ reason: "AgentUnavailable", message: `no agent ${agentId}` })
    const enrollment = agent.value.enrollment
    if (enrollment === "rejected" || enrollment === "revoked") {
      return yield* new CommandDispatcherError({ reason: "AgentUnavailable", message: `agent ${agentId} is ${enrollment}` })
    }
    const timeout = options?.timeout === undefined ? config.commandTimeout : Duration.fromInputUnsafe(options.timeout)
    const deadline = new Date((yield* Clock.currentTimeMillis) + Duration.toMillis(timeout))
    const traceparent = yield* currentTraceparent
    const command = {
      command_id: `cmd-${randomUUID()}` as CommandId,
      deadline: deadline.toISOString(),
      ...(Option.isSome(traceparent) ? { traceparent: traceparent.value } : {}),
      ...request
    } as Command
    const record = yield* insert({ agentId, sessionId: options?.sessionId, command }).pipe(
      Effect.mapError(storeError(`could not record command ${command.command_id}`))
    )
    track(log, record.id, agentId)
    yield* Effect.annotateCurrentSpan({ command_id: record.id, agent_id: agentId, action: request.action })
    yield* armDeadline(log, record)
    // Persisted before the connectivity check: an agent connecting meanwhile finds it in the log.
    const sent = yield* hub.send(agentId, "command", command).pipe(Effect.as(true), Effect.catchTag("AgentHubError", () => Effect.succeed(false)))
    if (!sent) {
      // Another replica may hold the agent's socket: it sends the command when woken.
      if (replicas.clustered) yield* wakeHolder(replicas, agentId, record.id)
      return record
    }
    const moved = yield* transition(log, record.id, "sent")
    // The `sent` row is what the caller sees; only when something moved it first (an outcome already) is it read.
    return Option.isSome(moved) ? moved.value : yield* load(log, record.id)
  })

  return CommandDispatcher.of({
    dispatch,
    await: Effect.fn("CommandDispatcher.await")((id: CommandId) => awaitOutcome(log, id)),
    get: Effect.fn("CommandDispatcher.get")((id: CommandId) => load(log, id))
  })
})

export class CommandDispatcher extends Context.Service<CommandDispatcher, CommandDispatcherShape>()("control-plane/CommandDispatcher") {
  /** The dispatcher on the Store. Needs AgentHub, Store and ControlPlaneConfig. */
  static readonly layer = Layer.effect(CommandDispatcher, make)
}
