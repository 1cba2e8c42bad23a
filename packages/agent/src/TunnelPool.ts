// TunnelPool: one tunnel per viewer connection. Opens a port-forward to the session pod's VNC_PORT, pumps
// bytes both ways as binary frames under per-tunnel credit windows, and closes on vnc_disconnect, idle
// timeout, pod death and shutdown, telling the control plane with vnc_closed. Never leaks a socket or fiber.
//
// Each tunnel is one fiber in a FiberMap keyed by tunnel id; its scope owns the port-forward socket and
// its three pumps (towards the viewer, towards the session, idle watch). Whatever ends first completes the
// tunnel's close signal with a reason; the scope then closes the socket and vnc_closed is sent once.
import type { BinaryFrame, SessionId, TunnelId } from "@streamspace/protocol"
import {
  creditThreshold,
  DEFAULT_WINDOW_BYTES,
  encodeData,
  encodeWindow,
  MAX_BINARY_PAYLOAD_BYTES,
  MAX_BUFFERED_BYTES_PER_CONNECTION,
  MAX_TUNNELS_PER_CONNECTION,
  MIN_WINDOW_BYTES
} from "@streamspace/protocol"
import { Clock, Context, Deferred, Duration, Effect, Fiber, FiberMap, Latch, Layer, Metric, Option, Queue, Schema, Stream } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { Connection } from "./Connection.ts"
import { Kubernetes, type PortForwardStream } from "./Kubernetes.ts"
import { vncPortOf } from "./internal/kubeObjects.ts"
import { tunnelBytes, vncTunnelsActive } from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"

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
  /**
   * Bytes the agent holds for its tunnels: read from port-forwards and not yet sent, plus bytes from the
   * control plane not yet written to the session. Per tunnel this stays within the port-forward read
   * buffer plus the window we grant, whatever the viewer does.
   */
  readonly buffered: Effect.Effect<{ readonly total: number; readonly max: number }>
  /** Closes every tunnel (link lost, shutdown). */
  readonly closeAll: (reason: TunnelCloseReason) => Effect.Effect<void>
}

interface CloseInfo {
  readonly reason: TunnelCloseReason
  readonly message?: string
}

