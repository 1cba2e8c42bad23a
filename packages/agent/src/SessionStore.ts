// SessionStore: the agent's live view of its sessions, fed by a watch on the objects labelled for this
// agent and rebuilt from the cluster at start. Emits every phase change; answers list_sessions.
import type { Capacity, SessionId, SessionSpec, SessionStatus } from "@streamspace/protocol"
import type { Effect, Option, Stream } from "effect"
import { Context, Schema } from "effect"

export class SessionStoreError extends Schema.TaggedError<SessionStoreError>()("SessionStoreError", {
  reason: Schema.Literals(["NotFound", "Rejected", "Forbidden", "Unavailable", "CapacityExceeded"]),
  message: Schema.String
}) {}

export interface ClusterHealth {
  readonly status: "ok" | "degraded" | "failing"
  readonly message?: string
}

export interface SessionStoreShape {
  /** Creates the session's objects, or adopts them when they exist; resolves once they exist (phase creating or later). */
  readonly create: (id: SessionId, spec: SessionSpec) => Effect.Effect<SessionStatus, SessionStoreError>
  /** Deletes pod and service (the home PVC stays); succeeds when the session is already gone. */
  readonly delete: (id: SessionId) => Effect.Effect<void, SessionStoreError>
  readonly get: (id: SessionId) => Effect.Effect<Option.Option<SessionStatus>>
  readonly list: Effect.Effect<ReadonlyArray<SessionStatus>>
  /** Sessions not terminated or failed. */
  readonly activeCount: Effect.Effect<number>
  /** Every observed phase change, including pods that die or are deleted out of band. */
  readonly changes: Stream.Stream<SessionStatus>
  readonly capacity: Effect.Effect<Capacity>
  /** How the Kubernetes API has been answering lately, for the heartbeat status. */
  readonly health: Effect.Effect<ClusterHealth>
}

export class SessionStore extends Context.Service<SessionStore, SessionStoreShape>()("agent/SessionStore") {}
