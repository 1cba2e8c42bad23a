// The live session records Sessions keeps in memory (ended ones are read from the repository) and their state
// machine:
//
//   pending -> creating -> running -> terminating -> terminated      (any live state -> failed, with a reason)
//                            running -> hibernating -> hibernated -> creating (resume) -> running ...
//
// (terminated/lost_on_agent -> creating or running when the agent reports the session again: `readoptable`.)
//
// Every change goes through `transition`, which writes it through the repository first, under that session's
// own lock (different sessions are written concurrently); `put` keeps the per-agent usage in step, so
// placement reads an agent's usage without scanning. A placed session counts from its placement on
// (`reserve`), before its record is written.
import type { AgentId, SessionId, SessionPhase, SessionStatus, UserId } from "@streamspace/protocol"
import { Clock, Effect, FiberSet, Metric, Schema, Semaphore } from "effect"
import type { CommandDispatcherShape } from "../../CommandDispatcher.ts"
import { sessionTransitionsTotal } from "../../Observability.ts"
import type { Actor, SessionRecord, TransitionDetail } from "../../Store.ts"
import { makeKeyedLock } from "../keyedLock.ts"
import type { RepoError, SessionRepo } from "./repo.ts"
import { makeUsageCounters } from "./usage.ts"

export class SessionsError extends Schema.TaggedError<SessionsError>()("SessionsError", {
  reason: Schema.Literals(["NotFound", "TemplateNotFound", "TemplateExists", "NoEligibleAgent", "InvalidRequest", "LimitExceeded", "QuotaExceeded", "TeamForbidden", "Store", "Conflict"]),
  message: Schema.String,
  /** The request field at fault (TemplateNotFound, InvalidRequest). */
  field: Schema.optionalKey(Schema.String),
  /** The setting that refused the request (LimitExceeded). */
  limit: Schema.optionalKey(Schema.String),
  /** The team and the quota at fault (QuotaExceeded). */
  team: Schema.optionalKey(Schema.String),
  quota: Schema.optionalKey(Schema.String),
  /** When the client may retry, in seconds (LimitExceeded by a rate). */
  retryAfterSeconds: Schema.optionalKey(Schema.Number)
}) {}

export const fromRepo = (e: RepoError) =>
  e.reason === "QuotaExceeded"
    ? new SessionsError({ reason: "QuotaExceeded", message: e.message, ...(e.team === undefined ? {} : { team: e.team }), ...(e.quota === undefined ? {} : { quota: e.quota }) })
    : new SessionsError({ reason: "Store", message: `session store: ${e.message}` })

export const SESSION_STATES: ReadonlyArray<SessionPhase> = ["pending", "creating", "running", "terminating", "terminated", "failed", "hibernating", "hibernated"]

export const ended = (s: SessionPhase) => s === "terminated" || s === "failed"

/**
 * The transitions the state machine allows: forward only (steps may be skipped), `failed` from any live
 * state; `terminated` and `failed` are final (a failed session's delete still cleans up on the agent).
 * Hibernation is the one way back: running -> hibernating -> hibernated -> creating (resume); a hibernate that
 * fails leaves the session running.
 */
export const allowed = (from: SessionPhase, to: SessionPhase): boolean => {
  switch (from) {
    case "pending":
      return to !== "pending"
    case "creating":
      return to === "running" || to === "terminating" || to === "terminated" || to === "failed"
    case "running":
      return to === "terminating" || to === "terminated" || to === "failed" || to === "hibernating"
    case "hibernating":
      return to === "hibernated" || to === "running" || to === "terminating" || to === "terminated" || to === "failed"
    case "hibernated":
      return to === "creating" || to === "terminating" || to === "terminated" || to === "failed"
    case "terminating":
      return to === "terminated" || to === "failed"
    case "failed":
    case "terminated":
      return false
  }
}

/**
 * A session recorded `terminated` because its agent's hello left it out (`lost_on_agent`) is taken back when
 * that agent reports it live again: the inventory of one hello is not proof that the pod is gone.
 */
export const readoptable = (current: SessionRecord, to: SessionPhase): boolean =>
  current.state === "terminated" && current.reason === LOST_ON_AGENT && current.deleteCommandId === undefined && (to === "creating" || to === "running")

