// One tunnel's state and its byte pumps. Towards the viewer: read from the port-forward no more than the
// credit the control plane granted, send as data frames. Towards the session: write what the control plane
// sent (never more than the window we granted) and return credit as the bytes reach the session. Whatever
// ends first completes the tunnel's `closed` signal with a reason; TunnelPool.ts owns the rest.
import type { SessionId, TunnelId, VncCloseReason } from "@streamspace/protocol"
import {
  creditThreshold,
  encodeData,
  encodeWindow,
  MAX_BINARY_PAYLOAD_BYTES,
  MAX_BUFFERED_BYTES_PER_CONNECTION,
  MAX_TUNNELS_PER_CONNECTION,
  MIN_WINDOW_BYTES
} from "@streamspace/protocol"
import { Clock, Deferred, Duration, Effect, Fiber, Latch, Metric, Queue } from "effect"
import { tunnelBytes } from "../Metrics.ts"
import type { PortForwardStream } from "./portforward.ts"

/** Why a tunnel closed: the protocol's `vnc_closed` reasons. */
export type TunnelCloseReason = typeof VncCloseReason.Type

export interface CloseInfo {
  readonly reason: TunnelCloseReason
  readonly message?: string
}

export interface Tunnel {
  readonly id: TunnelId
  readonly sessionId: SessionId
  /** Credit the control plane granted (bytes we may send before it returns some). */
  readonly window: number
  credit: number
  /** Open while credit > 0. */
  readonly hasCredit: Latch.Latch
  /** The window we granted the control plane, and bytes it sent that are not yet credited back. */
  readonly ourWindow: number
  inflight: number
  unreturned: number
  readonly toSession: Queue.Queue<Uint8Array>
  /** The open port-forward, once there is one. */
  pf: PortForwardStream | undefined
  lastActivity: number
  readonly closed: Deferred.Deferred<CloseInfo>
  fiber: Fiber.Fiber<void> | undefined
}

/** Sends one binary frame to the control plane. */
export type SendFrame<E> = (frame: Uint8Array) => Effect.Effect<void, E>

const toViewerBytes = Metric.withAttributes(tunnelBytes, { direction: "to_viewer" })
const toSessionBytes = Metric.withAttributes(tunnelBytes, { direction: "to_session" })

/**
 * The window we grant a new tunnel: VNC_TUNNEL_WINDOW, but what we buffer towards sessions is bounded by
 * the windows we grant, so their sum stays within the per-connection cap, holding back the minimum window
 * for every tunnel that may still open.
 */
export const windowToGrant = (wanted: number, open: Iterable<Tunnel>, openCount: number): number => {
  let grantedByUs = 0
  for (const other of open) grantedByUs += other.ourWindow
  const reserved = (MAX_TUNNELS_PER_CONNECTION - openCount - 1) * MIN_WINDOW_BYTES
  return Math.max(MIN_WINDOW_BYTES, Math.min(wanted, MAX_BUFFERED_BYTES_PER_CONNECTION - grantedByUs - reserved))
}

export const makeTunnel = (id: TunnelId, sessionId: SessionId, granted: number, ourWindow: number) =>
  Effect.gen(function*() {
    const t: Tunnel = {
      id,
      sessionId,
      window: granted,
      credit: granted,
      hasCredit: Latch.makeUnsafe(granted > 0),
      ourWindow,
      inflight: 0,
      unreturned: 0,
      toSession: yield* Queue.unbounded<Uint8Array>(),
      pf: undefined,
      lastActivity: yield* Clock.currentTimeMillis,
      closed: yield* Deferred.make<CloseInfo>(),
      fiber: undefined
    }
    return t
  })

export const signal = (t: Tunnel, info: CloseInfo) => Deferred.succeed(t.closed, info)

/** Bytes held for the tunnel: read from the port-forward and not yet sent, plus received and not yet written. */
export const heldBytes = (t: Tunnel) => (t.pf?.buffered() ?? 0) + t.inflight

/**
 * Error-channel text that means the VNC server's end of the connection went away (the API server's forward
 * notices a closed pod side only when it writes to it): the desktop closed, not a failure of the forward.
 */
