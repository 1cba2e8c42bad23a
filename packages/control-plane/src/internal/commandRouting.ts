// Commands among several replicas (Replicas.clustered). Whichever replica gets the API call persists the
// command (as in one process); when that replica does not hold the agent's socket it wakes the others with a
// PostgreSQL NOTIFY on `streamspace_command` and the holder loads and sends it: no polling. When an outcome is
// recorded (on the replica holding the agent, or by a deadline anywhere), `streamspace_command_done` wakes the
// replica whose caller awaits it. Redelivery on connect reads the agent's unfinished commands from the Store,
// so it works whichever replica the agent returns to. Deadlines are armed by every replica that tracks a
// command and by the leader's sweep; the Store moves a command forward once only, so an outcome is recorded once.
import type { AgentId, CommandError, CommandId } from "@streamspace/protocol"
import { Clock, Duration, Effect, Option } from "effect"
import type { ReplicasShape } from "../Replicas.ts"
import { armDeadline, type CommandLog, deliver, load, OPEN_STATES, outcomeOf, settle, track, transition } from "./commandLog.ts"

export const COMMAND_CHANNEL = "streamspace_command"
export const COMMAND_DONE_CHANNEL = "streamspace_command_done"

/** Wakes the replica holding `agentId`: it sends the command. */
export const wakeHolder = (replicas: ReplicasShape, agentId: AgentId, id: CommandId) => replicas.notify(COMMAND_CHANNEL, `${agentId}\t${id}`)

const holds = (log: CommandLog, agentId: AgentId) => log.hub.holds?.(agentId) ?? false

/** A command for an agent held here, persisted by another replica: tracked, its deadline armed, sent. */
const onCommand = (log: CommandLog, payload: string) =>
  Effect.gen(function*() {
    const [agentId, id] = payload.split("\t") as [AgentId, CommandId]
    if (id === undefined || !holds(log, agentId)) return
    const c = yield* load(log, id)
    if (!OPEN_STATES.includes(c.state)) return
    track(log, c.id, c.agentId)
    yield* armDeadline(log, c)
    yield* deliver(log, c)
  }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: could not deliver a command woken by another replica", e)))

/** An outcome recorded by another replica: the waiters here wake, the deadline here stops. */
const onDone = (log: CommandLog, id: CommandId) =>
  Effect.gen(function*() {
    if (!log.waiters.has(id) && !log.agentOfOpen.has(id)) return
    const c = yield* load(log, id)
    if (Option.isSome(outcomeOf(c))) yield* settle(log, c, false, false)
  }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: could not read an outcome recorded by another replica", e)))

/**
 * The agent connected here: its unfinished commands, whoever persisted them, go out again (the agent dedupes
 * by id and answers a duplicate with its first result).
 */
export const redeliverFromStore = (log: CommandLog, agentId: AgentId) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const c of yield* log.store.commands.listUnfinished(agentId)) {
      track(log, c.id, c.agentId)
      yield* armDeadline(log, c)
      if (c.deadline.getTime() > now) yield* deliver(log, c)
    }
  }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: redelivery failed", e)))

/** Commands past their deadline that no replica failed (its replica died): failed as `timeout` by the leader. */
const sweepDeadlines = (log: CommandLog) =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    for (const c of yield* log.store.commands.listUnfinished()) {
      if (c.deadline.getTime() > now) continue
      const error: CommandError = { code: "timeout", message: `no outcome from agent ${c.agentId} by the deadline ${c.deadline.toISOString()}`, retryable: true }
      yield* transition(log, c.id, "failed", { error })
    }
  }).pipe(Effect.catch((e) => Effect.logError("CommandDispatcher: the deadline sweep failed", e)))

/** Listens for commands and outcomes of the other replicas; the leader sweeps overdue commands every `every`. */
export const joinCluster = (log: CommandLog, replicas: ReplicasShape, every: Duration.Duration) =>
  Effect.gen(function*() {
    log.announce = (id) => replicas.notify(COMMAND_DONE_CHANNEL, id)
    // After a lost listener: what was notified meanwhile is caught up by redelivering to the agents held here.
    const catchUp = Effect.gen(function*() {
      for (const agent of yield* log.hub.list) if (holds(log, agent.id)) yield* redeliverFromStore(log, agent.id)
    })
    yield* replicas.listen(COMMAND_CHANNEL, (payload) => onCommand(log, payload), catchUp)
    yield* replicas.listen(COMMAND_DONE_CHANNEL, (payload) => onDone(log, payload as CommandId))
    yield* replicas.asLeader("command-deadlines", Effect.forever(Effect.andThen(Effect.sleep(every), sweepDeadlines(log))))
  })

