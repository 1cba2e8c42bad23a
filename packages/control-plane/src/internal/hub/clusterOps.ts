// An administrator's change of an agent (approve, reject, rotate, revoke, drain) among several replicas: it
// needs the agent's socket (a credential, a `drain` frame, a close), so the replica that gets the API call
// asks the replica holding the socket to make it (NOTIFY `streamspace_agent_op`) and waits for its answer
// (`streamspace_agent_op_done`), then answers with the agent as the Store has it. An agent no replica holds is
// changed here, on its record reloaded from the Store first (it may have registered through another replica).
import type { AgentId } from "@streamspace/protocol"
import { Deferred, Duration, Effect, Option } from "effect"
import { randomUUID } from "node:crypto"
import type { ReplicasShape } from "../../Replicas.ts"
import { getOne } from "./cluster.ts"
import { AgentHubError, type AgentView, notFound } from "./model.ts"
import type { HubState } from "./state.ts"

export type AgentOp = "approve" | "reject" | "rotate" | "revoke" | "drain" | "undrain"

const OP_CHANNEL = "streamspace_agent_op"
const DONE_CHANNEL = "streamspace_agent_op_done"
/** How long the replica that got the call waits for the holder's answer. */
const ANSWER_TIMEOUT = Duration.seconds(10)

type Answer = { readonly ok: true } | { readonly ok: false; readonly reason: AgentHubError["reason"]; readonly message: string }

/** Reloads one agent's record (not connected here) from the Store, so this replica can change it. */
const reloadOne = (state: HubState, id: AgentId) =>
  state.store.agents.get(id).pipe(
    Effect.map((record) => {
      const entry = state.agents.get(id)
      if (entry === undefined) state.agents.set(id, { record, live: undefined, activeTunnels: 0 })
      else if (entry.live === undefined) entry.record = record
    }),
    Effect.catch((e) =>
      e.reason._tag === "NotFound"
        ? Effect.sync(() => {
          if (state.agents.get(id)?.live === undefined) state.agents.delete(id)
        })
        : Effect.logWarning(`AgentHub: could not reload agent ${id}: ${e.message}`)
    )
  )

/**
 * Serves the other replicas' requests for the agents held here, and routes this replica's: `run(op, id)`
 * makes the change where the socket is.
 */
export const makeClusterOps = (
  state: HubState,
  replicas: ReplicasShape,
  local: (op: AgentOp, id: AgentId) => Effect.Effect<AgentView, AgentHubError>
) =>
  Effect.gen(function*() {
    const waiting = new Map<string, Deferred.Deferred<Answer>>()
    yield* replicas.listen(OP_CHANNEL, (payload) =>
      Effect.gen(function*() {
        const { req, op, id } = JSON.parse(payload) as { req: string; op: AgentOp; id: AgentId }
        if (state.agents.get(id)?.live === undefined) return
        const answer: Answer = yield* local(op, id).pipe(
          Effect.as<Answer>({ ok: true }),
          Effect.catch((e) => Effect.succeed<Answer>({ ok: false, reason: e.reason, message: e.message })),
          Effect.catchDefect(() => Effect.succeed<Answer>({ ok: false, reason: "Store", message: `agent ${id}: ${op} failed on the replica holding it` }))
        )
        yield* replicas.notify(DONE_CHANNEL, JSON.stringify({ req, answer }))
      }))
    yield* replicas.listen(DONE_CHANNEL, (payload) =>
      Effect.gen(function*() {
        const { req, answer } = JSON.parse(payload) as { req: string; answer: Answer }
        const waiter = waiting.get(req)
        if (waiter !== undefined) yield* Deferred.succeed(waiter, answer)
      }))

    const forward = (op: AgentOp, id: AgentId) => {
      const req = randomUUID()
      return Effect.gen(function*() {
        const answer = yield* Deferred.make<Answer>()
        waiting.set(req, answer)
        yield* replicas.notify(OP_CHANNEL, JSON.stringify({ req, op, id }))
        return yield* Deferred.await(answer).pipe(Effect.timeoutOption(ANSWER_TIMEOUT))
      }).pipe(Effect.ensuring(Effect.sync(() => waiting.delete(req))))
    }

    const run = (op: AgentOp, id: AgentId): Effect.Effect<AgentView, AgentHubError> =>
      Effect.gen(function*() {
        if (state.agents.get(id)?.live === undefined) {
          const holder = yield* replicas.holderOf(id)
          if (Option.isSome(holder) && holder.value.replicaId !== replicas.self.id) {
            const answer = yield* forward(op, id)
            if (Option.isNone(answer)) {
              return yield* new AgentHubError({ reason: "NotConnected", message: `agent ${id}: the replica holding its socket did not answer within ${Duration.format(ANSWER_TIMEOUT)}; retry` })
            }
            if (!answer.value.ok) return yield* new AgentHubError({ reason: answer.value.reason, message: answer.value.message })
            return yield* Effect.flatMap(getOne(state, id), Option.match({ onNone: () => Effect.fail(notFound(id)), onSome: Effect.succeed }))
          }
          yield* reloadOne(state, id)
        }
        return yield* local(op, id)
      })
    return { run, reloadOne: (id: AgentId) => reloadOne(state, id) }
  })
