// The viewer side of the VNC proxy: the `ws` server that accepts browser upgrades (noVNC's `binary`
// subprotocol, a frame limit) and the close codes viewers see. Effect's upgrade shares one `ws` server between
// routes and hides the send callback that tells when the browser has taken bytes, which credit return needs.
import { MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { type Duration, Effect } from "effect"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { type WebSocket, WebSocketServer } from "ws"

/** The subprotocol noVNC asks for; answered when offered. */
export const VIEWER_SUBPROTOCOL = "binary"

/** Largest message a viewer may send (RFB client messages are small; cut text is the largest). */
export const MAX_VIEWER_MESSAGE_BYTES = 16 * MAX_BINARY_PAYLOAD_BYTES

/** Close codes a viewer can see, with the reason text saying more. */
export const ViewerClose = {
  /** The VNC server ended the connection, or the agent was asked to disconnect. */
  normal: 1000,
  /** The control plane is shutting down. */
  goingAway: 1001,
  /** The viewer sent a text frame: RFB travels in binary frames. */
  unsupportedData: 1003,
  /** The session does not exist or is not the caller's. */
  notFound: 4404,
  /** The session exists but is not running. */
  notRunning: 4409,
  /** The agent closed the tunnel (pod gone, idle timeout, agent shutdown...). */
  tunnelClosed: 4410,
  /** The agent could not open the tunnel, or broke the flow-control contract. */
  tunnelFailed: 4502,
  /** The agent running the session disconnected. */
  agentGone: 4503
} as const

export const makeViewerWebSocketServer = (): WebSocketServer =>
  new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: MAX_VIEWER_MESSAGE_BYTES,
    // Offered and known: answer it. Offered but not `binary`: answer none, and a browser will refuse.
    handleProtocols: (protocols) => (protocols.has(VIEWER_SUBPROTOCOL) ? VIEWER_SUBPROTOCOL : false)
  })

/** Completes the handshake on a request the HTTP server handed over; fails if the socket closes first. */
export const upgradeViewer = (wss: WebSocketServer, request: IncomingMessage): Effect.Effect<WebSocket, Error> =>
  Effect.callback<WebSocket, Error>((resume) => {
    const socket = request.socket as Duplex
    const onClose = () => resume(Effect.fail(new Error("the socket closed before the upgrade")))
    if (socket.destroyed) return onClose()
    socket.once("close", onClose)
    // Browsers send nothing before the 101, so there are no head bytes to pass on.
    wss.handleUpgrade(request, socket, Buffer.alloc(0), (ws) => {
      socket.off("close", onClose)
      resume(Effect.succeed(ws))
    })
  })

/** A close reason fits in 123 bytes of UTF-8. */
export const closeReason = (text: string): string => {
  let out = text
  while (Buffer.byteLength(out) > 123) out = out.slice(0, -1)
  return out
}

/** Closes and waits (bounded) until the close handshake has finished, so the close frame reaches the viewer. */
export const closeAndWait = (ws: WebSocket, code: number, reason: string, timeout: Duration.Input = "2 seconds"): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (ws.readyState === ws.CLOSED) return resume(Effect.void)
    ws.once("close", () => resume(Effect.void))
    // A viewer paused for flow control must be read again, or its close reply is never seen.
    if (ws.isPaused) ws.resume()
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, closeReason(reason))
  }).pipe(
    Effect.timeoutOption(timeout),
    Effect.flatMap((done) => (done._tag === "None" ? Effect.sync(() => ws.terminate()) : Effect.void))
  )
