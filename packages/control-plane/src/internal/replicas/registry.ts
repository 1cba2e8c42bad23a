// The SQL of the replica registry (tables control_plane_replicas and agent_presence): a replica's lease,
// renewed only while it has not expired (an expired lease is re-acquired as a new term, its old presence rows
// dropped first), and which replica holds which agent's socket. Every read of presence joins the holder's
// lease: a row of a replica whose lease expired is never trusted. Times are the database's (`now()`), so
// replicas with skewed clocks agree on who is alive.
import type { AgentId } from "@streamspace/protocol"
import { Effect } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"

export interface Holder {
  readonly replicaId: string
  readonly peerUrl: string
}

type Row = Record<string, unknown>

export const makeRegistry = (sql: SqlClient, self: { readonly id: string; readonly peerUrl: string }, leaseMs: number) => {
  const lease = `${Math.round(leaseMs)} milliseconds`
  return {
    /**
     * Renews this replica's lease if it still runs; otherwise, or when `fresh` (first start, or this replica
     * let its agents go when it could not renew in time), drops this replica's old presence rows and takes a
     * new lease. Returns whether the database had let the lease expire.
     */
    renew: (fresh: boolean) => Effect.gen(function*() {
      const renewed = fresh ? [] : yield* sql<Row>`UPDATE control_plane_replicas SET lease_expires_at = now() + ${lease}::interval, peer_url = ${self.peerUrl}
        WHERE id = ${self.id} AND lease_expires_at > now() RETURNING id`
      if (renewed.length > 0) return false
      yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`DELETE FROM agent_presence WHERE replica_id = ${self.id}`
        yield* sql`INSERT INTO control_plane_replicas (id, peer_url, lease_expires_at) VALUES (${self.id}, ${self.peerUrl}, now() + ${lease}::interval)
          ON CONFLICT (id) DO UPDATE SET peer_url = EXCLUDED.peer_url, lease_expires_at = EXCLUDED.lease_expires_at`
      }))
      return true
    }),
    /** Ends this replica's lease now (a clean stop): its agents are free for the others at once. */
    resign: sql`DELETE FROM control_plane_replicas WHERE id = ${self.id}`.pipe(Effect.asVoid),
    /** Records that this replica holds the agent's socket; false when this replica's lease has run out. */
    claim: (agentId: AgentId) =>
      sql<Row>`INSERT INTO agent_presence (agent_id, replica_id, since)
        SELECT ${agentId}, ${self.id}, now() WHERE EXISTS (SELECT 1 FROM control_plane_replicas WHERE id = ${self.id} AND lease_expires_at > now())
        ON CONFLICT (agent_id) DO UPDATE SET replica_id = EXCLUDED.replica_id, since = EXCLUDED.since
        RETURNING agent_id`.pipe(Effect.map((rows) => rows.length > 0)),
    /**
     * This replica no longer holds the agent's socket; the agent is recorded offline unless another live
     * replica holds it by now (it may have redialled elsewhere before this socket's close was noticed).
     */
    release: (agentId: AgentId) =>
      Effect.gen(function*() {
        yield* sql`DELETE FROM agent_presence WHERE agent_id = ${agentId} AND replica_id = ${self.id}`
        yield* sql`UPDATE agents SET status = 'offline' WHERE id = ${agentId} AND status <> 'offline' AND NOT EXISTS (
          SELECT 1 FROM agent_presence p JOIN control_plane_replicas r ON r.id = p.replica_id WHERE p.agent_id = ${agentId} AND r.lease_expires_at > now())`
      }),
    holderOf: (agentId: AgentId) =>
      sql<Row>`SELECT p.replica_id, r.peer_url FROM agent_presence p JOIN control_plane_replicas r ON r.id = p.replica_id
        WHERE p.agent_id = ${agentId} AND r.lease_expires_at > now()`.pipe(
        Effect.map((rows) => rows.length === 0 ? undefined : ({ replicaId: String(rows[0]!["replica_id"]), peerUrl: String(rows[0]!["peer_url"]) } satisfies Holder))
      ),
    holders: sql<Row>`SELECT p.agent_id, p.replica_id, r.peer_url FROM agent_presence p JOIN control_plane_replicas r ON r.id = p.replica_id
      WHERE r.lease_expires_at > now()`.pipe(
      Effect.map((rows) => new Map(rows.map((r) => [String(r["agent_id"]) as AgentId, { replicaId: String(r["replica_id"]), peerUrl: String(r["peer_url"]) } satisfies Holder])))
    ),
    /**
     * The offline watchdog of the cluster (run by the leader): agents recorded online that no live replica
     * holds are offline; presence rows of dead replicas go, and replicas dead for an hour are forgotten.
     */
    sweep: Effect.gen(function*() {
      yield* sql`DELETE FROM agent_presence p USING control_plane_replicas r WHERE r.id = p.replica_id AND r.lease_expires_at <= now()`
      const offline = yield* sql<Row>`UPDATE agents a SET status = 'offline' WHERE status <> 'offline' AND NOT EXISTS (
        SELECT 1 FROM agent_presence p JOIN control_plane_replicas r ON r.id = p.replica_id WHERE p.agent_id = a.id AND r.lease_expires_at > now())
        RETURNING id`
      yield* sql`DELETE FROM control_plane_replicas WHERE lease_expires_at < now() - interval '1 hour'`
      return offline.map((r) => String(r["id"]) as AgentId)
    })
  }
}

export type Registry = ReturnType<typeof makeRegistry>
