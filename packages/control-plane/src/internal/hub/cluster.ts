// The hub among several replicas (Replicas.clustered): the agents whose sockets other replicas hold are read
// from the Store and the presence table instead of this replica's memory, so placement, dispatch and the API
// see every agent connected anywhere; and an agent whose credential was issued by another replica (approval,
// rotation, enrolment token) is found by reloading the records before its token is refused.
import type { AgentId } from "@streamspace/protocol"
import { Effect, Option } from "effect"
import type { Holder } from "../../Replicas.ts"
import type { AgentRecord } from "../store/agents.ts"
import type { AgentView } from "./model.ts"
import { type HubState, viewOf } from "./state.ts"

/** An agent as another replica holds it (or as nobody does). */
const storedView = (record: AgentRecord, holder: Holder | undefined): AgentView => {
  const { credentialHash: _c, previousCredentialExpiresAt: _e, previousCredentialHash: _p, ...r } = record
  const connected = holder !== undefined
  const status = !connected ? "offline" : r.draining ? "draining" : r.status === "offline" ? "online" : r.status
  return { ...r, status, connected, activeTunnels: 0, remoteAddress: undefined, fingerprint: undefined }
}

/** Reloads the records of agents not connected here, and the enrolment tokens, from the Store. */
export const refreshFromStore = (state: HubState) =>
  Effect.gen(function*() {
    for (const record of yield* state.store.agents.list()) {
      const entry = state.agents.get(record.id)
      if (entry === undefined) state.agents.set(record.id, { record, live: undefined, activeTunnels: 0 })
      else if (entry.live === undefined) entry.record = record
    }
    state.enrollmentTokens.clear()
    for (const t of yield* state.store.agents.listEnrollmentTokens()) state.enrollmentTokens.set(t.agentId, { hash: t.tokenHash, expiresAt: t.expiresAt })
  }).pipe(Effect.catch((e) => Effect.logWarning(`AgentHub: could not reload the agents from the store: ${e.message}`)))

/** Every agent: the ones connected here from memory, the others from the Store with their live holder. */
export const listAll = (state: HubState) =>
  Effect.gen(function*() {
    const records = yield* state.store.agents.list().pipe(Effect.option)
    if (Option.isNone(records)) return [...state.agents.values()].map(viewOf)
    const holders = yield* state.replicas.holders
    return records.value.map((record) => {
      const local = state.agents.get(record.id)
      if (local?.live !== undefined) return viewOf(local)
      return storedView(record, holders.get(record.id))
    })
  })

export const getOne = (state: HubState, id: AgentId) =>
  Effect.gen(function*() {
    const local = state.agents.get(id)
    if (local?.live !== undefined) return Option.some(viewOf(local))
    const read = yield* Effect.result(state.store.agents.get(id))
    if (read._tag === "Failure") {
      // Deleted through another replica: gone here too. The Store out of reach: what this replica knows.
      return read.failure.reason._tag === "NotFound" ? Option.none() : Option.map(Option.fromUndefinedOr(local), viewOf)
    }
    const holder = yield* state.replicas.holderOf(id)
    return Option.some(storedView(read.success, Option.getOrUndefined(holder)))
  })
