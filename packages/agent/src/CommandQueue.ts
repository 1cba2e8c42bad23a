// CommandQueue: receives commands from the control plane, acks each at once, runs at most
// MAX_CONCURRENT_OPERATIONS at a time (serialised per session, in arrival order), applies COMMAND_TIMEOUT
// or the command's own deadline, dedupes by command id, enforces MAX_SESSIONS, and reports every outcome.
// Each command's spans are children of the control plane's `traceparent`.
import type { Command, CommandId, Message, SessionId } from "@streamspace/protocol"
import { MAX_SESSIONS_PER_MESSAGE } from "@streamspace/protocol"
import { Cause, Clock, Context, Duration, Effect, FiberMap, Layer, Metric, Option, Semaphore } from "effect"
import type { Tracer } from "effect"
import { Headers, HttpTraceContext } from "effect/http"
import { AgentConfig } from "./AgentConfig.ts"
import type { AgentConfigShape } from "./AgentConfig.ts"
import { Connection } from "./Connection.ts"
import type { ConnectionShape } from "./Connection.ts"
import { KeyedLine, type Turn } from "./internal/keyedLine.ts"
import { completed, failure, fromStoreError, fromTunnelError, type Outcome, OutcomeMemory } from "./internal/outcomes.ts"
import * as Metrics from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"
import type { SessionStoreError, SessionStoreShape } from "./SessionStore.ts"
import { TunnelPool } from "./TunnelPool.ts"
import type { TunnelPoolError, TunnelPoolShape } from "./TunnelPool.ts"

export { OUTCOME_MEMORY } from "./internal/outcomes.ts"
export type { Outcome } from "./internal/outcomes.ts"

export interface CommandQueueShape {
  /** Acks the command at once, then runs it; a re-delivered command gets its first outcome again. */
  readonly submit: (message: Message<"command">) => Effect.Effect<void>
  /** Stops taking commands, waits up to `timeout` for in-flight ones, then fails the rest with `shutting_down`. */
  readonly shutdown: (timeout: Duration.Duration) => Effect.Effect<void>
  /** Commands acked and not yet answered. */
  readonly inFlight: Effect.Effect<number>
}

interface InFlight {
  readonly command: Command
  readonly startedAt: number
  settled: boolean
}

interface State {
  readonly config: AgentConfigShape
  readonly connection: ConnectionShape
  readonly store: SessionStoreShape
  readonly tunnels: TunnelPoolShape
  readonly outcomes: OutcomeMemory
  readonly inflight: Map<CommandId, InFlight>
  /** Commands on one session run one at a time, in arrival order. */
  readonly sessions: KeyedLine<SessionId>
  readonly operations: Semaphore.Semaphore
  /** Serialises MAX_SESSIONS admission, so concurrent creates cannot both take the last slot. */
  readonly admission: Semaphore.Semaphore
  readonly fibers: FiberMap.FiberMap<CommandId>
  reservedCreates: number
  accepting: boolean
}

/** The session a command touches, if any. */
const sessionOf = (command: Command): SessionId | undefined =>
  command.action === "create_session" || command.action === "delete_session" || command.action === "vnc_connect" ||
    command.action === "hibernate_session" || command.action === "resume_session"
    ? command.args.session_id
    : undefined

/** The control plane's span of this command, from its W3C `traceparent`. */
const parentSpan = (command: Command): Option.Option<Tracer.ExternalSpan> =>
  command.traceparent === undefined ? Option.none() : HttpTraceContext.w3c(Headers.fromRecordUnsafe({ traceparent: command.traceparent }))

const annotations = (command: Command) => {
  const session = sessionOf(command)
  const parent = parentSpan(command)
  return {
    command_id: command.command_id,
    action: command.action,
    ...(session !== undefined ? { session_id: session } : {}),
    ...(command.action === "vnc_connect" || command.action === "vnc_disconnect" ? { tunnel_id: command.args.tunnel_id } : {}),
    ...(Option.isSome(parent) ? { trace_id: parent.value.traceId } : {})
  }
}

const sendOutcome = (s: State, command: Command, outcome: Outcome) =>
  (outcome._tag === "completed"
    ? s.connection.send("command_completed", { command_id: command.command_id, result: outcome.result })
    : s.connection.send("command_failed", { command_id: command.command_id, action: command.action, error: outcome.error })).pipe(
      Effect.catch((e) => Effect.logDebug(`outcome not sent (${e.message}); it is re-sent when the command is re-delivered`))
    )

