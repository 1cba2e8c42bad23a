// The `agents` table: every agent that ever said hello, its enrolment and credentials (hashes only), and
// what it last reported. AgentHub keeps every agent in memory and writes each change through; this is what
// survives a restart.
import type { AgentId, AgentStatus, Capacity } from "@streamspace/protocol"
import { Effect } from "effect"
import type { Fragment } from "effect/sql/Statement"
import type { TokenHash } from "../token.ts"
import { date, dateOrUndefined, type Db, type Row, strOrUndefined } from "./db.ts"
import { StoreError } from "./error.ts"

export type EnrollmentState = "pending" | "approved" | "rejected" | "revoked"

export interface AgentRecord {
  readonly id: AgentId
  readonly platform: string
  readonly region: string
  readonly version: string
  /** What the agent last reported about itself; `offline` is only ever set by the control plane. */
  readonly status: AgentStatus
  readonly enrollment: EnrollmentState
  /** Hash of the current per-agent credential (none until approved, cleared on revoke). */
  readonly credentialHash: TokenHash | undefined
  /** Hash of the credential replaced by the last rotation, valid until `previousCredentialExpiresAt`. */
  readonly previousCredentialHash: TokenHash | undefined
  readonly previousCredentialExpiresAt: Date | undefined
  readonly capacity: Capacity
  readonly activeSessions: number
  readonly lastHeartbeat: Date | undefined
  /** Drained by an operator: keeps its sessions, gets no new ones. */
  readonly draining: boolean
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly enrollmentChangedAt: Date | undefined
}

/** What a `hello` records. */
export interface AgentRegistration {
  readonly id: AgentId
  readonly platform: string
  readonly region: string
  readonly version: string
  readonly capacity: Capacity
  /** Default `online`. */
  readonly status?: AgentStatus | undefined
  /** Default 0. */
  readonly activeSessions?: number | undefined
}

/** What a heartbeat records; capacity is left unchanged when absent. */
export interface AgentBeat {
  readonly status: AgentStatus
  readonly activeSessions: number
  readonly capacity?: Capacity | undefined
}

export interface AgentsTable {
  /**
   * Records a `hello`: a new id is inserted with enrollment `pending`; a known one gets its platform,
   * region, version, capacity, status and active sessions updated (enrollment and credentials untouched).
   * Either way `lastHeartbeat` is now.
   */
  readonly register: (hello: AgentRegistration) => Effect.Effect<{ readonly agent: AgentRecord; readonly created: boolean }, StoreError>
  readonly get: (id: string) => Effect.Effect<AgentRecord, StoreError>
  readonly list: () => Effect.Effect<ReadonlyArray<AgentRecord>, StoreError>
  /** Sets status, active sessions, capacity (if given) and `lastHeartbeat` = now. */
  readonly heartbeat: (id: string, beat: AgentBeat) => Effect.Effect<AgentRecord, StoreError>
  readonly setStatus: (id: string, status: AgentStatus) => Effect.Effect<AgentRecord, StoreError>
  readonly setDraining: (id: string, draining: boolean) => Effect.Effect<AgentRecord, StoreError>
  /** pending | rejected | revoked -> approved with this credential hash (no previous one). Conflict if approved. */
  readonly approve: (id: string, credentialHash: TokenHash) => Effect.Effect<AgentRecord, StoreError>
  /** pending -> rejected. Conflict otherwise. */
  readonly reject: (id: string) => Effect.Effect<AgentRecord, StoreError>
  /** pending | approved -> revoked, clearing both credential hashes. Conflict otherwise. */
  readonly revoke: (id: string) => Effect.Effect<AgentRecord, StoreError>
  /**
   * Approved agents only (else Conflict): the current hash becomes the previous one, valid until
   * `previousValidUntil`; `credentialHash` becomes current.
   */
  readonly rotateCredential: (id: string, credentialHash: TokenHash, previousValidUntil: Date) => Effect.Effect<AgentRecord, StoreError>
  /** Deletes a rejected agent's row (NotFound, or Conflict naming its enrolment otherwise): the id may enrol afresh. */
  readonly remove: (id: string) => Effect.Effect<void, StoreError>
  /** Stores the hash of a one-time enrolment token for `agentId`, replacing an earlier one. */
  readonly putEnrollmentToken: (agentId: string, tokenHash: TokenHash, expiresAt: Date) => Effect.Effect<void, StoreError>
  readonly listEnrollmentTokens: () => Effect.Effect<ReadonlyArray<EnrollmentToken>, StoreError>
  /** Deletes the enrolment token of `agentId` (used, or replaced); nothing when there is none. */
  readonly deleteEnrollmentToken: (agentId: string) => Effect.Effect<void, StoreError>
}

