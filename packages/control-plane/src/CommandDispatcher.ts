// CommandDispatcher: persists each command (pending), sends it (sent), records ack and the outcome
// (completed | failed), applies the deadline (failed as timeout), re-sends unacked commands when the agent
// reconnects and after a control-plane restart, and lets callers await the outcome.
import type { AgentId, Command, CommandError, CommandId, CommandResult, CommandState } from "@streamspace/protocol"
import type { Duration as D } from "effect"
import { Clock, Context, Deferred, Duration, Effect, FiberMap, Layer, Option, Schema, Stream } from "effect"
import { randomUUID } from "node:crypto"
import { AgentHub, type HubEvent } from "./AgentHub.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { type DispatchStore, dispatchStoreFrom, OPEN_STATES, type StoredCommand, type TransitionPatch } from "./internal/dispatchStore.ts"
import { Store } from "./Store.ts"

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
    options?: { readonly timeout?: D.Input; readonly sessionId?: string }
  ) => Effect.Effect<CommandRecord, CommandDispatcherError>
  /** Waits for the outcome of a command (including ones dispatched before a restart). */
  readonly await: (id: CommandId) => Effect.Effect<CommandOutcome, CommandDispatcherError>
  readonly get: (id: CommandId) => Effect.Effect<CommandRecord, CommandDispatcherError>
}

const toRecord = (c: StoredCommand): CommandRecord => ({
  id: c.id,
  agentId: c.agentId,
  action: c.action,
  state: c.state,
  result: c.result,
  error: c.error,
  createdAt: c.createdAt,
  sentAt: c.sentAt,
  ackedAt: c.ackedAt,
  completedAt: c.completedAt,
  failedAt: c.failedAt,
  deadline: c.deadline
})

const outcomeOf = (c: StoredCommand): Option.Option<CommandOutcome> => {
  if (c.state === "completed" && c.result !== undefined) return Option.some({ _tag: "Completed", record: toRecord(c), result: c.result })
  if (c.state === "failed" && c.error !== undefined) return Option.some({ _tag: "Failed", record: toRecord(c), error: c.error })
  return Option.none()
}

/** W3C traceparent of the current span, if any. */
const traceparent = Effect.map(Effect.option(Effect.currentSpan), (span) =>
  Option.flatMap(span, (s) =>
    /^[0-9a-f]{32}$/.test(s.traceId) && /^[0-9a-f]{16}$/.test(s.spanId) && !/^0+$/.test(s.traceId) && !/^0+$/.test(s.spanId)
      ? Option.some(`00-${s.traceId}-${s.spanId}-${s.sampled ? "01" : "00"}`)
      : Option.none()
  ))

const storeError = (what: string) => (cause: unknown) =>
  new CommandDispatcherError({ reason: "Store", message: `${what}: ${cause instanceof Error ? cause.message : String(cause)}` })