/** Records and reports an outcome once; later attempts (e.g. after shutdown failed it) are ignored. */
const settle = Effect.fnUntraced(function*(s: State, command: Command, outcome: Outcome, startedAt: number) {
  const entry = s.inflight.get(command.command_id)
  if (entry === undefined || entry.settled) return
  entry.settled = true
  s.outcomes.remember(command, outcome)
  const elapsed = (yield* Clock.currentTimeMillis) - startedAt
  const labels = { action: command.action, outcome: outcome._tag }
  yield* Metric.update(Metric.withAttributes(Metrics.commandDuration, labels), elapsed / 1000)
  yield* Metric.update(Metric.withAttributes(Metrics.commandsTotal, labels), 1)
  if (outcome._tag === "completed") yield* Effect.logInfo(`command ${command.action} completed in ${elapsed}ms`)
  else yield* Effect.logWarning(`command ${command.action} failed: ${outcome.error.code}: ${outcome.error.message}`)
  yield* sendOutcome(s, command, outcome)
})

/** Reserves a MAX_SESSIONS slot for a new session: Some(true). An existing one is adopted without a slot: Some(false). Full: None. */
const admitCreate = (s: State, id: SessionId) =>
  s.admission.withPermits(1)(Effect.gen(function*() {
    const existing = yield* s.store.get(id)
    if (Option.isSome(existing) && existing.value.phase !== "terminated" && existing.value.phase !== "failed") return Option.some(false)
    const active = yield* s.store.activeCount
    if (active + s.reservedCreates >= s.config.maxSessions) return Option.none()
    s.reservedCreates++
    return Option.some(true)
  }))

const createSession = (s: State, id: SessionId, command: Extract<Command, { action: "create_session" }>) =>
  Effect.gen(function*() {
    const admitted = yield* admitCreate(s, id)
    if (Option.isNone(admitted)) {
      return failure("capacity_exceeded", `this agent runs its maximum of ${s.config.maxSessions} sessions (MAX_SESSIONS)`, true)
    }
    const session = yield* s.store.create(id, command.args.spec).pipe(
      Effect.ensuring(Effect.sync(() => {
        if (admitted.value) s.reservedCreates--
      }))
    )
    return completed({ action: "create_session", session })
  })

const resumeSession = (s: State, id: SessionId, command: Extract<Command, { action: "resume_session" }>) =>
  Effect.gen(function*() {
    const admitted = yield* admitCreate(s, id)
    if (Option.isNone(admitted)) {
      return failure("capacity_exceeded", `this agent runs its maximum of ${s.config.maxSessions} sessions (MAX_SESSIONS)`, true)
    }
    const session = yield* s.store.resume(id, command.args.spec).pipe(
      Effect.ensuring(Effect.sync(() => {
        if (admitted.value) s.reservedCreates--
      }))
    )
    return completed({ action: "resume_session", session })
  })

/** The session's tunnels close as its pod goes (`pod_gone`). */
const hibernateSession = (s: State, id: SessionId) =>
  s.store.hibernate(id).pipe(
    Effect.map((claim) =>
      completed({ action: "hibernate_session", session_id: id, ...(Option.isSome(claim) ? { home_claim: claim.value } : {}) })
    )
  )

/** What each action does, in the service that does it. */
const perform = (s: State, command: Command): Effect.Effect<Outcome, SessionStoreError | TunnelPoolError> => {
  switch (command.action) {
    case "create_session":
      return createSession(s, command.args.session_id, command)
    case "delete_session":
      return s.store.delete(command.args.session_id).pipe(Effect.as(completed({ action: "delete_session", session_id: command.args.session_id })))
    case "list_sessions":
      return s.store.list.pipe(Effect.map((sessions) => completed({ action: "list_sessions", sessions: sessions.slice(0, MAX_SESSIONS_PER_MESSAGE) })))
    case "vnc_connect":
      return s.tunnels.open(command.args.session_id, command.args.tunnel_id, command.args.window).pipe(
        Effect.map((r) => completed({ action: "vnc_connect", tunnel_id: command.args.tunnel_id, window: r.window }))
      )
    case "vnc_disconnect":
      return s.tunnels.close(command.args.tunnel_id, "disconnect").pipe(Effect.as(completed({ action: "vnc_disconnect", tunnel_id: command.args.tunnel_id })))
    case "hibernate_session":
      return hibernateSession(s, command.args.session_id)
    case "resume_session":
      return resumeSession(s, command.args.session_id, command)
    case "list_homes":
      return s.store.listHomes.pipe(Effect.map((homes) => completed({ action: "list_homes", homes: homes.slice(0, MAX_SESSIONS_PER_MESSAGE) })))
    case "delete_home":
      return s.store.deleteHome(command.args.name, command.args.user_id).pipe(Effect.as(completed({ action: "delete_home", name: command.args.name })))
    case "set_warm_pools":
      return s.store.setWarmPools(command.args.pools).pipe(Effect.as(completed({ action: "set_warm_pools" })))
  }
}