export interface EnrollmentToken {
  readonly agentId: AgentId
  readonly tokenHash: TokenHash
  readonly expiresAt: Date
}

export const toAgent = (r: Row): AgentRecord => ({
  id: r.id as AgentId,
  platform: r.platform as string,
  region: r.region as string,
  version: r.version as string,
  status: r.status as AgentStatus,
  enrollment: r.enrollment as EnrollmentState,
  credentialHash: strOrUndefined(r.credential_hash),
  previousCredentialHash: strOrUndefined(r.previous_credential_hash),
  previousCredentialExpiresAt: dateOrUndefined(r.previous_credential_expires_at),
  capacity: r.capacity as Capacity,
  activeSessions: Number(r.active_sessions),
  lastHeartbeat: dateOrUndefined(r.last_heartbeat),
  draining: r.draining as boolean,
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at),
  enrollmentChangedAt: dateOrUndefined(r.enrollment_changed_at)
})

export const makeAgents = ({ json, now, one, q, sql }: Db): AgentsTable => {
  const get = (id: string) => q("agent", id, sql<Row>`SELECT * FROM agents WHERE id = ${id}`).pipe(Effect.flatMap((rows) => one("agent", id, rows, toAgent)))

  /** An UPDATE ... RETURNING * of one agent; NotFound when no row matched. */
  const update = (id: string, set: Fragment) =>
    Effect.gen(function*() {
      const at = yield* now
      const rows = yield* q("agent", id, sql<Row>`UPDATE agents SET ${set}, updated_at = ${at} WHERE id = ${id} RETURNING *`)
      return yield* one("agent", id, rows, toAgent)
    })

  /** An enrolment change allowed only from `from`: Conflict naming the current state otherwise. */
  const enroll = (id: string, verb: string, from: ReadonlyArray<EnrollmentState>, set: Fragment) =>
    Effect.gen(function*() {
      const at = yield* now
      const rows = yield* q(
        "agent",
        id,
        sql<Row>`UPDATE agents SET ${set}, enrollment_changed_at = ${at}, updated_at = ${at}
          WHERE id = ${id} AND enrollment IN ${sql.in(from)} RETURNING *`
      )
      if (rows.length > 0) return toAgent(rows[0]!)
      const current = yield* get(id)
      return yield* Effect.fail(StoreError.conflict("agent", id, `cannot ${verb} agent ${JSON.stringify(id)}: it is ${current.enrollment}`))
    })

  return {
    remove: Effect.fn("Store.agents.remove")(function*(id: string) {
      const rows = yield* q("agent", id, sql<Row>`DELETE FROM agents WHERE id = ${id} AND enrollment = 'rejected' RETURNING id`)
      if (rows.length > 0) return
      const current = yield* get(id)
      return yield* Effect.fail(StoreError.conflict("agent", id, `cannot delete agent ${JSON.stringify(id)}: it is ${current.enrollment} (only rejected agents are deleted)`))
    }),
    putEnrollmentToken: Effect.fn("Store.agents.putEnrollmentToken")(function*(agentId: string, tokenHash: TokenHash, expiresAt: Date) {
      const at = yield* now
      yield* q(
        "agent",
        agentId,
        sql<Row>`INSERT INTO agent_enrollment_tokens ${sql.insert({ agent_id: agentId, token_hash: tokenHash, expires_at: expiresAt, created_at: at })}
        ON CONFLICT (agent_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at`
      )
    }),
    listEnrollmentTokens: Effect.fn("Store.agents.listEnrollmentTokens")(function*() {
      const rows = yield* q("agent", "*", sql<Row>`SELECT * FROM agent_enrollment_tokens ORDER BY agent_id`)
      return rows.map((r): EnrollmentToken => ({ agentId: r.agent_id as AgentId, tokenHash: r.token_hash as TokenHash, expiresAt: date(r.expires_at) }))
    }),
    deleteEnrollmentToken: Effect.fn("Store.agents.deleteEnrollmentToken")(function*(agentId: string) {
      yield* q("agent", agentId, sql<Row>`DELETE FROM agent_enrollment_tokens WHERE agent_id = ${agentId}`)
    }),
    register: Effect.fn("Store.agents.register")(function*(h: AgentRegistration) {
      const at = yield* now
      const rows = yield* q(
        "agent",
        h.id,
        sql<Row>`INSERT INTO agents ${
          sql.insert({
            id: h.id,
            platform: h.platform,
            region: h.region,
            version: h.version,
            status: h.status ?? "online",
            enrollment: "pending",
            capacity: json(h.capacity),
            active_sessions: h.activeSessions ?? 0,
            last_heartbeat: at,
            draining: false,
            created_at: at,
            updated_at: at
          })
        }
        ON CONFLICT (id) DO UPDATE SET platform = EXCLUDED.platform, region = EXCLUDED.region, version = EXCLUDED.version,
          status = EXCLUDED.status, capacity = EXCLUDED.capacity, active_sessions = EXCLUDED.active_sessions,
          last_heartbeat = EXCLUDED.last_heartbeat, updated_at = EXCLUDED.updated_at
        RETURNING *, (xmax = 0) AS inserted`
      )
      const row = rows[0]!
      return { agent: toAgent(row), created: row.inserted === true }
    }),
    get: Effect.fn("Store.agents.get")(function*(id: string) {
      return yield* get(id)
    }),
    list: Effect.fn("Store.agents.list")(function*() {
      return (yield* q("agent", "*", sql<Row>`SELECT * FROM agents ORDER BY id`)).map(toAgent)
    }),
    heartbeat: Effect.fn("Store.agents.heartbeat")(function*(id: string, beat: AgentBeat) {
      const capacity = beat.capacity === undefined ? sql`capacity` : sql`${json(beat.capacity)}`
      return yield* update(id, sql`status = ${beat.status}, active_sessions = ${beat.activeSessions}, capacity = ${capacity}, last_heartbeat = ${yield* now}`)
    }),
    setStatus: Effect.fn("Store.agents.setStatus")(function*(id: string, status: AgentStatus) {
      return yield* update(id, sql`status = ${status}`)
    }),
    setDraining: Effect.fn("Store.agents.setDraining")(function*(id: string, draining: boolean) {
      return yield* update(id, sql`draining = ${draining}`)
    }),
    approve: Effect.fn("Store.agents.approve")(function*(id: string, credentialHash: TokenHash) {
      return yield* enroll(
        id,
        "approve",
        ["pending", "rejected", "revoked"],
        sql`enrollment = 'approved', credential_hash = ${credentialHash}, previous_credential_hash = NULL, previous_credential_expires_at = NULL`
      )
    }),
    reject: Effect.fn("Store.agents.reject")(function*(id: string) {
      return yield* enroll(id, "reject", ["pending"], sql`enrollment = 'rejected'`)
    }),
    revoke: Effect.fn("Store.agents.revoke")(function*(id: string) {
      return yield* enroll(
        id,
        "revoke",
        ["pending", "approved"],
        sql`enrollment = 'revoked', credential_hash = NULL, previous_credential_hash = NULL, previous_credential_expires_at = NULL`
      )
    }),
    rotateCredential: Effect.fn("Store.agents.rotateCredential")(function*(id: string, credentialHash: TokenHash, previousValidUntil: Date) {
      const at = yield* now
      const rows = yield* q(
        "agent",
        id,
        sql<Row>`UPDATE agents SET previous_credential_hash = credential_hash, previous_credential_expires_at = ${previousValidUntil},
          credential_hash = ${credentialHash}, updated_at = ${at}
          WHERE id = ${id} AND enrollment = 'approved' RETURNING *`
      )
      if (rows.length > 0) return toAgent(rows[0]!)
      const current = yield* get(id)
      return yield* Effect.fail(StoreError.conflict("agent", id, `cannot rotate the credential of agent ${JSON.stringify(id)}: it is ${current.enrollment}`))
    })
  }
}
