// The dispatcher's work on the durable command log (the Store's `commands` table), as named steps over one
// state: which commands are open per agent (so a report needs no read first and a reconnect no scan), who
// waits for which outcome, one deadline timer per open command, delivery and redelivery through the hub, and
// the agent's reports moving a command on. The Store guards every transition (forward only), so a late or
// duplicate report never moves a command backwards.
import type { AgentId, CommandError, CommandId, CommandResult, CommandState } from "@streamspace/protocol"
import { Clock, Deferred, Duration, Effect, FiberMap, Option, Schema } from "effect"
import type { AgentHubShape, CommandReport } from "../AgentHub.ts"
import type { CommandRecord, StoreError, StoreShape } from "../Store.ts"
import { GROUP_COMMIT_MAX, makeGroupCommit } from "./groupCommit.ts"

export class CommandDispatcherError extends Schema.TaggedError<CommandDispatcherError>()("CommandDispatcherError", {
  reason: Schema.Literals(["NotFound", "AgentUnavailable", "Store"]),
  message: Schema.String
}) {}

export type CommandOutcome =
  | { readonly _tag: "Completed"; readonly record: CommandRecord; readonly result: CommandResult }
  | { readonly _tag: "Failed"; readonly record: CommandRecord; readonly error: CommandError }

export const OPEN_STATES: ReadonlyArray<CommandState> = ["pending", "sent", "ack"]

export const outcomeOf = (c: CommandRecord): Option.Option<CommandOutcome> => {
  if (c.state === "completed" && c.result !== undefined) return Option.some({ _tag: "Completed", record: c, result: c.result })
  if (c.state === "failed" && c.error !== undefined) return Option.some({ _tag: "Failed", record: c, error: c.error })
  return Option.none()
}

export const storeError = (what: string) => (cause: StoreError) => new CommandDispatcherError({ reason: "Store", message: `${what}: ${cause.message}` })

/** Moves to `sent` or `ack` (and completions, below) written together when they come while others are being written (group commit). */
const groupedMoves = (store: StoreShape, to: "sent" | "ack") =>
  makeGroupCommit({ one: (id: string) => store.commands.transition(id, to), many: (ids) => store.commands.transitionMany(ids, to), max: GROUP_COMMIT_MAX })

export const makeCommandLog = Effect.fnUntraced(function*(hub: AgentHubShape, store: StoreShape) {
  return {
    hub,
    store,
    moves: { sent: yield* groupedMoves(store, "sent"), ack: yield* groupedMoves(store, "ack") },
    completions: yield* makeGroupCommit({
      one: ({ id, result }: { readonly id: string; readonly result: CommandResult }) => store.commands.transition(id, "completed", { result }),
      many: store.commands.completeMany,
      max: GROUP_COMMIT_MAX
    }),
    deadlines: yield* FiberMap.make<CommandId>(),
    waiters: new Map<CommandId, Deferred.Deferred<CommandOutcome>>(),
    /** The commands not yet completed or failed, by agent, in the order they were created. */
    openByAgent: new Map<AgentId, Set<CommandId>>(),
    agentOfOpen: new Map<CommandId, AgentId>(),
    /** Tells the other replicas a command finished here (with replicas; see internal/commandRouting.ts). */
    announce: undefined as ((id: CommandId) => Effect.Effect<void>) | undefined
  }
})

export type CommandLog = Effect.Success<ReturnType<typeof makeCommandLog>>

export const track = (log: CommandLog, id: CommandId, agentId: AgentId) => {
  log.agentOfOpen.set(id, agentId)
  let ids = log.openByAgent.get(agentId)
  if (ids === undefined) {
    ids = new Set()
    log.openByAgent.set(agentId, ids)
  }
  ids.add(id)
}

const untrack = (log: CommandLog, id: CommandId) => {
  const agentId = log.agentOfOpen.get(id)
  if (agentId === undefined) return
  log.agentOfOpen.delete(id)
  const ids = log.openByAgent.get(agentId)
  ids?.delete(id)
  if (ids?.size === 0) log.openByAgent.delete(agentId)
}

export const load = (log: CommandLog, id: CommandId) =>
  log.store.commands.get(id).pipe(
    Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.fail(new CommandDispatcherError({ reason: "NotFound", message: `no command ${id}` }))),
    Effect.mapError((e) => (e._tag === "StoreError" ? storeError(`could not read command ${id}`)(e) : e))
  )

/**
 * Wakes the waiters of a finished command and (unless called from it) stops its deadline timer; `announce`
 * when the outcome was recorded here (not learnt from another replica).
 */
export const settle = (log: CommandLog, c: CommandRecord, fromDeadline: boolean, announce = true) =>
  Effect.gen(function*() {
    const outcome = outcomeOf(c)
    if (Option.isNone(outcome)) return
    untrack(log, c.id)
    const waiter = log.waiters.get(c.id)
    if (waiter !== undefined) {
      log.waiters.delete(c.id)
      yield* Deferred.succeed(waiter, outcome.value)
    }
    if (!fromDeadline) yield* FiberMap.remove(log.deadlines, c.id)
    if (announce && log.announce !== undefined) yield* log.announce(c.id)
    if (!announce) return
    yield* Effect.logInfo(`command ${c.action} ${c.state}`).pipe(
      Effect.annotateLogs({ command_id: c.id, agent_id: c.agentId, ...(c.error === undefined ? {} : { error_code: c.error.code }) })
    )
  })

