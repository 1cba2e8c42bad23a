// TunnelPool: one tunnel per viewer connection. Opens a port-forward to the session pod's VNC_PORT, pumps
// bytes both ways as binary frames under per-tunnel credit windows (internal/tunnel.ts), and closes on
// vnc_disconnect, idle timeout, pod death and shutdown, telling the control plane with vnc_closed. Never
// leaks a socket or fiber.
//
// Each tunnel is one fiber in a FiberMap keyed by tunnel id; its scope owns the port-forward socket and
// its three pumps (towards the viewer, towards the session, idle watch). Whatever ends first completes the
// tunnel's close signal with a reason; the scope then closes the socket and vnc_closed is sent once.
import type { BinaryFrame, SessionId, SessionStatus, TunnelId } from "@streamspace/protocol"
import { DEFAULT_WINDOW_BYTES, MAX_TUNNELS_PER_CONNECTION } from "@streamspace/protocol"
import { Clock, Context, Deferred, Effect, Fiber, FiberMap, Layer, Metric, Option, Queue, Schema, Stream } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import type { AgentConfigShape } from "./AgentConfig.ts"
import { Connection } from "./Connection.ts"
import type { ConnectionShape } from "./Connection.ts"
import { vncPortOf } from "./internal/kubeObjects.ts"
import {
  acceptData,
  addCredit,
  type CloseInfo,
  failureWatch,
  heldBytes,
  idleWatch,
  makeTunnel,
  pumpToSession,
  pumpToViewer,
  signal,
  type Tunnel,
  type TunnelCloseReason,
  windowToGrant
} from "./internal/tunnel.ts"
import { Kubernetes } from "./Kubernetes.ts"
import type { KubernetesShape } from "./Kubernetes.ts"
import { vncTunnelsActive } from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"
import type { SessionStoreShape } from "./SessionStore.ts"

export type { TunnelCloseReason } from "./internal/tunnel.ts"

export class TunnelPoolError extends Schema.TaggedError<TunnelPoolError>()("TunnelPoolError", {
  reason: Schema.Literals(["SessionNotFound", "SessionNotRunning", "TooManyTunnels", "PortForwardFailed", "DuplicateTunnel"]),
  message: Schema.String
}) {}

export interface TunnelPoolShape {
  /** Opens a tunnel; `window` is the credit the control plane grants us. Returns the window we grant it. */
  readonly open: (sessionId: SessionId, tunnelId: TunnelId, window?: number) => Effect.Effect<{ readonly window: number }, TunnelPoolError>
  /** Closes one tunnel and sends vnc_closed; a no-op for an unknown id. */
  readonly close: (tunnelId: TunnelId, reason: TunnelCloseReason) => Effect.Effect<void>
  /** Handles one binary frame from the control plane (data towards the session, or credit). */
  readonly receive: (frame: BinaryFrame) => Effect.Effect<void>
  readonly active: Effect.Effect<number>
  /** The ids of the open tunnels (heartbeats carry them, so the control plane can reconcile). */
  readonly ids: Effect.Effect<ReadonlyArray<TunnelId>>
  /**
   * Bytes the agent holds for its tunnels: read from port-forwards and not yet sent, plus bytes from the
   * control plane not yet written to the session. Per tunnel this stays within the port-forward read
   * buffer plus the window we grant, whatever the viewer does.
   */
  readonly buffered: Effect.Effect<{ readonly total: number; readonly max: number }>
  /** Closes every tunnel (link lost, shutdown). */
  readonly closeAll: (reason: TunnelCloseReason) => Effect.Effect<void>
}

const GONE = new Set(["terminating", "terminated", "failed"])

interface State {
  readonly config: AgentConfigShape
  readonly kube: KubernetesShape
  readonly store: SessionStoreShape
  readonly connection: ConnectionShape
  readonly tunnels: Map<TunnelId, Tunnel>
  readonly fibers: FiberMap.FiberMap<TunnelId, void>
}

/** Why a session's tunnels close when its status changes to this one; undefined while it runs. */
export const closeForPhase = (status: SessionStatus): CloseInfo | undefined => {
  if (status.phase === "running") return undefined
  if (GONE.has(status.phase)) return { reason: "pod_gone", ...(status.reason !== undefined ? { message: status.reason } : {}) }
  return { reason: "upstream_closed", message: `the session's desktop is not ready${status.reason !== undefined ? ` (${status.reason})` : ""}` }
}

/** The forward ended: did the pod go? The watch may not have seen it yet, so ask the API when the store still says running. */
const podGone = (s: State, t: Tunnel) =>
  Effect.gen(function*() {
    const status = yield* s.store.get(t.sessionId)
    if (Option.isNone(status) || GONE.has(status.value.phase)) return true
    return yield* s.kube.readPod(t.sessionId).pipe(
      Effect.map((pod) => Option.isNone(pod) || pod.value.metadata?.deletionTimestamp != null),
      Effect.orElseSucceed(() => false)
    )
  })

