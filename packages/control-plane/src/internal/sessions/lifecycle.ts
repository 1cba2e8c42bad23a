// What moves a session on besides the API: the outcome of its create and delete commands (followed in the
// background, also again after a restart) and, when its agent connects, the inventory in the agent's hello. A
// running session the agent no longer has becomes `terminated` (reason `lost_on_agent`), and is taken back
// (re-adopted) when the agent reports it live again; a session the agent has that the control plane does not
// know, or knows as ended, is reported (log, metric, `unknownSessions`), never deleted.
import type { AgentId, PayloadOf, SessionId, SessionStatus } from "@streamspace/protocol"
import { Clock, Effect, FiberSet, Metric } from "effect"
import type { CommandOutcome, CommandRecord } from "../../CommandDispatcher.ts"
import { recordCommand, unknownSessionsTotal } from "../../Observability.ts"
import type { SessionRecord } from "../../Store.ts"
import type { Actor } from "../../Store.ts"
import { agentActor, applyStatus, type Book, ended, LOST_ON_AGENT, transition } from "./book.ts"

/** A command's failure is the agent's answer, unless the control plane gave up waiting (a deadline). */
const outcomeActor = (agentId: AgentId, outcome: CommandOutcome): Actor =>
  outcome._tag === "Failed" && outcome.error.code === "timeout" ? "system" : agentActor(agentId)

const awaitCommand = Effect.fnUntraced(function*(book: Book, record: CommandRecord) {
  const started = yield* Clock.currentTimeMillis
  const outcome = yield* book.dispatcher.await(record.id).pipe(
    Effect.tapError(() => Effect.flatMap(Clock.currentTimeMillis, (t) => recordCommand(record.action, "error", started, t)))
  )
  yield* recordCommand(record.action, outcome._tag === "Completed" ? "completed" : outcome.error.code, started, yield* Clock.currentTimeMillis)
  return outcome
})

const onCreateOutcome = (book: Book, id: SessionId, agentId: AgentId, outcome: CommandOutcome) =>
  outcome._tag === "Completed"
    ? outcome.result.action === "create_session" || outcome.result.action === "resume_session"
      ? applyStatus(book, agentId, outcome.result.session)
      : Effect.void
    : transition(book, id, "failed", { reason: outcome.error.code, message: outcome.error.message, actor: outcomeActor(agentId, outcome) }).pipe(Effect.asVoid)

const onDeleteOutcome = (book: Book, id: SessionId, agentId: AgentId, outcome: CommandOutcome) =>
  outcome._tag === "Completed" || outcome.error.code === "session_not_found"
    ? book.sessions.has(id)
      ? transition(book, id, "terminated", { reason: "deleted", actor: agentActor(agentId) }).pipe(Effect.asVoid)
      : markEndedDeleted(book, id, agentActor(agentId))
    : transition(book, id, "failed", {
      reason: "delete_failed",
      message: `${outcome.error.code}: ${outcome.error.message}`,
      actor: outcomeActor(agentId, outcome)
    }).pipe(Effect.asVoid)

/**
 * A session that had ended before its delete (`lost_on_agent`, a stopped pod) is only in the repository: once
 * the agent has removed what was left of it, it is recorded as deleted for good (no later report re-adopts it).
 */
const markEndedDeleted = Effect.fnUntraced(function*(book: Book, id: SessionId, actor: Actor) {
  const stored = yield* book.repo.getSession(id).pipe(Effect.orElseSucceed(() => undefined))
  if (stored === undefined || stored.state !== "terminated" || stored.reason === "deleted") return
  const at = new Date(yield* Clock.currentTimeMillis)
  yield* book.repo.updateSession({ ...stored, reason: "deleted", message: undefined, updatedAt: at }, stored.state, actor).pipe(
    Effect.catch((e) => Effect.logWarning(`session ${id}: could not record its delete: ${e.message}`))
  )
})

/** A hibernate ends hibernated, or (the pod may still run) back in running with the failure. */
const onHibernateOutcome = (book: Book, id: SessionId, outcome: CommandOutcome) =>
  outcome._tag === "Completed"
    ? Effect.suspend(() => transition(book, id, "hibernated", { reason: book.sessions.get(id)?.reason })).pipe(Effect.asVoid)
    : transition(book, id, "running", { reason: "hibernate_failed", message: `${outcome.error.code}: ${outcome.error.message}` }).pipe(Effect.asVoid)