interface Tunnel {
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

const GONE = new Set(["terminating", "terminated", "failed"])

export const make = Effect.gen(function*() {
  const config = yield* AgentConfig
  const kube = yield* Kubernetes
  const store = yield* SessionStore
  const connection = yield* Connection
  const tunnels = new Map<TunnelId, Tunnel>()
  const fibers = yield* FiberMap.make<TunnelId, void>()
  const idleTimeout = Duration.toMillis(config.vncTunnelTimeout)
  const toViewerBytes = Metric.withAttributes(tunnelBytes, { direction: "to_viewer" })
  const toSessionBytes = Metric.withAttributes(tunnelBytes, { direction: "to_session" })

  const signal = (t: Tunnel, info: CloseInfo) => Deferred.succeed(t.closed, info)

  const pumpToViewer = Effect.fnUntraced(function*(t: Tunnel, pf: PortForwardStream) {
    while (true) {
      yield* Latch.await(t.hasCredit)
      // Never read more than the credit: the control plane never has more than its window in flight.
      const r = yield* pf.read(Math.min(t.credit, MAX_BINARY_PAYLOAD_BYTES))
      if (r._tag === "End") {
        // The watch may not have seen the pod go yet: ask the API when the store still says running.
        const status = yield* store.get(t.sessionId)
        const podGone = Option.isNone(status) || GONE.has(status.value.phase) || (yield* kube.readPod(t.sessionId).pipe(
          Effect.map((pod) => Option.isNone(pod) || pod.value.metadata?.deletionTimestamp != null),
          Effect.orElseSucceed(() => false)
        ))
        // Error text from the kubelet means the forward itself failed (e.g. nothing listens on the port).
        return yield* signal(t, podGone
          ? { reason: "pod_gone" }
          : r.error !== undefined
          ? { reason: "error", message: r.error }
          : { reason: "upstream_closed" })
      }
      t.credit -= r.bytes.length
      if (t.credit <= 0) Latch.closeUnsafe(t.hasCredit)
      t.lastActivity = yield* Clock.currentTimeMillis
      yield* connection.sendBinary(encodeData(t.id, r.bytes))
      yield* Metric.update(toViewerBytes, r.bytes.length)
    }
  })

  const pumpToSession = Effect.fnUntraced(function*(t: Tunnel, pf: PortForwardStream) {
    const threshold = creditThreshold(t.ourWindow)
    while (true) {
      const chunk = yield* Queue.take(t.toSession)
      yield* pf.write(chunk)
      t.lastActivity = yield* Clock.currentTimeMillis
      t.inflight -= chunk.length
      t.unreturned += chunk.length
      yield* Metric.update(toSessionBytes, chunk.length)
      // Return credit as the bytes reach the session, batched so there is not one credit frame per data frame.
      if (t.unreturned >= threshold) {
        const credit = t.unreturned
        t.unreturned = 0
        yield* connection.sendBinary(encodeWindow(t.id, credit))
      }
    }
  })

  const idleWatch = Effect.fnUntraced(function*(t: Tunnel) {
    while (true) {
      const idleFor = (yield* Clock.currentTimeMillis) - t.lastActivity
      if (idleFor >= idleTimeout) return yield* signal(t, { reason: "idle_timeout" })
      yield* Effect.sleep(Duration.millis(idleTimeout - idleFor))
    }
  })

  const runTunnel = (t: Tunnel, port: number, opened: Deferred.Deferred<void, TunnelPoolError>) =>
    Effect.gen(function*() {
      const info = yield* Effect.scoped(Effect.gen(function*() {
        const pf = yield* kube.portForward(t.sessionId, port).pipe(Effect.result)
        if (pf._tag === "Failure") {
          yield* Deferred.fail(opened, new TunnelPoolError({ reason: "PortForwardFailed", message: pf.failure.message }))
          return undefined
        }
        t.lastActivity = yield* Clock.currentTimeMillis
        t.pf = pf.success
        const guard = <E>(eff: Effect.Effect<unknown, E>) =>
          eff.pipe(Effect.catchCause((cause) => signal(t, { reason: "error", message: String(cause).slice(0, 512) })))
        yield* Effect.forkScoped(guard(pumpToViewer(t, pf.success)))
        yield* Effect.forkScoped(guard(pumpToSession(t, pf.success).pipe(
          Effect.catchIf((e) => e._tag === "PortForwardClosed", () => signal(t, { reason: "upstream_closed" }))
        )))
        yield* Effect.forkScoped(idleWatch(t))
        yield* Deferred.succeed(opened, undefined)
        return yield* Deferred.await(t.closed)
      }))
      if (info === undefined) return
      // The socket is closed now; tell the control plane once.
      yield* connection.send("vnc_closed", {
        tunnel_id: t.id,
        session_id: t.sessionId,
        reason: info.reason,
        ...(info.message !== undefined ? { message: info.message } : {})
      }).pipe(Effect.catch((e) => Effect.logDebug(`vnc_closed for tunnel ${t.id} not sent: ${e.message}`)))
      yield* Effect.logInfo(`tunnel ${t.id} to session ${t.sessionId} closed: ${info.reason}${info.message !== undefined ? ` (${info.message})` : ""}`)
    }).pipe(
      Effect.ensuring(Effect.gen(function*() {
        tunnels.delete(t.id)
        yield* Queue.shutdown(t.toSession)
        yield* Metric.update(vncTunnelsActive, tunnels.size)
      })),
      Effect.annotateLogs({ tunnel_id: t.id, session_id: t.sessionId })
    )

  const open = Effect.fn("TunnelPool.open")(function*(sessionId: SessionId, tunnelId: TunnelId, window?: number) {
    yield* Effect.annotateCurrentSpan({ "session.id": sessionId, "tunnel.id": tunnelId })
    // Reserve the id synchronously, so concurrent opens cannot both pass the checks.
    if (tunnels.has(tunnelId)) {
      return yield* new TunnelPoolError({ reason: "DuplicateTunnel", message: `tunnel ${tunnelId} is already open` })
    }
    if (tunnels.size >= MAX_TUNNELS_PER_CONNECTION) {
      return yield* new TunnelPoolError({ reason: "TooManyTunnels", message: `at most ${MAX_TUNNELS_PER_CONNECTION} tunnels may be open at once` })
    }
    const granted = window ?? DEFAULT_WINDOW_BYTES
    // What we buffer towards sessions is bounded by the windows we grant: keep their sum within the
    // per-connection cap, holding back the minimum window for every tunnel that may still open.
    let grantedByUs = 0
    for (const other of tunnels.values()) grantedByUs += other.ourWindow
    const reserved = (MAX_TUNNELS_PER_CONNECTION - tunnels.size - 1) * MIN_WINDOW_BYTES
    const ourWindow = Math.max(MIN_WINDOW_BYTES, Math.min(config.vncTunnelWindow, MAX_BUFFERED_BYTES_PER_CONNECTION - grantedByUs - reserved))
    const t: Tunnel = {
      id: tunnelId,
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
    tunnels.set(tunnelId, t)
    // A failed or interrupted open frees the id; a tunnel fiber already started is told to stop.
    const release = Effect.suspend(() => {
      if (t.fiber !== undefined) return signal(t, { reason: "error", message: "vnc_connect did not complete" })
      if (tunnels.get(tunnelId) === t) tunnels.delete(tunnelId)
      return Effect.void
    })
    return yield* Effect.gen(function*() {
      const status = yield* store.get(sessionId)
      if (Option.isNone(status)) {
        return yield* new TunnelPoolError({ reason: "SessionNotFound", message: `no session ${sessionId} on this agent` })
      }
      if (status.value.phase !== "running") {
        return yield* new TunnelPoolError({ reason: "SessionNotRunning", message: `session ${sessionId} is ${status.value.phase}, not running` })
      }
      const pod = yield* kube.readPod(sessionId).pipe(
        Effect.mapError((e) => new TunnelPoolError({ reason: "PortForwardFailed", message: e.message }))
      )
      if (Option.isNone(pod)) {
        return yield* new TunnelPoolError({ reason: "SessionNotFound", message: `the pod of session ${sessionId} is gone` })
      }
      const port = vncPortOf(pod.value, config.vncPort)
      const opened = yield* Deferred.make<void, TunnelPoolError>()
      t.fiber = yield* FiberMap.run(fibers, tunnelId, runTunnel(t, port, opened), { startImmediately: true })
      yield* Metric.update(vncTunnelsActive, tunnels.size)
      yield* Deferred.await(opened)
      return { window: t.ourWindow }
    }).pipe(Effect.onError(() => release))
  })

  const close = Effect.fn("TunnelPool.close")(function*(tunnelId: TunnelId, reason: TunnelCloseReason) {
    const t = tunnels.get(tunnelId)
    if (t === undefined) return
    yield* signal(t, { reason })
    if (t.fiber !== undefined) yield* Fiber.await(t.fiber)
  })

  const receive = Effect.fnUntraced(function*(frame: BinaryFrame) {
    const t = tunnels.get(frame.tunnelId)
    if (t === undefined) return
    if (frame.kind === "window") {
      // Never trust more credit than the window granted (a confused sender must not unbound our sends).
      t.credit = Math.min(t.credit + frame.credit, t.window)
      if (t.credit > 0) Latch.openUnsafe(t.hasCredit)
      return
    }
    if (t.inflight + frame.payload.length > t.ourWindow) {
      yield* signal(t, { reason: "error", message: `control plane sent more than the ${t.ourWindow}-byte window granted for tunnel ${t.id}` })
      return
    }
    t.inflight += frame.payload.length
    t.lastActivity = yield* Clock.currentTimeMillis
    Queue.offerUnsafe(t.toSession, frame.payload)
  })

  const closeAll = Effect.fn("TunnelPool.closeAll")(function*(reason: TunnelCloseReason) {
    const all = [...tunnels.values()]
    for (const t of all) yield* signal(t, { reason })
    for (const t of all) if (t.fiber !== undefined) yield* Fiber.await(t.fiber)
  })

  // A session that stops running takes its tunnels with it, whoever stopped it.
  yield* Effect.forkScoped(
    store.changes.pipe(
      Stream.runForEach((s) =>
        GONE.has(s.phase)
          ? Effect.forEach([...tunnels.values()].filter((t) => t.sessionId === s.session_id), (t) => signal(t, { reason: "pod_gone" }), { discard: true })
          : Effect.void
      )
    ),
    { startImmediately: true }
  )
  // Runs before the FiberMap is torn down: every open tunnel says goodbye.
  yield* Effect.addFinalizer(() => closeAll("shutdown"))

  return TunnelPool.of({
    open,
    close,
    receive,
    active: Effect.sync(() => tunnels.size),
    buffered: Effect.sync(() => {
      let total = 0
      let max = 0
      for (const t of tunnels.values()) {
        const held = (t.pf?.buffered() ?? 0) + t.inflight
        total += held
        max = Math.max(max, held)
      }
      return { total, max }
    }),
    closeAll
  })
})

export class TunnelPool extends Context.Service<TunnelPool, TunnelPoolShape>()("agent/TunnelPool") {
  /** Needs AgentConfig, Kubernetes, SessionStore and Connection. */
  static readonly layer: Layer.Layer<TunnelPool, never, AgentConfig | Kubernetes | SessionStore | Connection> = Layer.effect(TunnelPool, make)
}
