// CommandQueue: receives commands from the control plane, acks each at once, runs at most
// MAX_CONCURRENT_OPERATIONS at a time (serialised per session, in arrival order), applies COMMAND_TIMEOUT
// or the command's own deadline, dedupes by command id, enforces MAX_SESSIONS, and reports every outcome.
import type { Command, CommandError, CommandErrorCode, CommandId, CommandResult, Message, SessionId } from "@streamspace/protocol"
import { MAX_SESSIONS_PER_MESSAGE } from "@streamspace/protocol"
import { Cause, Clock, Context, Deferred, Duration, Effect, FiberMap, Layer, Metric, Option, Semaphore, Tracer } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { Connection } from "./Connection.ts"
import * as Metrics from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"
import type { SessionStoreError } from "./SessionStore.ts"
import { TunnelPool } from "./TunnelPool.ts"
import type { TunnelPoolError } from "./TunnelPool.ts"

export type Outcome =
  | { readonly _tag: "completed"; readonly result: CommandResult }
  | { readonly _tag: "failed"; readonly error: CommandError }

export interface CommandQueueShape {
  /** Acks the command at once, then runs it; a re-delivered command gets its first outcome again. */
  readonly submit: (message: Message<"command">) => Effect.Effect<void>
  /** Stops taking commands, waits up to `timeout` for in-flight ones, then fails the rest with `shutting_down`. */
  readonly shutdown: (timeout: Duration.Duration) => Effect.Effect<void>
  /** Commands acked and not yet answered. */
  readonly inFlight: Effect.Effect<number>
}

/** Outcomes of this many recent commands are kept to answer re-deliveries. */
export const OUTCOME_MEMORY = 10_000

const failure = (code: CommandErrorCode, message: string, retryable = false): Outcome => ({ _tag: "failed", error: { code, message, retryable } })

const fromStoreError = (e: SessionStoreError): Outcome => {
  switch (e.reason) {
    case "NotFound":
      return failure("session_not_found", e.message)
    case "Rejected":
      return failure("kubernetes_rejected", e.message)
    case "Forbidden":
      return failure("forbidden", e.message)
    case "Unavailable":
      return failure("kubernetes_unavailable", e.message, true)
    case "CapacityExceeded":
      return failure("capacity_exceeded", e.message, true)
  }
}

const fromTunnelError = (e: TunnelPoolError): Outcome => {
  switch (e.reason) {
    case "SessionNotFound":
      return failure("session_not_found", e.message)
    case "SessionNotRunning":
      return failure("session_not_running", e.message, true)
    case "TooManyTunnels":
      return failure("capacity_exceeded", e.message, true)
    case "PortForwardFailed":
      return failure("tunnel_failed", e.message, true)
    case "DuplicateTunnel":
      return failure("invalid_command", e.message)
  }
}

/** The session a command touches; commands on one session run one at a time, in arrival order. */
const sessionOf = (command: Command): SessionId | undefined =>
  command.action === "create_session" || command.action === "delete_session" || command.action === "vnc_connect"
    ? command.args.session_id
    : undefined

const parentSpan = (traceparent: string | undefined) => {
  if (traceparent === undefined) return undefined
  const [, traceId, spanId, flags] = traceparent.split("-")
  return Tracer.externalSpan({ traceId: traceId!, spanId: spanId!, sampled: (parseInt(flags!, 16) & 1) === 1 })
}