/** Follows a session's create or delete command to its outcome, in the background (owned by the service's scope). */
export const follow = (book: Book, session: Pick<SessionRecord, "id" | "agentId">, record: CommandRecord) =>
  FiberSet.run(
    book.fibers,
    awaitCommand(book, record).pipe(
      Effect.flatMap((o) =>
        record.action === "delete_session"
          ? onDeleteOutcome(book, session.id, session.agentId, o)
          : record.action === "hibernate_session"
          ? onHibernateOutcome(book, session.id, o)
          : onCreateOutcome(book, session.id, session.agentId, o)
      ),
      Effect.catchCause((cause) => Effect.logWarning("following a command failed", cause).pipe(Effect.annotateLogs({ command_id: record.id, action: record.action })))
    )
  )

/** After a restart: the open create, resume, hibernate and delete commands of live sessions are followed again. */
export const followOpenCommands = (book: Book) =>
  Effect.forEach(book.sessions.values(), (s) => {
    const open = s.state === "terminating"
      ? s.deleteCommandId
      : s.state === "creating"
      ? s.createCommandId
      : s.state === "hibernating"
      ? s.hibernateCommandId
      : undefined
    if (open === undefined) return Effect.void
    return book.dispatcher.get(open).pipe(
      Effect.flatMap((command) => follow(book, s, command)),
      Effect.catch((e) => Effect.logWarning(`cannot follow command ${open} of session ${s.id} after restart: ${e.message}`))
    )
  }, { discard: true })

/** Reconciles the records of one agent with the inventory in its hello. */
export const reconcile = Effect.fnUntraced(function*(book: Book, agentId: AgentId, hello: PayloadOf<"hello">) {
  const inventory = new Map(hello.sessions.map((s) => [s.session_id as string, s]))
  for (const id of book.usage.liveIds(agentId)) {
    const s = book.sessions.get(id)
    if (s === undefined || ended(s.state)) continue
    const seen = inventory.get(s.id)
    if (seen !== undefined) {
      yield* applyStatus(book, agentId, seen)
      continue
    }
    // A create still on its way to the agent is not lost; only what the agent had and no longer has is.
    const createDone = s.state === "creating" && s.createCommandId !== undefined &&
      (yield* book.dispatcher.get(s.createCommandId).pipe(Effect.map((c) => c.state === "completed"), Effect.orElseSucceed(() => false)))
    if (s.state === "running" || createDone) {
      yield* transition(book, s.id, "terminated", {
        reason: LOST_ON_AGENT,
        message: `agent ${agentId} no longer runs this session (absent from its inventory on reconnect)`
      })
    }
  }
  // Sessions an earlier hello of this agent left out (ended, so only in the repository), reported live again:
  // re-adopted by applyStatus.
  for (const seen of inventory.values()) {
    if (!book.sessions.has(seen.session_id)) yield* applyStatus(book, agentId, seen)
  }
  // Unknown: no record, another agent's, or one that ended here while the agent still runs its pod.
  const unknown: Array<SessionStatus> = []
  for (const st of hello.sessions) {
    const live = book.sessions.get(st.session_id)
    if (live?.agentId === agentId) continue
    if (live === undefined) {
      const stored = yield* book.repo.getSession(st.session_id).pipe(Effect.orElseSucceed(() => undefined))
      if (stored?.agentId === agentId && !(ended(stored.state) && (st.phase === "pending" || st.phase === "creating" || st.phase === "running"))) continue
    }
    unknown.push(st)
  }
  book.unknownByAgent.set(agentId, unknown)
  if (unknown.length > 0) {
    yield* Metric.update(Metric.withAttributes(unknownSessionsTotal, { agent_id: agentId }), unknown.length)
    yield* Effect.logWarning("agent runs sessions the control plane does not know; leaving them alone").pipe(
      Effect.annotateLogs({ agent_id: agentId, session_ids: unknown.map((u) => u.session_id) })
    )
  }
})
