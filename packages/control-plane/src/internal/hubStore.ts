// What the hub persists about an agent, and the narrow slice of the Store it needs. The hub keeps every
// agent in memory (agents are few) and writes each change through, so auth decisions never wait on SQL.
import type { AgentId, AgentStatus, Capacity } from "@streamspace/protocol"
import type { Effect } from "effect"
import type { EnrollmentState } from "../AgentHub.ts"
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
  readonly activeTunnels: number
  readonly lastHeartbeat: Date | undefined
}

export interface HubStore {
  readonly loadAll: Effect.Effect<ReadonlyArray<AgentRecord>, unknown>
  readonly save: (record: AgentRecord) => Effect.Effect<void, unknown>
}
