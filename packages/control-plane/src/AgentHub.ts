// AgentHub: accepts agent sockets at GET /api/v1/agent/connect, authenticates them (bootstrap token ->
// pending; per-agent credentials with rotation and revocation), runs hello/welcome with version
// negotiation, replaces an older socket of the same agent at once, tracks heartbeats, status, capacity and
// the drain flag, and routes frames: text messages out as events, binary tunnel frames to registered sinks.
import type { AgentId, AgentMessage, BinaryFrame, Capacity, ControlPlaneMessage, MessageType, PayloadOf, TunnelId } from "@streamspace/protocol"
import type { Effect, Option, Scope, Stream } from "effect"
import { Context, Schema } from "effect"

export class AgentHubError extends Schema.TaggedError<AgentHubError>()("AgentHubError", {
  reason: Schema.Literals(["NotFound", "NotConnected", "NotApproved", "InvalidTransition"]),
  message: Schema.String
}) {}

/** Status as the API shows it: the agent's own report, `offline` when it missed heartbeats or left, `draining` when drained. */
export type AgentViewStatus = "online" | "offline" | "warning" | "error" | "draining"
export type EnrollmentState = "pending" | "approved" | "rejected" | "revoked"

export interface AgentView {
  readonly id: AgentId
  readonly platform: string
  readonly region: string
  readonly version: string
  readonly status: AgentViewStatus
  readonly enrollment: EnrollmentState
  readonly connected: boolean
  readonly draining: boolean
  readonly capacity: Capacity | undefined
  readonly activeSessions: number
  readonly activeTunnels: number
  readonly lastHeartbeat: Date | undefined
}

export type HubEvent =
  | { readonly _tag: "Connected"; readonly agentId: AgentId; readonly hello: PayloadOf<"hello"> }
  | { readonly _tag: "Disconnected"; readonly agentId: AgentId }
  /** A text message from a connected, approved agent (heartbeat, command_*, session_status, vnc_closed, ...). */
  | { readonly _tag: "Message"; readonly agentId: AgentId; readonly message: AgentMessage }
  | { readonly _tag: "StatusChanged"; readonly agentId: AgentId; readonly status: AgentViewStatus }

/** Where the hub delivers binary frames of one tunnel, and tells it the agent went away. */
export interface TunnelSink {
  readonly onFrame: (frame: BinaryFrame) => Effect.Effect<void>
  readonly onAgentGone: Effect.Effect<void>
}

export interface AgentHubShape {
  readonly list: Effect.Effect<ReadonlyArray<AgentView>>
  readonly get: (id: AgentId) => Effect.Effect<Option.Option<AgentView>>
  /** Sends a text message to a connected agent. */
  readonly send: <T extends ControlPlaneMessage["type"] & MessageType>(
    agentId: AgentId,
    type: T,
    payload: PayloadOf<T>
  ) => Effect.Effect<void, AgentHubError>
  /** Sends a binary frame; waits while that agent's socket is over its send high-water mark. */
  readonly sendBinary: (agentId: AgentId, frame: Uint8Array) => Effect.Effect<void, AgentHubError>
  /** Receives the binary frames of one tunnel for as long as the scope lives. */
  readonly registerTunnel: (agentId: AgentId, tunnelId: TunnelId, sink: TunnelSink) => Effect.Effect<void, never, Scope.Scope>
  /** Every connect, disconnect, message and status change, for whoever subscribes. */
  readonly events: Stream.Stream<HubEvent>
  readonly setDraining: (id: AgentId, draining: boolean) => Effect.Effect<AgentView, AgentHubError>
  /** Approves a pending agent: issues its credential over the socket. */
  readonly approve: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  readonly reject: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Issues a new credential; the old one works for CREDENTIAL_ROTATION_GRACE. */
  readonly rotate: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Revokes the credential and closes the agent's socket. */
  readonly revoke: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
}

export class AgentHub extends Context.Service<AgentHub, AgentHubShape>()("control-plane/AgentHub") {}