/** Builds the dispatcher on a DispatchStore. Background fibers (deadlines, the event loop) live in the surrounding scope. */
export const make = Effect.fnUntraced(function*(store: DispatchStore) {
  const config = yield* ControlPlaneConfig
  const hub = yield* AgentHub
  const deadlines = yield* FiberMap.make<CommandId>()
  const waiters = new Map<CommandId, Deferred.Deferred<CommandOutcome>>()
  // The commands not yet completed or failed, by agent, in the order they were created: checked when an agent
  // reports on a command (no read of the row first) and redelivered when it connects (no scan of every open
  // command of every agent). Filled at start from the store and on each dispatch; emptied as commands finish.
  const openByAgent = new Map<AgentId, Set<CommandId>>()
  const agentOfOpen = new Map<CommandId, AgentId>()
  const track = (id: CommandId, agentId: AgentId) => {
    agentOfOpen.set(id, agentId)
    let ids = openByAgent.get(agentId)
    if (ids === undefined) {
      ids = new Set()
      openByAgent.set(agentId, ids)
    }
    ids.add(id)
  }
  const untrack = (id: CommandId) => {
    const agentId = agentOfOpen.get(id)
    if (agentId === undefined) return
    agentOfOpen.delete(id)
    const ids = openByAgent.get(agentId)
    ids?.delete(id)
    if (ids?.size === 0) openByAgent.delete(agentId)
  }

  const load = (id: CommandId) =>
    store.get(id).pipe(
      Effect.mapError(storeError(`could not read command ${id}`)),
      Effect.flatMap(Option.match({
        onNone: () => Effect.fail(new CommandDispatcherError({ reason: "NotFound", message: `no command ${id}` })),
        onSome: Effect.succeed
      }))
    )

  /** Wakes the waiters of a finished command and (unless called from it) stops its deadline timer. */
  const settle = (c: StoredCommand, fromDeadline: boolean) =>
    Effect.gen(function*() {
      const outcome = outcomeOf(c)
      if (Option.isNone(outcome)) return
      untrack(c.id)
      const waiter = waiters.get(c.id)
      if (waiter !== undefined) {
        waiters.delete(c.id)
        yield* Deferred.succeed(waiter, outcome.value)
      }
      if (!fromDeadline) yield* FiberMap.remove(deadlines, c.id)
      yield* Effect.logInfo(`command ${c.action} ${c.state}`).pipe(
        Effect.annotateLogs({ command_id: c.id, agent_id: c.agentId, ...(c.error === undefined ? {} : { error_code: c.error.code }) })
      )
    })

  const transition = (id: CommandId, from: ReadonlyArray<CommandState>, to: CommandState, patch: TransitionPatch, fromDeadline = false) =>
    store.transition(id, from, to, patch).pipe(
      Effect.mapError(storeError(`could not move command ${id} to ${to}`)),
      Effect.tap(Option.match({ onNone: () => Effect.void, onSome: (c) => settle(c, fromDeadline) }))
    )

  const armDeadline = (c: StoredCommand) =>
    FiberMap.run(
      deadlines,
      c.id,
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const left = c.deadline.getTime() - now
        if (left > 0) yield* Effect.sleep(Duration.millis(left))
        const error: CommandError = {
          code: "timeout",
          message: `no outcome from agent ${c.agentId} by the deadline ${c.deadline.toISOString()}`,
          retryable: true
        }
        yield* transition(c.id, OPEN_STATES, "failed", { at: new Date(yield* Clock.currentTimeMillis), error }, true)
      }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: deadline handling failed", e))),
      { onlyIfMissing: true }
    )

  /** Sends (or re-sends) a command if its agent is connected and approved; pending -> sent. */
  const deliver = (c: StoredCommand) =>
    hub.send(c.agentId, "command", c.command).pipe(
      Effect.andThen(
        c.state === "pending"
          ? Effect.flatMap(Clock.currentTimeMillis, (ms) => transition(c.id, ["pending"], "sent", { at: new Date(ms) }))
          : Effect.mapError(store.resent(c.id), storeError(`could not record the redelivery of ${c.id}`))
      ),
      Effect.catchTag("AgentHubError", () => Effect.void)
    )

  const dispatch = Effect.fn("CommandDispatcher.dispatch")(function*(
    agentId: AgentId,
    request: CommandRequest,
    options?: { readonly timeout?: D.Input; readonly sessionId?: string }
  ) {
    const agent = yield* hub.get(agentId)
    if (Option.isNone(agent)) {
      return yield* new CommandDispatcherError({ reason: "AgentUnavailable", message: `no agent ${agentId}` })
    }
    const enrollment = agent.value.enrollment
    if (enrollment === "rejected" || enrollment === "revoked") {
      return yield* new CommandDispatcherError({ reason: "AgentUnavailable", message: `agent ${agentId} is ${enrollment}` })
    }
    const now = yield* Clock.currentTimeMillis
    const timeout = options?.timeout === undefined ? config.commandTimeout : Duration.fromInputUnsafe(options.timeout)
    const deadline = new Date(now + Duration.toMillis(timeout))
    const id = `cmd-${randomUUID()}` as CommandId
    const tp = yield* traceparent
    const command = {
      command_id: id,
      deadline: deadline.toISOString(),
      ...(Option.isSome(tp) ? { traceparent: tp.value } : {}),
      action: request.action,
      args: request.args
    } as Command
    const stored: StoredCommand = {
      id,
      agentId,
      action: request.action,
      state: "pending",
      result: undefined,
      error: undefined,
      createdAt: new Date(now),
      sentAt: undefined,
      ackedAt: undefined,
      completedAt: undefined,
      failedAt: undefined,
      deadline,
      command,
      sessionId: options?.sessionId
    }
    yield* store.insert(stored).pipe(Effect.mapError(storeError(`could not record command ${id}`)))
    track(id, agentId)
    yield* Effect.annotateCurrentSpan({ command_id: id, agent_id: agentId, action: request.action })
    yield* armDeadline(stored)
    // Persisted before the connectivity check: an agent connecting meanwhile finds it in the store.
    const sent = yield* hub.send(agentId, "command", command).pipe(
      Effect.as(true),
      Effect.catchTag("AgentHubError", () => Effect.succeed(false))
    )
    if (!sent) return toRecord(stored)
    const moved = yield* transition(id, ["pending"], "sent", { at: new Date(yield* Clock.currentTimeMillis) })
    // The `sent` row is what the caller sees; only when something moved it first (an outcome already) is it read.
    return toRecord(Option.isSome(moved) ? moved.value : yield* load(id))
  })

  const get = Effect.fn("CommandDispatcher.get")(function*(id: CommandId) {
    return toRecord(yield* load(id))
  })

  const await_ = Effect.fn("CommandDispatcher.await")(function*(id: CommandId) {
    // Registered before the read, so an outcome recorded after the read wakes it; one read either way.
    let waiter = waiters.get(id)
    const mine = waiter === undefined
    if (waiter === undefined) {
      waiter = yield* Deferred.make<CommandOutcome>()
      waiters.set(id, waiter)
    }
    const registered = waiter
    const current = yield* load(id).pipe(
      Effect.tapError(() => Effect.sync(() => mine && waiters.get(id) === registered && waiters.delete(id)))
    )
    const done = outcomeOf(current)
    if (Option.isSome(done)) {
      if (waiters.get(id) === registered) waiters.delete(id)
      yield* Deferred.succeed(registered, done.value)
      return done.value
    }
    return yield* Deferred.await(registered)
  })

  const onEvent = (event: HubEvent) =>
    Effect.gen(function*() {
      if (event._tag === "Connected") {
        // Re-send everything not finished: the agent dedupes by id and answers a duplicate with its first result,
        // which also recovers an outcome lost with the previous connection.
        const ids = [...(openByAgent.get(event.agentId) ?? [])]
        const now = yield* Clock.currentTimeMillis
        for (const id of ids) {
          const c = yield* store.get(id).pipe(Effect.mapError(storeError(`could not read command ${id}`)))
          if (Option.isSome(c) && OPEN_STATES.includes(c.value.state) && c.value.deadline.getTime() > now) yield* deliver(c.value)
        }
        return
      }
      if (event._tag !== "Message") return
      const m = event.message
      if (m.type !== "command_ack" && m.type !== "command_completed" && m.type !== "command_failed") return
      const id = m.payload.command_id as CommandId
      // An open command's agent is known without a read; anything else (finished, unknown) is looked up.
      const known = agentOfOpen.get(id)
      const owner = known !== undefined
        ? known
        : Option.map(yield* store.get(id).pipe(Effect.mapError(storeError("could not read a command"))), (c) => c.agentId).pipe(Option.getOrUndefined)
      if (owner !== event.agentId) {
        yield* Effect.logWarning(`agent reported on a command it was not sent: ${m.payload.command_id}`).pipe(
          Effect.annotateLogs({ agent_id: event.agentId })
        )
        return
      }
      const at = new Date(yield* Clock.currentTimeMillis)
      if (m.type === "command_ack") yield* transition(id, ["pending", "sent"], "ack", { at })
      else if (m.type === "command_completed") yield* transition(id, OPEN_STATES, "completed", { at, result: m.payload.result })
      else yield* transition(id, OPEN_STATES, "failed", { at, error: m.payload.error })
    }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: could not handle a hub event", e)))

  yield* Effect.forkScoped(Stream.runForEach(hub.events, onEvent), { startImmediately: true })

  // After a restart: every open command gets its deadline back, and goes out again once its agent is connected.
  for (const c of yield* store.listOpen.pipe(Effect.orDie)) {
    track(c.id, c.agentId)
    yield* armDeadline(c)
    yield* deliver(c)
  }

  return CommandDispatcher.of({ dispatch, await: await_, get })
})

export class CommandDispatcher extends Context.Service<CommandDispatcher, CommandDispatcherShape>()("control-plane/CommandDispatcher") {
  /** The dispatcher on the Store. Needs AgentHub, Store and ControlPlaneConfig. */
  static readonly layer = Layer.effect(CommandDispatcher, Effect.gen(function*() {
    return yield* make(dispatchStoreFrom(yield* Store))
  }))
}