/** Runs one command within its budget (waiting for its turn counts), then settles it. */
const execute = Effect.fn("CommandQueue.execute")(function*(s: State, command: Command, turn: Turn | undefined, startedAt: number, deadlineMs: number) {
  const budget = Duration.millis(Math.max(0, deadlineMs - startedAt))
  const outcome = yield* Effect.gen(function*() {
    if (turn !== undefined) yield* turn.ready
    return yield* s.operations.withPermits(1)(perform(s, command))
  }).pipe(
    Effect.catchTags({
      SessionStoreError: (e) => Effect.succeed(fromStoreError(e)),
      TunnelPoolError: (e) => Effect.succeed(fromTunnelError(e))
    }),
    Effect.timeoutOption(budget),
    Effect.map(Option.getOrElse(() => failure("timeout", `command did not finish within ${Duration.format(budget)} (COMMAND_TIMEOUT or its deadline)`, true))),
    Effect.catchDefect((defect) => Effect.succeed(failure("internal", `agent bug: ${Cause.pretty(Cause.die(defect)).split("\n")[0]}`)))
  )
  yield* settle(s, command, outcome, startedAt)
}, (effect, s, command, turn) =>
  effect.pipe(
    Effect.ensuring(Effect.suspend(() => {
      s.inflight.delete(command.command_id)
      return turn === undefined ? Effect.void : turn.leave
    }))
  ))

const submit = (s: State) =>
  Effect.fn("CommandQueue.submit")(function*(message: Message<"command">) {
    const command = message.payload
    const id = command.command_id
    yield* s.connection.send("command_ack", { command_id: id }).pipe(Effect.catch(() => Effect.void))
    const done = s.outcomes.get(id)
    if (done !== undefined) {
      yield* Effect.logInfo("re-delivered command: answering with its first outcome")
      return yield* sendOutcome(s, done.command, done.outcome)
    }
    if (s.inflight.has(id)) return yield* Effect.logInfo("re-delivered command is still running")
    const startedAt = yield* Clock.currentTimeMillis
    if (!s.accepting) {
      yield* Effect.logWarning("refused a command: shutting down")
      return yield* sendOutcome(s, command, failure("shutting_down", "the agent is shutting down and takes no new commands", true))
    }
    s.inflight.set(id, { command, startedAt, settled: false })
    const session = sessionOf(command)
    const turn = session === undefined ? undefined : s.sessions.join(session)
    const deadline = Date.parse(command.deadline)
    const deadlineMs = Math.min(startedAt + Duration.toMillis(s.config.commandTimeout), Number.isNaN(deadline) ? Number.POSITIVE_INFINITY : deadline)
    const run = execute(s, command, turn, startedAt, deadlineMs)
    const parent = parentSpan(command)
    yield* FiberMap.run(s.fibers, id, Option.isSome(parent) ? Effect.withParentSpan(run, parent.value) : run)
  }, (effect, message) => Effect.annotateLogs(effect, annotations(message.payload)))

const shutdown = (s: State) =>
  Effect.fn("CommandQueue.shutdown")(function*(timeout: Duration.Duration) {
    s.accepting = false
    if (s.inflight.size === 0) return
    yield* Effect.logInfo(`waiting up to ${Duration.format(timeout)} for ${s.inflight.size} command(s) in flight`)
    yield* FiberMap.awaitEmpty(s.fibers).pipe(Effect.ignore, Effect.timeoutOption(timeout))
    const left = [...s.inflight.values()].filter((e) => !e.settled)
    yield* Effect.forEach(left, (entry) =>
      settle(s, entry.command, failure("shutting_down", "the agent stopped before the command finished", true), entry.startedAt).pipe(
        Effect.annotateLogs(annotations(entry.command))
      ), { discard: true })
    yield* FiberMap.clear(s.fibers)
  })

export const make = Effect.gen(function*() {
  const config = yield* AgentConfig
  const s: State = {
    config,
    connection: yield* Connection,
    store: yield* SessionStore,
    tunnels: yield* TunnelPool,
    outcomes: new OutcomeMemory(),
    inflight: new Map(),
    sessions: new KeyedLine(),
    operations: yield* Semaphore.make(config.maxConcurrentOperations),
    admission: yield* Semaphore.make(1),
    fibers: yield* FiberMap.make<CommandId>(),
    reservedCreates: 0,
    accepting: true
  }
  return CommandQueue.of({
    submit: submit(s),
    shutdown: shutdown(s),
    inFlight: Effect.sync(() => s.inflight.size)
  })
})

export class CommandQueue extends Context.Service<CommandQueue, CommandQueueShape>()("agent/CommandQueue") {
  static readonly layer: Layer.Layer<CommandQueue, never, AgentConfig | Connection | SessionStore | TunnelPool> = Layer.effect(CommandQueue, make)
}