export const LOST_ON_AGENT = "lost_on_agent"

/**
 * A `lost_on_agent` session is ended, so only the repository has it: when its agent reports it live again it
 * comes back into the book, where `transition` lets it move on (`readoptable`).
 */
const readopt = Effect.fnUntraced(function*(book: Book, agentId: AgentId, status: SessionStatus) {
  const stored = yield* book.repo.getSession(status.session_id).pipe(Effect.orElseSucceed(() => undefined))
  if (stored === undefined || stored.agentId !== agentId || !readoptable(stored, targetOf(status.phase))) return
  if (book.sessions.has(stored.id)) return
  book.sessions.set(stored.id, stored)
  book.endedCounts.set(stored.state, Math.max(0, (book.endedCounts.get(stored.state) ?? 0) - 1))
  yield* Effect.logInfo("agent reports a session it was thought to have lost; re-adopted").pipe(Effect.annotateLogs({ agent_id: agentId, session_id: stored.id }))
})

export const agentActor = (agentId: AgentId): Actor => `agent:${agentId}`
export const userActor = (userId: UserId): Actor => `user:${userId}`

/** Where an agent's report moves a session (the agent's own pending/creating both mean "being created"). */
const targetOf = (phase: SessionPhase): SessionPhase => (phase === "pending" ? "creating" : phase)

export const makeBook = Effect.fnUntraced(function*(repo: SessionRepo, dispatcher: CommandDispatcherShape) {
  const book = {
    repo,
    dispatcher,
    /** Background followers of commands, owned by the service's scope. */
    fibers: yield* FiberSet.make(),
    /** Covers placement and the reservation it makes (microseconds, never a database write). */
    placement: yield* Semaphore.make(1),
    sessionLock: makeKeyedLock<SessionId>(),
    sessions: new Map<string, SessionRecord>(),
    reserved: new Map<string, SessionRecord>(),
    usage: makeUsageCounters(),
    /** Live records (not ended, reservations included) per user: the per-user limit reads it, not every session. */
    liveByUser: new Map<UserId, number>(),
    /** When the newest applied agent report about each session was observed (reports can arrive out of order). */
    observed: new Map<SessionId, string>(),
    /** Sessions whose delete is being dispatched (before `terminating` is recorded). */
    deleting: new Set<SessionId>(),
    /** Sessions each agent reported in its last hello that the control plane has no record of. */
    unknownByAgent: new Map<AgentId, ReadonlyArray<SessionStatus>>(),
    /** Users whose row is written with this role. */
    usersWritten: new Map<UserId, string>(),
    /** How many sessions have ended, per final state (they leave `sessions`), for the sessions gauge. */
    endedCounts: new Map<SessionPhase, number>()
  }
  for (const [state, n] of yield* repo.countEnded.pipe(Effect.mapError(fromRepo), Effect.orDie)) book.endedCounts.set(state, n)
  for (const s of yield* repo.loadSessions.pipe(Effect.mapError(fromRepo), Effect.orDie)) put(book, s)
  return book
})

export type Book = Effect.Success<ReturnType<typeof makeBook>>

/**
 * The only way a record enters or changes in the book. An ended record (terminated or failed) leaves it: it is
 * final, the repository has it for reads, and keeping every ended session (with its env) in memory grew the
 * control plane without bound under create/delete churn.
 */
export const put = (book: Book, next: SessionRecord) => {
  const prev = book.sessions.get(next.id) ?? book.reserved.get(next.id)
  book.usage.replace(prev, next)
  countUser(book, next.userId, Number(!ended(next.state)) - Number(prev !== undefined && !ended(prev.state)))
  book.reserved.delete(next.id)
  if (ended(next.state)) {
    if (book.sessions.delete(next.id)) book.endedCounts.set(next.state, (book.endedCounts.get(next.state) ?? 0) + 1)
    book.observed.delete(next.id)
  } else book.sessions.set(next.id, next)
}

const countUser = (book: Book, userId: UserId, delta: number) => {
  if (delta === 0) return
  const n = (book.liveByUser.get(userId) ?? 0) + delta
  if (n > 0) book.liveByUser.set(userId, n)
  else book.liveByUser.delete(userId)
}

/** The user's live sessions, placed or written. */
export const liveCount = (book: Book, userId: UserId) => book.liveByUser.get(userId) ?? 0

