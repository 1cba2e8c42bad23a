// The viewer's side of a cross-replica VNC stream: a viewer authenticated on this replica (B) whose session's
// agent is held by another replica (A) is piped to A's peer endpoint over a WebSocket carrying a peer token. A
// relays that socket to its agent exactly as a local viewer (internal/vnc/relay.ts: the tunnel's credit).
//
// Back-pressure end to end: each direction stops reading its source while more than `highWater` bytes wait in
// the other socket (counted from `send` until its callback), so a stalled viewer stops B reading A, A's sends
// then stay unwritten, A's relay returns no credit, and the agent stops at one tunnel window. B holds at most
// `highWater` plus one message per direction.
import type { Duration, Scope } from "effect"
import { Deferred, Effect, Exit } from "effect"
import type { RawData } from "ws"
import { WebSocket } from "ws"
import { type End, ViewerClose } from "../vnc/relay.ts"
import { keepAlive } from "../ws.ts"
import { PEER_HEADER } from "./peerToken.ts"

export const PEER_VNC_PATH = "/internal/v1/peer/sessions/:id/vnc"
/** The subprotocol of the peer socket. */
export const PEER_SUBPROTOCOL = "streamspace.peer.v1"

export interface BridgeOptions {
  readonly peerUrl: string
  readonly sessionId: string
  readonly token: string
  /** Bytes one direction may hold in the socket it writes to before its source is paused. */
  readonly highWater: number
  readonly maxPayload: number
  readonly pingInterval: Duration.Input
  /** Called with a function giving the bytes this bridge holds right now, for as long as it runs. */
  readonly track: (held: () => number) => Effect.Effect<void, never, Scope.Scope>
}

const peerVncUrl = (peerUrl: string, sessionId: string) =>
  `${peerUrl.replace(/^http/, "ws").replace(/\/+$/, "")}${PEER_VNC_PATH.replace(":id", encodeURIComponent(sessionId))}`

/** A close code the peer sent, as the viewer should see it (no status, abnormal or going away: the replica is gone, reconnect). */
const forwardedCode = (code: number) => (code === 1005 || code === 1006 || code === 1001 ? ViewerClose.reconnect : code)

/** Pipes `from` into `to`, pausing `from` while `to` holds more than `highWater` bytes sent and not yet written. */
const pipe = (from: WebSocket, to: WebSocket, highWater: number) => {
  let queued = 0
  from.on("message", (data: RawData, isBinary: boolean) => {
    if (to.readyState !== WebSocket.OPEN) return
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
    queued += bytes.length
    to.send(bytes, { binary: isBinary }, () => {
      queued -= bytes.length
      if (from.isPaused && queued <= highWater / 2) from.resume()
    })
    if (queued > highWater) from.pause()
  })
  return () => queued
}

/** Relays `viewer` through the replica at `peerUrl` until either end stops; returns how it ended. */
export const bridge = Effect.fnUntraced(function*(viewer: WebSocket, options: BridgeOptions) {
  const ended = yield* Deferred.make<End>()
  const finish = (end: End) => void Deferred.doneUnsafe(ended, Exit.succeed(end))
  viewer.on("close", () => finish({ by: "viewer" }))
  viewer.on("error", () => finish({ by: "viewer" }))
  // Nothing is read from the viewer until the peer socket is open.
  viewer.pause()

  const peer = yield* Effect.acquireRelease(
    Effect.sync(() =>
      new WebSocket(peerVncUrl(options.peerUrl, options.sessionId), [PEER_SUBPROTOCOL], {
        headers: { [PEER_HEADER]: options.token },
        perMessageDeflate: false,
        maxPayload: options.maxPayload,
        handshakeTimeout: 10_000
      })
    ),
    (ws) => Effect.sync(() => (ws.readyState === WebSocket.OPEN ? ws.close(1000) : ws.terminate()))
  )
  peer.on("unexpected-response", (_req, res) => {
    finish({ by: "agent", code: res.statusCode === 503 ? ViewerClose.reconnect : ViewerClose.tunnelFailed, reason: `the replica holding the agent refused the relay: HTTP ${res.statusCode}` })
    res.resume()
  })
  peer.on("error", (e) => finish({ by: "agent", code: ViewerClose.reconnect, reason: `the replica holding the agent is not reachable: ${e.message}` }))
  peer.on("close", (code, reason) => finish({ by: "agent", code: forwardedCode(code), reason: reason.toString() || "the replica holding the agent closed the relay" }))
  const toViewer = pipe(peer, viewer, options.highWater)
  const toPeer = pipe(viewer, peer, options.highWater)
  yield* options.track(() => toViewer() + toPeer())
  peer.once("open", () => viewer.resume())
  // Dead viewers are found by transport pings (not judged while paused: their pongs are not read then).
  yield* Effect.forkScoped(
    keepAlive(viewer, options.pingInterval, () => viewer.isPaused).pipe(Effect.flatMap((dead) => Effect.sync(() => {
      if (!dead) return
      finish({ by: "viewer" })
      viewer.terminate()
    }))),
    { startImmediately: true }
  )
  yield* Effect.forkScoped(
    keepAlive(peer, options.pingInterval, () => peer.isPaused).pipe(Effect.flatMap((dead) => Effect.sync(() => {
      if (!dead) return
      finish({ by: "agent", code: ViewerClose.reconnect, reason: "the replica holding the agent stopped answering" })
      peer.terminate()
    }))),
    { startImmediately: true }
  )
  return yield* Deferred.await(ended)
})
