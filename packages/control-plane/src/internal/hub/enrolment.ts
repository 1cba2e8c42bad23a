// Enrolment: which token lets a socket in (the bootstrap token for new agents, a per-agent credential, or a
// rotated-out one during CREDENTIAL_ROTATION_GRACE), and what an administrator does with an agent: approve
// (a credential is issued over its socket, and the agent must reconnect with it), reject, rotate, revoke,
// drain. Credential changes reach the Store before they take effect: a restart would otherwise undo them.
import type { AgentId } from "@streamspace/protocol"
import { CloseCode } from "@streamspace/protocol"
import { Clock, Duration, Effect, Option, Redacted } from "effect"
import type { AgentRecord } from "../store/agents.ts"
import { hashesEqual, hashToken, newCredential, type TokenHash } from "../token.ts"
import { close } from "../ws.ts"
import { detach, refuse, type Credential } from "./link.ts"
import { AgentHubError, type AgentView, notConnected, notFound } from "./model.ts"
import { type Entry, type HubState, viewOf } from "./state.ts"

/** The credential a token is, or undefined. Compares hashes in constant time. */
export const authenticate = (state: HubState, token: string, nowMs: number): Credential | undefined => {
  const bootstrap: TokenHash | undefined = Option.match(state.config.agentBootstrapToken, {
    onNone: () => undefined,
    onSome: (t) => hashToken(Redacted.value(t))
  })
  const h = hashToken(token)
  let found: Credential | undefined
  if (bootstrap !== undefined && hashesEqual(h, bootstrap)) found = { kind: "bootstrap" }
  for (const [agentId, t] of state.enrollmentTokens) {
    if (nowMs < t.expiresAt.getTime() && hashesEqual(h, t.hash) && found === undefined) found = { kind: "enrollment", agentId }
  }
  for (const { record: r } of state.agents.values()) {
    if (r.enrollment !== "approved") continue
    const current = r.credentialHash !== undefined && hashesEqual(h, r.credentialHash)
    const previous = r.previousCredentialHash !== undefined && r.previousCredentialExpiresAt !== undefined &&
      nowMs < r.previousCredentialExpiresAt.getTime() && hashesEqual(h, r.previousCredentialHash)
    if ((current || previous) && found === undefined) found = { kind: "agent", agentId: r.id }
  }
  return found
}

const lookup = (state: HubState, id: AgentId) =>
  Effect.suspend(() => {
    const entry = state.agents.get(id)
    return entry === undefined ? Effect.fail(notFound(id)) : Effect.succeed(entry)
  })

const storeFailed = (id: AgentId) => (cause: { readonly message: string }) =>
  new AgentHubError({ reason: "Store", message: `could not record the change of agent ${id}: ${cause.message}` })

/** Takes the enrolment fields of the row the Store returned; what the agent reported stays as the hub knows it. */
const enrolled = (entry: Entry, row: AgentRecord) => {
  entry.record = {
    ...entry.record,
    enrollment: row.enrollment,
    credentialHash: row.credentialHash,
    previousCredentialHash: row.previousCredentialHash,
    previousCredentialExpiresAt: row.previousCredentialExpiresAt,
    enrollmentChangedAt: row.enrollmentChangedAt,
    updatedAt: row.updatedAt
  }
}

const invalid = (entry: Entry, what: string) =>
  new AgentHubError({ reason: "InvalidTransition", message: `agent ${entry.record.id} is ${entry.record.enrollment}: cannot ${what}` })

/** Runs an administrator's change of one agent under the hub lock and answers the agent as it is after. */
const change = (state: HubState, id: AgentId, f: (entry: Entry) => Effect.Effect<void, AgentHubError>) =>
  state.locked(Effect.gen(function*() {
    const entry = yield* lookup(state, id)
    yield* f(entry)
    return viewOf(entry)
  })).pipe(Effect.annotateLogs({ agent_id: id }))

/** Closes the agent's socket for good after an administrator shut it out. */
const shutOut = (state: HubState, entry: Entry, message: string) =>
  Effect.gen(function*() {
    const live = entry.live
    if (live === undefined) return
    yield* refuse(state, live.out, live.ws, CloseCode.forbidden, message, "Unauthorized")
    yield* detach(state, entry, live, true)
  })

export const setDraining = (state: HubState, id: AgentId, draining: boolean): Effect.Effect<AgentView, AgentHubError> =>
  change(state, id, (entry) =>
    Effect.gen(function*() {
      yield* state.tracked(entry, Effect.gen(function*() {
        entry.record = { ...entry.record, draining }
        yield* state.persist(id, state.store.agents.setDraining(id, draining))
      }))
      if (entry.live !== undefined) yield* state.sendText(entry.live.out, "drain", { draining })
    }))

