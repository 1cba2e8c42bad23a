// What the hub persists about an agent, and the narrow slice of the Store it needs (one operation per kind of
// change, as the Store offers them). The hub keeps every agent in memory (agents are few) and writes each
// change through, so auth decisions never wait on SQL; the store is what survives a restart.
import type { AgentId, AgentStatus, Capacity } from "@streamspace/protocol"
import { Effect } from "effect"
import type { EnrollmentState } from "../AgentHub.ts"
import type { Agent, StoreShape } from "../Store.ts"
import type { TokenHash } from "./token.ts"

export interface AgentRecord {
  readonly id: AgentId
  readonly platform: string
  readonly region: string
  readonly version: string
  readonly enrollment: EnrollmentState
  /** SHA-256 of the current per-agent credential. */
  readonly credentialHash: TokenHash | undefined
  /** SHA-256 of the credential before the last rotation, valid until `previousCredentialExpiresAt`. */
  readonly previousCredentialHash: TokenHash | undefined
  readonly previousCredentialExpiresAt: Date | undefined
  readonly draining: boolean
  /** Last status the agent reported, or `offline` when it is not connected. */
  readonly status: AgentStatus
  readonly capacity: Capacity | undefined
  readonly activeSessions: number
  /** Not persisted: known from heartbeats only. */
  readonly activeTunnels: number
  readonly lastHeartbeat: Date | undefined
}

export interface HubStore {
  readonly loadAll: Effect.Effect<ReadonlyArray<AgentRecord>, unknown>
  /** Records a hello: a new id is inserted as pending; a known one gets platform, region, version, capacity, status online. */
  readonly register: (hello: {
    readonly id: AgentId
    readonly platform: string
    readonly region: string
    readonly version: string
    readonly capacity: Capacity
    readonly activeSessions: number
  }) => Effect.Effect<void, unknown>
  readonly heartbeat: (id: AgentId, beat: { readonly status: AgentStatus; readonly activeSessions: number; readonly capacity: Capacity }) => Effect.Effect<void, unknown>
  readonly setStatus: (id: AgentId, status: AgentStatus) => Effect.Effect<void, unknown>
  readonly setDraining: (id: AgentId, draining: boolean) => Effect.Effect<void, unknown>
  readonly approve: (id: AgentId, credentialHash: TokenHash) => Effect.Effect<void, unknown>
  readonly reject: (id: AgentId) => Effect.Effect<void, unknown>
  /** Clears both credential hashes. */
  readonly revoke: (id: AgentId) => Effect.Effect<void, unknown>
  readonly rotate: (id: AgentId, credentialHash: TokenHash, previousValidUntil: Date) => Effect.Effect<void, unknown>
}

/** The HubStore on the control plane's Store. */
export const hubStoreFrom = (store: StoreShape): HubStore => ({
  loadAll: Effect.map(store.agents.list(), (rows) => rows.map(toAgentRecord)),
  register: (h) => Effect.asVoid(store.agents.register({ ...h, status: "online" })),
  heartbeat: (id, beat) => Effect.asVoid(store.agents.heartbeat(id, beat)),
  setStatus: (id, status) => Effect.asVoid(store.agents.setStatus(id, status)),
  setDraining: (id, draining) => Effect.asVoid(store.agents.setDraining(id, draining)),
  approve: (id, hash) => Effect.asVoid(store.agents.approve(id, hash)),
  reject: (id) => Effect.asVoid(store.agents.reject(id)),
  revoke: (id) => Effect.asVoid(store.agents.revoke(id)),
  rotate: (id, hash, until) => Effect.asVoid(store.agents.rotateCredential(id, hash, until))
})

const toAgentRecord = (a: Agent): AgentRecord => ({
  id: a.id as AgentId,
  platform: a.platform,
  region: a.region,
  version: a.version,
  enrollment: a.enrollment,
  credentialHash: a.credentialHash ?? undefined,
  previousCredentialHash: a.previousCredentialHash ?? undefined,
  previousCredentialExpiresAt: a.previousCredentialExpiresAt ?? undefined,
  draining: a.draining,
  status: a.status,
  capacity: a.capacity,
  activeSessions: a.activeSessions,
  activeTunnels: 0,
  lastHeartbeat: a.lastHeartbeat ?? undefined
})