/** Tells the control plane once that the tunnel closed (the socket is closed by then). */
const reportClosed = (s: State, t: Tunnel, info: CloseInfo) =>
  Effect.gen(function*() {
    yield* s.connection.send("vnc_closed", {
      tunnel_id: t.id,
      session_id: t.sessionId,
      reason: info.reason,
      ...(info.message !== undefined ? { message: info.message } : {})
    }).pipe(Effect.catch((e) => Effect.logDebug(`vnc_closed for tunnel ${t.id} not sent: ${e.message}`)))
    yield* Effect.logInfo(`tunnel ${t.id} to session ${t.sessionId} closed: ${info.reason}${info.message !== undefined ? ` (${info.message})` : ""}`)
  })

/** The tunnel's fiber: opens the port-forward, runs the pumps until the close signal, then reports and forgets it. */
const runTunnel = (s: State, t: Tunnel, port: number, opened: Deferred.Deferred<void, TunnelPoolError>) =>
  Effect.gen(function*() {
    const info = yield* Effect.scoped(Effect.gen(function*() {
      const pf = yield* s.kube.portForward(t.sessionId, port).pipe(Effect.result)
      if (pf._tag === "Failure") {
        yield* Deferred.fail(opened, new TunnelPoolError({ reason: "PortForwardFailed", message: pf.failure.message }))
        return undefined
      }
      t.lastActivity = yield* Clock.currentTimeMillis
      t.pf = pf.success
      const guard = <E>(eff: Effect.Effect<unknown, E>) =>
        eff.pipe(Effect.catchCause((cause) => signal(t, { reason: "error", message: String(cause).slice(0, 512) })))
      yield* Effect.forkScoped(guard(pumpToViewer(t, pf.success, s.connection.sendBinary, podGone(s, t))))
      yield* Effect.forkScoped(guard(pumpToSession(t, pf.success, s.connection.sendBinary).pipe(
        Effect.catchIf((e) => e._tag === "PortForwardClosed", () => signal(t, { reason: "upstream_closed" }))
      )))
      yield* Effect.forkScoped(idleWatch(t, s.config.vncTunnelTimeout))
      yield* Effect.forkScoped(guard(failureWatch(t, pf.success, podGone(s, t))))
      yield* Deferred.succeed(opened, undefined)
      return yield* Deferred.await(t.closed)
    }))
    if (info !== undefined) yield* reportClosed(s, t, info)
  }).pipe(
    Effect.ensuring(Effect.gen(function*() {
      s.tunnels.delete(t.id)
      yield* Queue.shutdown(t.toSession)
      yield* Metric.update(vncTunnelsActive, s.tunnels.size)
    })),
    Effect.annotateLogs({ tunnel_id: t.id, session_id: t.sessionId })
  )

/** The port of the session's running pod, or why there is none. */
const sessionPort = (s: State, sessionId: SessionId) =>
  Effect.gen(function*() {
    const status = yield* s.store.get(sessionId)
    if (Option.isNone(status)) {
      return yield* new TunnelPoolError({ reason: "SessionNotFound", message: `no session ${sessionId} on this agent` })
    }
    if (status.value.phase !== "running") {
      return yield* new TunnelPoolError({ reason: "SessionNotRunning", message: `session ${sessionId} is ${status.value.phase}, not running` })
    }
    const pod = yield* s.kube.readPod(sessionId).pipe(
      Effect.mapError((e) => new TunnelPoolError({ reason: "PortForwardFailed", message: e.message }))
    )
    if (Option.isNone(pod)) {
      return yield* new TunnelPoolError({ reason: "SessionNotFound", message: `the pod of session ${sessionId} is gone` })
    }
    return vncPortOf(pod.value, s.config.vncPort)
  })