/** Counts a placed session against its agent (and its user) before its record is written. */
export const reserve = (book: Book, record: SessionRecord) => {
  book.usage.replace(undefined, record)
  book.reserved.set(record.id, record)
  countUser(book, record.userId, 1)
}

/** Gives back the reservation of a create whose record could not be written. */
export const unreserve = (book: Book, record: SessionRecord) => {
  if (!book.reserved.delete(record.id)) return
  book.usage.replace(record, { ...record, state: "failed" })
  countUser(book, record.userId, -1)
}

/** Moves a session to `to` if the machine allows it; returns the record as it is afterwards (undefined for an unknown id). */
export const transition = Effect.fnUntraced(function*(
  book: Book,
  id: SessionId,
  to: SessionPhase,
  /** Reason and message of the new state, and who made the change (the control plane itself unless said). */
  detail: TransitionDetail = {},
  patch: Partial<Pick<SessionRecord, "createCommandId" | "deleteCommandId" | "hibernateCommandId">> = {}
) {
  const current = book.sessions.get(id)
  if (current === undefined) return undefined
  const same = current.state === to
  if (!same && !allowed(current.state, to) && !readoptable(current, to)) {
    yield* Effect.logDebug("session transition ignored").pipe(Effect.annotateLogs({ session_id: id, from: current.state, to }))
    // The agent's report can overtake the dispatch (running before creating is recorded): the command id
    // is still the session's, even though the state stays. (Command ids live in the commands table.)
    if (Object.keys(patch).length === 0) return current
    const patched: SessionRecord = { ...current, ...patch }
    put(book, patched)
    return patched
  }
  if (same && Object.keys(patch).length === 0 && detail.reason === undefined) return current
  const next: SessionRecord = {
    ...current,
    ...patch,
    state: to,
    reason: same ? detail.reason ?? current.reason : detail.reason,
    message: same ? detail.message ?? current.message : detail.message,
    updatedAt: new Date(yield* Clock.currentTimeMillis)
  }
  yield* book.repo.updateSession(next, current.state, detail.actor ?? "system").pipe(Effect.mapError(fromRepo))
  put(book, next)
  if (!same) {
    yield* Metric.update(Metric.withAttributes(sessionTransitionsTotal, { state: to }), 1)
    yield* Effect.logInfo(`session ${current.state} -> ${to}${next.reason === undefined ? "" : ` (${next.reason})`}`).pipe(
      Effect.annotateLogs({ session_id: id, agent_id: next.agentId, from: current.state, to, ...(next.reason === undefined ? {} : { reason: next.reason }) })
    )
  }
  return next
}, (effect, book, id) => book.sessionLock(id)(effect))

/**
 * Applies what an agent observed about one of its sessions, unless a later observation was applied already:
 * a create's outcome carries the pod as it was when created, and may arrive after the watch's newer report
 * (an Unschedulable verdict, say) that it must not overwrite.
 */
export const applyStatus = Effect.fnUntraced(function*(book: Book, agentId: AgentId, status: SessionStatus) {
  if (!book.sessions.has(status.session_id)) yield* readopt(book, agentId, status)
  const s = book.sessions.get(status.session_id)
  if (s === undefined || s.agentId !== agentId) return
  // While hibernating, the pod going away is what was asked for; a hibernated session has no pod to report on
  // (its resume moves it to `creating` before the agent hears of it).
  if (s.state === "hibernated" || (s.state === "hibernating" && status.phase !== "terminated")) return
  if (s.state === "hibernating") {
    yield* transition(book, s.id, "hibernated", { reason: s.reason, message: s.message })
    return
  }
  const newest = book.observed.get(s.id)
  if (newest !== undefined && Date.parse(status.observed_at) < Date.parse(newest)) return
  book.observed.set(s.id, status.observed_at)
  const to = targetOf(status.phase)
  // Whichever comes first, the delete's outcome or the agent's report, a deletion ends as `deleted`.
  const reason = (s.state === "terminating" || book.deleting.has(s.id)) && to === "terminated" ? "deleted" : status.reason
  const next = yield* transition(book, s.id, to, { reason, message: status.message, actor: agentActor(agentId) })
  if (next !== undefined && ended(next.state)) book.observed.delete(s.id)
})