export class CommandQueue extends Context.Service<CommandQueue, CommandQueueShape>()("agent/CommandQueue") {
  static readonly layer: Layer.Layer<CommandQueue, never, AgentConfig | Connection | SessionStore | TunnelPool> = Layer.effect(
    CommandQueue,
    Effect.gen(function*() {
      const config = yield* AgentConfig
      const connection = yield* Connection
      const store = yield* SessionStore
      const tunnels = yield* TunnelPool

      const outcomes = new Map<CommandId, { readonly command: Command; readonly outcome: Outcome }>()
      const inflight = new Map<CommandId, { readonly command: Command; readonly startedAt: number; settled: boolean }>()
      const tails = new Map<SessionId, Deferred.Deferred<void>>()
      const operations = yield* Semaphore.make(config.maxConcurrentOperations)
      const admission = yield* Semaphore.make(1)
      const fibers = yield* FiberMap.make<CommandId>()
      let reservedCreates = 0
      let accepting = true

      const sendOutcome = (command: Command, outcome: Outcome) =>
        (outcome._tag === "completed"
          ? connection.send("command_completed", { command_id: command.command_id, result: outcome.result })
          : connection.send("command_failed", { command_id: command.command_id, action: command.action, error: outcome.error })).pipe(
            Effect.catch((e) => Effect.logDebug(`outcome not sent (${e.message}); it is re-sent when the command is re-delivered`))
          )

      const remember = (command: Command, outcome: Outcome) => {
        outcomes.set(command.command_id, { command, outcome })
        if (outcomes.size > OUTCOME_MEMORY) outcomes.delete(outcomes.keys().next().value!)
      }

      /** Records and reports an outcome once; later attempts (e.g. after shutdown failed it) are ignored. */
      const settle = Effect.fnUntraced(function*(command: Command, outcome: Outcome, startedAt: number) {
        const entry = inflight.get(command.command_id)
        if (entry === undefined || entry.settled) return
        entry.settled = true
        remember(command, outcome)
        const elapsed = (yield* Clock.currentTimeMillis) - startedAt
        const label = outcome._tag === "completed" ? "completed" : "failed"
        yield* Metric.update(Metric.withAttributes(Metrics.commandDuration, { action: command.action, outcome: label }), elapsed / 1000)
        yield* Metric.update(Metric.withAttributes(Metrics.commandsTotal, { action: command.action, outcome: label }), 1)
        if (outcome._tag === "completed") yield* Effect.logInfo(`command ${command.action} completed in ${elapsed}ms`)
        else yield* Effect.logWarning(`command ${command.action} failed: ${outcome.error.code}: ${outcome.error.message}`)
        yield* sendOutcome(command, outcome)
      })

      /** Reserves a MAX_SESSIONS slot for a new session (an existing one is adopted without a slot). */
      const admitCreate = (id: SessionId) =>
        admission.withPermits(1)(Effect.gen(function*() {
          const existing = yield* store.get(id)
          if (Option.isSome(existing) && existing.value.phase !== "terminated" && existing.value.phase !== "failed") return Option.some(false)
          const active = yield* store.activeCount
          if (active + reservedCreates >= config.maxSessions) return Option.none()
          reservedCreates++
          return Option.some(true)
        }))

      const perform = (command: Command): Effect.Effect<Outcome, SessionStoreError | TunnelPoolError> => {
        switch (command.action) {
          case "create_session": {
            const id = command.args.session_id
            return Effect.gen(function*() {
              const admitted = yield* admitCreate(id)
              if (Option.isNone(admitted)) {
                return failure("capacity_exceeded", `this agent runs its maximum of ${config.maxSessions} sessions (MAX_SESSIONS)`, true)
              }
              const session = yield* store.create(id, command.args.spec).pipe(
                Effect.ensuring(Effect.sync(() => {
                  if (admitted.value) reservedCreates--
                }))
              )
              return { _tag: "completed", result: { action: "create_session", session } } as Outcome
            })
          }
          case "delete_session":
            return store.delete(command.args.session_id).pipe(
              Effect.as<Outcome>({ _tag: "completed", result: { action: "delete_session", session_id: command.args.session_id } })
            )
          case "list_sessions":
            return store.list.pipe(
              Effect.map((sessions): Outcome => ({
                _tag: "completed",
                result: { action: "list_sessions", sessions: sessions.slice(0, MAX_SESSIONS_PER_MESSAGE) }
              }))
            )
          case "vnc_connect":
            return tunnels.open(command.args.session_id, command.args.tunnel_id, command.args.window).pipe(
              Effect.map((r): Outcome => ({ _tag: "completed", result: { action: "vnc_connect", tunnel_id: command.args.tunnel_id, window: r.window } }))
            )
          case "vnc_disconnect":
            return tunnels.close(command.args.tunnel_id, "disconnect").pipe(
              Effect.as<Outcome>({ _tag: "completed", result: { action: "vnc_disconnect", tunnel_id: command.args.tunnel_id } })
            )
        }
      }

      const execute = Effect.fn("CommandQueue.execute")(function*(
        command: Command,
        previous: Deferred.Deferred<void> | undefined,
        mine: Deferred.Deferred<void> | undefined,
        startedAt: number,
        deadlineMs: number
      ) {
        const budget = Duration.millis(Math.max(0, deadlineMs - startedAt))
        const outcome = yield* Effect.gen(function*() {
          if (previous !== undefined) yield* Deferred.await(previous)
          return yield* operations.withPermits(1)(perform(command))
        }).pipe(
          Effect.catchTags({
            SessionStoreError: (e) => Effect.succeed(fromStoreError(e)),
            TunnelPoolError: (e) => Effect.succeed(fromTunnelError(e))
          }),
          Effect.timeoutOption(budget),
          Effect.map(Option.getOrElse(() => failure("timeout", `command did not finish within ${Duration.format(budget)} (COMMAND_TIMEOUT or its deadline)`, true))),
          Effect.catchDefect((defect) => Effect.succeed(failure("internal", `agent bug: ${Cause.pretty(Cause.die(defect)).split("\n")[0]}`)))
        )
        yield* settle(command, outcome, startedAt)
      }, (effect, command, previous, mine) =>
        effect.pipe(
          Effect.ensuring(Effect.gen(function*() {
            inflight.delete(command.command_id)
            if (mine === undefined) return
            // The next command on this session waits for this one AND everything before it.
            if (previous !== undefined) yield* Deferred.await(previous)
            yield* Deferred.succeed(mine, undefined)
            const id = sessionOf(command)!
            if (tails.get(id) === mine) tails.delete(id)
          }))
        ))

      const annotations = (command: Command) => ({
        command_id: command.command_id,
        action: command.action,
        ...(sessionOf(command) !== undefined ? { session_id: sessionOf(command) } : {}),
        ...(command.action === "vnc_connect" || command.action === "vnc_disconnect" ? { tunnel_id: command.args.tunnel_id } : {}),
        ...(command.traceparent !== undefined ? { trace_id: command.traceparent.split("-")[1] } : {})
      })

      const submit = Effect.fn("CommandQueue.submit")(function*(message: Message<"command">) {
        const command = message.payload
        const id = command.command_id
        yield* connection.send("command_ack", { command_id: id }).pipe(Effect.catch(() => Effect.void))
        const done = outcomes.get(id)
        if (done !== undefined) {
          yield* Effect.logInfo("re-delivered command: answering with its first outcome")
          return yield* sendOutcome(done.command, done.outcome)
        }
        if (inflight.has(id)) return yield* Effect.logInfo("re-delivered command is still running")
        const startedAt = yield* Clock.currentTimeMillis
        if (!accepting) {
          const outcome = failure("shutting_down", "the agent is shutting down and takes no new commands", true)
          yield* Effect.logWarning("refused a command: shutting down")
          return yield* sendOutcome(command, outcome)
        }
        inflight.set(id, { command, startedAt, settled: false })
        const session = sessionOf(command)
        let previous: Deferred.Deferred<void> | undefined
        let mine: Deferred.Deferred<void> | undefined
        if (session !== undefined) {
          previous = tails.get(session)
          mine = yield* Deferred.make<void>()
          tails.set(session, mine)
        }
        const deadline = Date.parse(command.deadline)
        const deadlineMs = Math.min(startedAt + Duration.toMillis(config.commandTimeout), Number.isNaN(deadline) ? Number.POSITIVE_INFINITY : deadline)
        const span = parentSpan(command.traceparent)
        const run = execute(command, previous, mine, startedAt, deadlineMs)
        yield* FiberMap.run(fibers, id, span === undefined ? run : Effect.withParentSpan(run, span))
      }, (effect, message) => Effect.annotateLogs(effect, annotations(message.payload)))

      const shutdown = Effect.fn("CommandQueue.shutdown")(function*(timeout: Duration.Duration) {
        accepting = false
        if (inflight.size === 0) return
        yield* Effect.logInfo(`waiting up to ${Duration.format(timeout)} for ${inflight.size} command(s) in flight`)
        yield* FiberMap.awaitEmpty(fibers).pipe(Effect.ignore, Effect.timeoutOption(timeout))
        const left = [...inflight.values()].filter((e) => !e.settled)
        yield* Effect.forEach(left, (entry) =>
          settle(entry.command, failure("shutting_down", "the agent stopped before the command finished", true), entry.startedAt).pipe(
            Effect.annotateLogs(annotations(entry.command))
          ), { discard: true })
        yield* FiberMap.clear(fibers)
      })

      return CommandQueue.of({
        submit,
        shutdown,
        inFlight: Effect.sync(() => inflight.size)
      })
    })
  )
}