/** Moves a command on in the Store; when it moved, settles it. Returns the command when it moved. */
export const transition = (
  log: CommandLog,
  id: CommandId,
  to: Exclude<CommandState, "pending">,
  outcome: { readonly result?: CommandResult; readonly error?: CommandError } = {},
  fromDeadline = false
) =>
  (to === "sent" || to === "ack"
    ? log.moves[to](id)
    : to === "completed" && outcome.result !== undefined
    ? log.completions({ id, result: outcome.result })
    : log.store.commands.transition(id, to, outcome)).pipe(
    Effect.mapError(storeError(`could not move command ${id} to ${to}`)),
    Effect.flatMap((t) => (t.changed ? Effect.as(settle(log, t.row, fromDeadline), Option.some(t.row)) : Effect.succeed(Option.none<CommandRecord>())))
  )

/** Fails the command as `timeout` at its deadline, unless it finished by then. */
export const armDeadline = (log: CommandLog, c: CommandRecord) =>
  FiberMap.run(
    log.deadlines,
    c.id,
    Effect.gen(function*() {
      const left = c.deadline.getTime() - (yield* Clock.currentTimeMillis)
      if (left > 0) yield* Effect.sleep(Duration.millis(left))
      const error: CommandError = { code: "timeout", message: `no outcome from agent ${c.agentId} by the deadline ${c.deadline.toISOString()}`, retryable: true }
      yield* transition(log, c.id, "failed", { error }, true)
    }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: deadline handling failed", e))),
    { onlyIfMissing: true }
  )

/** Sends (or re-sends) a command if its agent is connected and approved: pending -> sent, or one more attempt. */
export const deliver = (log: CommandLog, c: CommandRecord) =>
  log.hub.send(c.agentId, "command", c.command).pipe(
    Effect.andThen(
      c.state === "pending"
        ? Effect.asVoid(transition(log, c.id, "sent"))
        : Effect.asVoid(Effect.mapError(log.store.commands.resend(c.id), storeError(`could not record the redelivery of ${c.id}`)))
    ),
    Effect.catchTag("AgentHubError", () => Effect.void)
  )

/**
 * An agent connected: everything not finished goes out again. The agent dedupes by id and answers a duplicate
 * with its first result, which also recovers an outcome lost with the previous connection.
 */
export const redeliver = (log: CommandLog, agentId: AgentId) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const id of [...(log.openByAgent.get(agentId) ?? [])]) {
      const c = yield* log.store.commands.get(id).pipe(Effect.option)
      if (Option.isSome(c) && OPEN_STATES.includes(c.value.state) && c.value.deadline.getTime() > now) yield* deliver(log, c.value)
    }
  }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: redelivery failed", e)))

/** An agent's ack or outcome of a command: checked against the command's agent, then recorded. */
export const onReport = (log: CommandLog, agentId: AgentId, report: CommandReport) =>
  Effect.gen(function*() {
    const id = report.payload.command_id as CommandId
    // An open command's agent is known without a read; anything else (finished, unknown) is looked up.
    const owner = log.agentOfOpen.get(id) ??
      Option.getOrUndefined(Option.map(yield* log.store.commands.get(id).pipe(Effect.option), (c) => c.agentId))
    if (owner !== agentId) {
      return yield* Effect.logWarning(`agent reported on a command it was not sent: ${id}`).pipe(Effect.annotateLogs({ agent_id: agentId }))
    }
    if (report.type === "command_ack") yield* transition(log, id, "ack")
    else if (report.type === "command_completed") yield* transition(log, id, "completed", { result: report.payload.result })
    else yield* transition(log, id, "failed", { error: report.payload.error })
  }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: could not record an agent's report", e)))

/** After a restart: every open command gets its deadline back, and goes out again once its agent is connected. */
export const recover = (log: CommandLog) =>
  Effect.gen(function*() {
    for (const c of yield* log.store.commands.listUnfinished().pipe(Effect.orDie)) {
      track(log, c.id, c.agentId)
      yield* armDeadline(log, c)
      yield* deliver(log, c)
    }
  })

/** Waits for the outcome of a command. Registered before the read, so an outcome recorded after the read wakes it. */
export const awaitOutcome = (log: CommandLog, id: CommandId) =>
  Effect.gen(function*() {
    let waiter = log.waiters.get(id)
    const mine = waiter === undefined
    if (waiter === undefined) {
      waiter = yield* Deferred.make<CommandOutcome>()
      log.waiters.set(id, waiter)
    }
    const registered = waiter
    const current = yield* load(log, id).pipe(
      Effect.tapError(() => Effect.sync(() => mine && log.waiters.get(id) === registered && log.waiters.delete(id)))
    )
    const done = outcomeOf(current)
    if (Option.isSome(done)) {
      if (log.waiters.get(id) === registered) log.waiters.delete(id)
      yield* Deferred.succeed(registered, done.value)
      return done.value
    }
    return yield* Deferred.await(registered)
  })
