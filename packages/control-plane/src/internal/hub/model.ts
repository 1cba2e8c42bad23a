// What AgentHub shows the rest of the control plane: its error, the agent as seen through its link, presence
// events, the reports it routes to their one consumer, and tunnels. Defined here, re-exported by AgentHub.ts,
// so the hub's internal modules never import the service module.
import type { AgentId, AgentMessage, AgentStatus, BinaryFrame, CommandErrorCode, PayloadOf, SessionId, SessionStatus, TunnelId } from "@streamspace/protocol"
import { CommandErrorCode as CommandErrorCodeSchema } from "@streamspace/protocol"
import type { Effect } from "effect"
import { Schema } from "effect"
import type { AgentRecord } from "../store/agents.ts"

export class AgentHubError extends Schema.TaggedError<AgentHubError>()("AgentHubError", {
  reason: Schema.Literals(["NotFound", "NotConnected", "NotApproved", "InvalidTransition", "Store", "TunnelRefused"]),
  message: Schema.String,
  /** TunnelRefused: the agent's code (`session_not_running`, `tunnel_failed`, `timeout`, ...). */
  code: Schema.optionalKey(CommandErrorCodeSchema)
}) {}

/** Status as the API shows it: the agent's own report, `offline` when it missed heartbeats or left, `draining` when drained. */
export type AgentViewStatus = AgentStatus | "draining"

/** An agent as the hub sees it: its record (credentials left out) and its link. */
export interface AgentView extends Omit<AgentRecord, "status" | "credentialHash" | "previousCredentialHash" | "previousCredentialExpiresAt"> {
  readonly status: AgentViewStatus
  readonly connected: boolean
  /** Tunnels the agent reported in its last heartbeat. */
  readonly activeTunnels: number
  /** While connected: the socket's peer address and its hello's fingerprint (the agent logs it while pending). */
  readonly remoteAddress?: string | undefined
  readonly fingerprint?: string | undefined
}

/** Which agents are reachable: every connect, disconnect and change of API status. */
export type PresenceEvent =
  | { readonly _tag: "Connected"; readonly agentId: AgentId }
  | { readonly _tag: "Disconnected"; readonly agentId: AgentId }
  | { readonly _tag: "StatusChanged"; readonly agentId: AgentId; readonly status: AgentViewStatus }

export type CommandReport = Extract<AgentMessage, { readonly type: "command_ack" | "command_completed" | "command_failed" }>

/**
 * The consumers of what approved agents report, each message to the one that needs it. Per connection they
 * run in order, on a bounded queue: a slow consumer holds back that agent's reports (and, once the queue is
 * full, its link), never another agent's. Tunnel replies and `vnc_closed` go to the tunnel's own sink.
 */
export interface AgentReports {
  /** An approved agent connected (after its welcome); runs before any other report of that connection. */
  readonly onConnected?: (agentId: AgentId, hello: PayloadOf<"hello">) => Effect.Effect<void>
  /** `command_ack`, `command_completed`, `command_failed` of commands the hub did not send itself. */
  readonly onCommandReport?: (agentId: AgentId, report: CommandReport) => Effect.Effect<void>
  readonly onSessionStatus?: (agentId: AgentId, status: SessionStatus) => Effect.Effect<void>
}

/** Where the hub delivers what happens to one tunnel. */
export interface TunnelSink {
  /**
   * Binary frames of the tunnel, called as they are read off the agent's socket (usually on its callback): it must
   * not block (flow control bounds what it buffers).
   */
  readonly onFrame: (frame: BinaryFrame) => void
  /** The agent closed the tunnel (`vnc_closed`): nothing more comes, and nothing is left to close on the agent. */
  readonly onClosed: (closed: PayloadOf<"vnc_closed">) => Effect.Effect<void>
  /** The agent's link went away. */
  readonly onAgentGone: Effect.Effect<void>
}

export interface TunnelRequest {
  readonly sessionId: SessionId
  /** Credit granted to the agent for bytes towards the viewer. */
  readonly window: number
}

/** An open tunnel through an agent's link: the path a viewer's bytes take. */
export interface Tunnel {
  readonly id: TunnelId
  /** Credit the agent granted for bytes towards the session. */
  readonly window: number
  /** Sends a binary frame of this tunnel; waits while the link is over its send high-water mark. */
  readonly send: (frame: Uint8Array) => Effect.Effect<void, AgentHubError>
}

export const notFound = (id: AgentId) => new AgentHubError({ reason: "NotFound", message: `no agent ${id}` })
export const notConnected = (id: AgentId) => new AgentHubError({ reason: "NotConnected", message: `agent ${id} is not connected` })
export const notApproved = (id: AgentId) => new AgentHubError({ reason: "NotApproved", message: `agent ${id} is not approved` })
export const tunnelRefused = (code: CommandErrorCode, message: string) => new AgentHubError({ reason: "TunnelRefused", code, message })