const open = (s: State) =>
  Effect.fn("TunnelPool.open")(function*(sessionId: SessionId, tunnelId: TunnelId, window?: number) {
    yield* Effect.annotateCurrentSpan({ "session.id": sessionId, "tunnel.id": tunnelId })
    // Reserve the id synchronously, so concurrent opens cannot both pass the checks.
    if (s.tunnels.has(tunnelId)) {
      return yield* new TunnelPoolError({ reason: "DuplicateTunnel", message: `tunnel ${tunnelId} is already open` })
    }
    if (s.tunnels.size >= MAX_TUNNELS_PER_CONNECTION) {
      return yield* new TunnelPoolError({ reason: "TooManyTunnels", message: `at most ${MAX_TUNNELS_PER_CONNECTION} tunnels may be open at once` })
    }
    const ourWindow = windowToGrant(s.config.vncTunnelWindow, s.tunnels.values(), s.tunnels.size)
    const t = yield* makeTunnel(tunnelId, sessionId, window ?? DEFAULT_WINDOW_BYTES, ourWindow)
    s.tunnels.set(tunnelId, t)
    // A failed or interrupted open frees the id; a tunnel fiber already started is told to stop.
    const release = Effect.suspend(() => {
      if (t.fiber !== undefined) return signal(t, { reason: "error", message: "vnc_connect did not complete" })
      if (s.tunnels.get(tunnelId) === t) s.tunnels.delete(tunnelId)
      return Effect.void
    })
    return yield* Effect.gen(function*() {
      const port = yield* sessionPort(s, sessionId)
      const opened = yield* Deferred.make<void, TunnelPoolError>()
      t.fiber = yield* FiberMap.run(s.fibers, tunnelId, runTunnel(s, t, port, opened), { startImmediately: true })
      yield* Metric.update(vncTunnelsActive, s.tunnels.size)
      yield* Deferred.await(opened)
      return { window: t.ourWindow }
    }).pipe(Effect.onError(() => release))
  })

const close = (s: State) =>
  Effect.fn("TunnelPool.close")(function*(tunnelId: TunnelId, reason: TunnelCloseReason) {
    const t = s.tunnels.get(tunnelId)
    if (t === undefined) return
    yield* signal(t, { reason })
    if (t.fiber !== undefined) yield* Fiber.await(t.fiber)
  })

const closeAll = (s: State) =>
  Effect.fn("TunnelPool.closeAll")(function*(reason: TunnelCloseReason) {
    const all = [...s.tunnels.values()]
    for (const t of all) yield* signal(t, { reason })
    for (const t of all) if (t.fiber !== undefined) yield* Fiber.await(t.fiber)
  })

/** One binary frame from the control plane: credit for our sends, or bytes for the session. */
const receive = (s: State) =>
  Effect.fnUntraced(function*(frame: BinaryFrame) {
    const t = s.tunnels.get(frame.tunnelId)
    if (t === undefined) return
    if (frame.kind === "window") addCredit(t, frame.credit)
    else yield* acceptData(t, frame.payload)
  })

const buffered = (s: State) =>
  Effect.sync(() => {
    let total = 0
    let max = 0
    for (const t of s.tunnels.values()) {
      const held = heldBytes(t)
      total += held
      max = Math.max(max, held)
    }
    return { total, max }
  })

export const make = Effect.gen(function*() {
  const s: State = {
    config: yield* AgentConfig,
    kube: yield* Kubernetes,
    store: yield* SessionStore,
    connection: yield* Connection,
    tunnels: new Map(),
    fibers: yield* FiberMap.make<TunnelId, void>()
  }
  // A session that stops running takes its tunnels with it, whoever stopped it. The pod watch is what the agent
  // can see: through the API server's port-forward a VNC server that exits is noticed only on the next write,
  // so a pod that is deleted, fails, or is no longer Ready (its container restarted, its probe fails) closes
  // the session's tunnels at once, and the viewer is told why.
  yield* Effect.forkScoped(
    s.store.changes.pipe(
      Stream.runForEach((status) => {
        const info = closeForPhase(status)
        return info === undefined
          ? Effect.void
          : Effect.forEach([...s.tunnels.values()].filter((t) => t.sessionId === status.session_id), (t) => signal(t, info), { discard: true })
      })
    ),
    { startImmediately: true }
  )
  // A desktop container that restarted took its VNC connections with it, even if the pod is Ready again by now.
  yield* Effect.forkScoped(
    s.store.restarts.pipe(
      Stream.runForEach((sessionId) =>
        Effect.forEach(
          [...s.tunnels.values()].filter((t) => t.sessionId === sessionId),
          (t) => signal(t, { reason: "upstream_closed", message: "the session's desktop restarted" }),
          { discard: true }
        )
      )
    ),
    { startImmediately: true }
  )
  // Tunnel frames come straight from the link's read loop, not through the Router's stream.
  yield* s.connection.routeTunnelFrames(receive(s))
  // Runs before the FiberMap is torn down: every open tunnel says goodbye.
  yield* Effect.addFinalizer(() => closeAll(s)("shutdown"))

  return TunnelPool.of({
    open: open(s),
    close: close(s),
    receive: receive(s),
    active: Effect.sync(() => s.tunnels.size),
    ids: Effect.sync(() => [...s.tunnels.keys()]),
    buffered: buffered(s),
    closeAll: closeAll(s)
  })
})

export class TunnelPool extends Context.Service<TunnelPool, TunnelPoolShape>()("agent/TunnelPool") {
  /** Needs AgentConfig, Kubernetes, SessionStore and Connection. */
  static readonly layer: Layer.Layer<TunnelPool, never, AgentConfig | Kubernetes | SessionStore | Connection> = Layer.effect(TunnelPool, make)
}
