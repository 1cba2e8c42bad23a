// Hibernate and resume. Hibernating a running session asks its agent to delete the pod and service and keep the
// home volume (`hibernate_session`): `running -> hibernating -> hibernated`. A hibernated session holds no CPU,
// memory or session slot (usage.ts does not count it), so placement sees the capacity free. Resuming asks the
// same agent for a new pod on the same home (`resume_session`, with the spec the session was created with and
// its template's current image, `resumeSpec`):
// `hibernated -> creating -> running`. Any other starting state is a Conflict naming the state.
import { parseQuantity } from "@streamspace/protocol"
import { Effect } from "effect"
import type { AgentHubShape } from "../../AgentHub.ts"
import { exclusionReason } from "../../Placement.ts"
import type { Actor, SessionRecord } from "../../Store.ts"
import { type Book, SessionsError, transition } from "./book.ts"
import { follow } from "./lifecycle.ts"
import { resumeSpec } from "./templates.ts"

/** Why the session was hibernated or deleted by the control plane rather than asked for by a person. */
export type LifecycleReason = "requested" | "idle_timeout" | "max_lifetime"

const conflict = (s: SessionRecord, what: string, allowed: string) =>
  new SessionsError({ reason: "Conflict", message: `session ${s.id} is ${s.state}; only a ${allowed} session can be ${what}` })

export const hibernate = Effect.fnUntraced(function*(book: Book, s: SessionRecord, reason: LifecycleReason = "requested", actor: Actor = "system") {
  if (s.state !== "running") return yield* conflict(s, "hibernated", "running")
  if (!s.spec.persistent_home) {
    return yield* new SessionsError({
      reason: "Conflict",
      message: `session ${s.id} has no persistent home: hibernating would lose everything in it; delete it instead`
    })
  }
  yield* Effect.annotateCurrentSpan({ session_id: s.id, agent_id: s.agentId })
  // Recorded before the command goes out, so the agent's report of the pod going away finds it hibernating.
  const hibernating = yield* transition(book, s.id, "hibernating", { reason, actor })
  if (hibernating?.state !== "hibernating") return yield* conflict(hibernating ?? s, "hibernated", "running")
  const command = yield* book.dispatcher.dispatch(s.agentId, { action: "hibernate_session", args: { session_id: s.id } }, { sessionId: s.id }).pipe(
    Effect.catch((e) =>
      transition(book, s.id, "running", { reason: "hibernate_failed", message: e.message }).pipe(
        Effect.andThen(Effect.fail(new SessionsError({ reason: "Store", message: `could not dispatch hibernate_session: ${e.message}` })))
      )
    )
  )
  const next = yield* transition(book, s.id, "hibernating", {}, { hibernateCommandId: command.id })
  yield* follow(book, s, command)
  return next ?? hibernating
})

export const resume = Effect.fnUntraced(function*(
  book: Book,
  hub: AgentHubShape,
  s: SessionRecord,
  actor: Actor = "system",
  /** A refusal from outside placement (the team's quota), checked under the same lock. */
  refusal: (s: SessionRecord) => SessionsError | undefined = () => undefined
) {
  if (s.state !== "hibernated") return yield* conflict(s, "resumed", "hibernated")
  yield* Effect.annotateCurrentSpan({ session_id: s.id, agent_id: s.agentId })
  // The same agent (its home volume is there), if it can take the session back now; counted from here on.
  const resuming = yield* book.placement.withPermits(1)(Effect.gen(function*() {
    const agent = (yield* hub.list).find((a) => a.id === s.agentId)
    const why = agent === undefined ? "it is not registered" : exclusionReason(agent, book.usage.get(s.agentId), {
      cpu: parseQuantity(s.spec.resources?.cpu ?? "0") ?? 0,
      memory: parseQuantity(s.spec.resources?.memory ?? "0") ?? 0
    })
    if (why !== undefined) {
      return yield* new SessionsError({ reason: "NoEligibleAgent", message: `agent ${s.agentId}, which holds the session's home, cannot take it back: ${why}` })
    }
    const refused = refusal(s)
    if (refused !== undefined) return yield* refused
    return yield* transition(book, s.id, "creating", { reason: "resuming", actor })
  }))
  if (resuming?.state !== "creating") return yield* conflict(resuming ?? s, "resumed", "hibernated")
  const spec = yield* resumeSpec(book.repo, s)
  const command = yield* book.dispatcher.dispatch(s.agentId, { action: "resume_session", args: { session_id: s.id, spec } }, { sessionId: s.id }).pipe(
    Effect.catch((e) =>
      transition(book, s.id, "failed", { reason: "dispatch_failed", message: e.message }).pipe(
        Effect.andThen(Effect.fail(new SessionsError({ reason: "Store", message: `could not dispatch resume_session: ${e.message}` })))
      )
    )
  )
  const next = yield* transition(book, s.id, "creating", {}, { createCommandId: command.id })
  yield* follow(book, s, command)
  return next ?? resuming
})