export const upstreamGone = (error: string) => /broken pipe|connection reset by peer|use of closed network connection/i.test(error)

/** Why a forward that ended (with the error-channel text, if any) closes its tunnel. */
export const endOf = (error: string | undefined, podGone: Effect.Effect<boolean>): Effect.Effect<CloseInfo> =>
  Effect.map(podGone, (gone): CloseInfo =>
    gone
      ? { reason: "pod_gone" }
      : error !== undefined
      ? { reason: upstreamGone(error) ? "upstream_closed" : "error", message: error }
      : { reason: "upstream_closed" })

/**
 * Ends the tunnel as soon as the forward reports an error, even while the pump towards the viewer waits for
 * credit (a stalled or dead viewer) and never reads to the end of the stream.
 */
export const failureWatch = (t: Tunnel, pf: PortForwardStream, podGone: Effect.Effect<boolean>) =>
  Effect.flatMap(pf.failure, (error) => Effect.flatMap(endOf(error, podGone), (info) => signal(t, info)))

/** Pumps session bytes to the viewer within the credit; `podGone` tells a dead pod from a closed forward at the end. */
export const pumpToViewer = Effect.fnUntraced(function*<E>(t: Tunnel, pf: PortForwardStream, send: SendFrame<E>, podGone: Effect.Effect<boolean>) {
  while (true) {
    yield* Latch.await(t.hasCredit)
    // Never read more than the credit: the control plane never has more than its window in flight.
    const r = yield* pf.read(Math.min(t.credit, MAX_BINARY_PAYLOAD_BYTES))
    if (r._tag === "End") {
      // Error text from the kubelet means the forward itself failed (e.g. nothing listens on the port).
      return yield* signal(t, yield* endOf(r.error, podGone))
    }
    t.credit -= r.bytes.length
    if (t.credit <= 0) Latch.closeUnsafe(t.hasCredit)
    t.lastActivity = yield* Clock.currentTimeMillis
    yield* send(encodeData(t.id, r.bytes))
    yield* Metric.update(toViewerBytes, r.bytes.length)
  }
})

/** Writes viewer bytes to the session; returns credit as they land, batched so there is not one credit frame per data frame. */
export const pumpToSession = Effect.fnUntraced(function*<E>(t: Tunnel, pf: PortForwardStream, send: SendFrame<E>) {
  const threshold = creditThreshold(t.ourWindow)
  while (true) {
    const chunk = yield* Queue.take(t.toSession)
    yield* pf.write(chunk)
    t.lastActivity = yield* Clock.currentTimeMillis
    t.inflight -= chunk.length
    t.unreturned += chunk.length
    yield* Metric.update(toSessionBytes, chunk.length)
    if (t.unreturned >= threshold) {
      const credit = t.unreturned
      t.unreturned = 0
      yield* send(encodeWindow(t.id, credit))
    }
  }
})

/** Closes the tunnel once no byte moved either way for `idleTimeout`. */
export const idleWatch = Effect.fnUntraced(function*(t: Tunnel, idleTimeout: Duration.Duration) {
  const limit = Duration.toMillis(idleTimeout)
  while (true) {
    const idleFor = (yield* Clock.currentTimeMillis) - t.lastActivity
    if (idleFor >= limit) return yield* signal(t, { reason: "idle_timeout" })
    yield* Effect.sleep(Duration.millis(limit - idleFor))
  }
})

/** Credit from the control plane; never more than the window granted (a confused sender must not unbound our sends). */
export const addCredit = (t: Tunnel, credit: number) => {
  t.credit = Math.min(t.credit + credit, t.window)
  if (t.credit > 0) Latch.openUnsafe(t.hasCredit)
}

/** Bytes from the control plane towards the session; more than the window we granted ends the tunnel. */
export const acceptData = Effect.fnUntraced(function*(t: Tunnel, payload: Uint8Array) {
  if (t.inflight + payload.length > t.ourWindow) {
    yield* signal(t, { reason: "error", message: `control plane sent more than the ${t.ourWindow}-byte window granted for tunnel ${t.id}` })
    return
  }
  t.inflight += payload.length
  t.lastActivity = yield* Clock.currentTimeMillis
  Queue.offerUnsafe(t.toSession, payload)
})
