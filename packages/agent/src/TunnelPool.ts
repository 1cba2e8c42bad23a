// TunnelPool: one tunnel per viewer connection. Opens a port-forward to the session pod's VNC_PORT, pumps
// bytes both ways as binary frames under per-tunnel credit windows, and closes on vnc_disconnect, idle
// timeout, pod death and shutdown, telling the control plane with vnc_closed. Never leaks a socket or fiber.
import type { BinaryFrame, SessionId, TunnelId } from "@streamspace/protocol"
import type { Effect } from "effect"
import { Context, Schema } from "effect"

export class TunnelPoolError extends Schema.TaggedError<TunnelPoolError>()("TunnelPoolError", {
  reason: Schema.Literals(["SessionNotFound", "SessionNotRunning", "TooManyTunnels", "PortForwardFailed", "DuplicateTunnel"]),
  message: Schema.String
}) {}

export type TunnelCloseReason = "disconnect" | "idle_timeout" | "pod_gone" | "upstream_closed" | "shutdown" | "error"

export interface TunnelPoolShape {
  /** Opens a tunnel; `window` is the credit the control plane grants us. Returns the window we grant it. */
  readonly open: (sessionId: SessionId, tunnelId: TunnelId, window?: number) => Effect.Effect<{ readonly window: number }, TunnelPoolError>
  /** Closes one tunnel and sends vnc_closed; a no-op for an unknown id. */
  readonly close: (tunnelId: TunnelId, reason: TunnelCloseReason) => Effect.Effect<void>
  /** Handles one binary frame from the control plane (data towards the session, or credit). */
  readonly receive: (frame: BinaryFrame) => Effect.Effect<void>
  readonly active: Effect.Effect<number>
  /** Closes every tunnel (link lost, shutdown). */
  readonly closeAll: (reason: TunnelCloseReason) => Effect.Effect<void>
}

export class TunnelPool extends Context.Service<TunnelPool, TunnelPoolShape>()("agent/TunnelPool") {}