export const approve = (state: HubState, id: AgentId) =>
  change(state, id, (entry) =>
    Effect.gen(function*() {
      if (entry.record.enrollment !== "pending") return yield* invalid(entry, "approve")
      const live = entry.live
      if (live === undefined) return yield* notConnected(id)
      const token = newCredential()
      enrolled(entry, yield* state.store.agents.approve(id, hashToken(token)).pipe(Effect.mapError(storeFailed(id))))
      yield* state.sendText(live.out, "credential", { token })
      // The socket was opened with the bootstrap token: make the agent prove it kept the credential.
      close(live.ws, CloseCode.credentialIssued, "credential issued: reconnect with it")
      yield* detach(state, entry, live, true)
      yield* Effect.logInfo("AgentHub: agent approved; credential issued")
    }))

export const reject = (state: HubState, id: AgentId) =>
  change(state, id, (entry) =>
    Effect.gen(function*() {
      if (entry.record.enrollment !== "pending") return yield* invalid(entry, "reject")
      enrolled(entry, yield* state.store.agents.reject(id).pipe(Effect.mapError(storeFailed(id))))
      yield* shutOut(state, entry, `agent ${id} was rejected by an administrator`)
      yield* Effect.logInfo("AgentHub: agent rejected")
    }))

export const rotate = (state: HubState, id: AgentId) =>
  change(state, id, (entry) =>
    Effect.gen(function*() {
      if (entry.record.enrollment !== "approved") {
        return yield* new AgentHubError({ reason: "NotApproved", message: `agent ${id} is ${entry.record.enrollment}: only approved agents have a credential to rotate` })
      }
      const live = entry.live
      if (live === undefined) return yield* notConnected(id)
      const token = newCredential()
      const validUntil = new Date((yield* Clock.currentTimeMillis) + Duration.toMillis(state.config.credentialRotationGrace))
      enrolled(entry, yield* state.store.agents.rotateCredential(id, hashToken(token), validUntil).pipe(Effect.mapError(storeFailed(id))))
      yield* state.sendText(live.out, "credential", { token })
      yield* Effect.logInfo("AgentHub: credential rotated")
    }))

export const revoke = (state: HubState, id: AgentId) =>
  change(state, id, (entry) =>
    Effect.gen(function*() {
      if (entry.record.enrollment === "revoked" || entry.record.enrollment === "rejected") return yield* invalid(entry, "revoke")
      enrolled(entry, yield* state.store.agents.revoke(id).pipe(Effect.mapError(storeFailed(id))))
      yield* shutOut(state, entry, `the credential of agent ${id} was revoked`)
      yield* Effect.logInfo("AgentHub: agent revoked")
    }))

/**
 * Issues a one-time enrolment token bound to `id`, valid for `ttl` (it replaces an earlier one). The agent that
 * dials with it enrols as `id` only and is approved at once (no bootstrap token, no pending step). Only its
 * hash is kept. Refused for an approved agent (it has a credential) and a rejected one (delete it first).
 */
export const issueEnrollmentToken = (state: HubState, id: AgentId, ttl: Duration.Duration) =>
  state.locked(Effect.gen(function*() {
    const enrollment = state.agents.get(id)?.record.enrollment
    if (enrollment === "approved" || enrollment === "rejected" || enrollment === "revoked") {
      return yield* new AgentHubError({
        reason: "InvalidTransition",
        message: enrollment === "approved"
          ? `agent ${id} is approved: it has a credential (rotate or revoke it instead)`
          : enrollment === "rejected"
          ? `agent ${id} was rejected: delete it first (DELETE /api/v1/agents/${id})`
          : `agent ${id} was revoked: enrol the agent under a new id`
      })
    }
    const token = newCredential()
    const expiresAt = new Date((yield* Clock.currentTimeMillis) + Duration.toMillis(ttl))
    yield* state.store.agents.putEnrollmentToken(id, hashToken(token), expiresAt).pipe(Effect.mapError(storeFailed(id)))
    state.enrollmentTokens.set(id, { hash: hashToken(token), expiresAt })
    yield* Effect.logInfo("AgentHub: one-time enrolment token issued").pipe(Effect.annotateLogs({ agent_id: id }))
    return { token, expiresAt }
  }))

/** Deletes a rejected agent's record: the id is forgotten and may enrol again. */
export const remove = (state: HubState, id: AgentId) =>
  state.locked(Effect.gen(function*() {
    const entry = yield* lookup(state, id)
    if (entry.record.enrollment !== "rejected") return yield* invalid(entry, "delete (only rejected agents are deleted)")
    yield* state.store.agents.remove(id).pipe(Effect.mapError(storeFailed(id)))
    state.agents.delete(id)
    yield* Effect.logInfo("AgentHub: rejected agent deleted").pipe(Effect.annotateLogs({ agent_id: id }))
  }))
