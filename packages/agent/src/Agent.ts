// Agent: one whole agent as a layer. Wires the link side (Connection, Heartbeat, CommandQueue, Health,
// logging) to the cluster side (SessionStore, TunnelPool, CredentialStore), routes what the control plane
// sends, and owns graceful shutdown: stop taking commands, let in-flight ones finish within
// GRACEFUL_SHUTDOWN_TIMEOUT (then fail them), close tunnels, say goodbye. Sessions keep running.
// An agent has its own metric registry, so a program that embeds it (the quick start runs the control
// plane in the same process) keeps its metrics out of the agent's /metrics, and the other way round.
import type { Duration } from "effect"
import { Effect, Layer, Metric, Stream } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { CommandQueue, type CommandQueueShape } from "./CommandQueue.ts"
import { Connection, type ConnectionShape, type Incoming } from "./Connection.ts"
import { CredentialStore } from "./CredentialStore.ts"
import { Health, type HealthShape } from "./Health.ts"
import { Heartbeat } from "./Heartbeat.ts"
import { Kubernetes } from "./Kubernetes.ts"
import * as Logging from "./Logging.ts"
import { SessionStore, type SessionStoreShape } from "./SessionStore.ts"
import * as Tracing from "./Tracing.ts"
import { TunnelPool, type TunnelPoolShape } from "./TunnelPool.ts"

interface Services {
  readonly connection: ConnectionShape
  readonly queue: CommandQueueShape
  readonly tunnels: TunnelPoolShape
}

/** Routes one frame: commands to the queue, tunnel bytes to the pool, ping to pong; drain and errors are logged. */
const dispatch = (s: Services, drain: { draining: boolean }) =>
  Effect.fnUntraced(function*(frame: Incoming) {
    if ("kind" in frame) return yield* s.tunnels.receive(frame)
    switch (frame.type) {
      case "command":
        return yield* s.queue.submit(frame)
      case "ping":
        return yield* s.connection.send("pong", { nonce: frame.payload.nonce }).pipe(Effect.ignore)
      case "drain":
        if (drain.draining !== frame.payload.draining) {
          drain.draining = frame.payload.draining
          yield* Effect.logInfo(drain.draining ? "drained by an operator: no new sessions will be placed here" : "no longer draining")
        }
        return
      case "error":
        return yield* Effect.logWarning(`control plane reported an error: ${frame.payload.code}: ${frame.payload.message}`).pipe(
          Effect.annotateLogs(frame.payload.ref_id !== undefined ? { ref_id: frame.payload.ref_id } : {})
        )
      case "credential": // handled by Connection, which needs it for the next dial
      case "welcome":
        return
    }
  })

/** A lost link takes its tunnels with it: the viewers reconnect through the control plane. */
const closeTunnelsOnLinkLoss = (s: Services) => {
  let wasUp = false
  return s.connection.status.pipe(
    Stream.runForEach((up) => {
      const lost = wasUp && !up
      wasUp = up
      return lost ? s.tunnels.closeAll("error") : Effect.void
    })
  )
}

/** Every observed session change goes up while connected; the next hello's inventory covers the gaps. */
const forwardSessionStatus = (s: Services, store: SessionStoreShape) =>
  store.changes.pipe(
    Stream.runForEach((status) =>
      Effect.gen(function*() {
        if (yield* s.connection.isConnected) yield* s.connection.send("session_status", status).pipe(Effect.ignore)
      }).pipe(Effect.annotateLogs({ session_id: status.session_id }))
    )
  )

/** Graceful shutdown: stop taking commands, let in-flight ones finish (then fail them), close tunnels, say goodbye. */
const shutdown = (s: Services, health: HealthShape, timeout: Duration.Duration) =>
  Effect.gen(function*() {
    yield* Effect.logInfo("shutting down: no new commands; waiting for those in flight")
    yield* health.markStopping
    yield* s.queue.shutdown(timeout)
    yield* s.tunnels.closeAll("shutdown")
    yield* s.connection.close("agent shutting down")
    yield* Effect.logInfo("shutdown complete; sessions keep running in the cluster")
  })

/**
 * Dispatches incoming frames, forwards session status changes while connected, closes tunnels when the
 * link drops, and runs the shutdown sequence when its scope closes (it is built last, so its finalizer
 * runs first).
 */
export const Router: Layer.Layer<never, never, AgentConfig | Connection | CommandQueue | TunnelPool | SessionStore | Health> = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* AgentConfig
    const s: Services = { connection: yield* Connection, queue: yield* CommandQueue, tunnels: yield* TunnelPool }
    const store = yield* SessionStore
    const health = yield* Health
    const route = dispatch(s, { draining: false })
    yield* s.connection.incoming.pipe(
      Stream.runForEach((frame) => route(frame).pipe(Effect.catchCause((cause) => Effect.logError("could not handle a frame", cause)))),
      Effect.forkScoped
    )
    yield* Effect.forkScoped(closeTunnelsOnLinkLoss(s))
    yield* Effect.forkScoped(forwardSessionStatus(s, store))
    yield* Effect.addFinalizer(() => shutdown(s, health, config.gracefulShutdownTimeout))
  })
)

/** What `hello` reports, from the cluster side: capacity and the sessions running now. */
const helloFromSessions = Effect.gen(function*() {
  const store = yield* SessionStore
  return { capacity: yield* store.capacity, sessions: yield* store.list }
})

const compose = <ES, RS, ET, RT, EC, RC>(cluster: {
  readonly sessionStore: Layer.Layer<SessionStore, ES, RS>
  readonly tunnelPool: Layer.Layer<TunnelPool, ET, RT>
  readonly credentialStore: Layer.Layer<CredentialStore, EC, RC>
}) => {
  const link = Layer.mergeAll(Heartbeat.layer, CommandQueue.layer).pipe(
    Layer.provideMerge(cluster.tunnelPool),
    Layer.provideMerge(Connection.layerWith(helloFromSessions)),
    Layer.provideMerge(cluster.sessionStore),
    Layer.provideMerge(cluster.credentialStore)
  )
  return Router.pipe(Layer.provideMerge(Health.layer.pipe(Layer.provideMerge(link))))
}

/** Process-wide parts of one agent: its logger, tracer and metric registry (fresh: two agents in one layer never share it). */
const runtime = Layer.mergeAll(Logging.layer, Tracing.layer, Layer.fresh(Layer.sync(Metric.MetricRegistry, (): Metric.MetricRegistry => new Map())))

/**
 * The whole agent around any cluster side (tests pass in-memory ones). The TunnelPool layer may need
 * Connection and SessionStore: both are provided here. Still needs AgentConfig.
 */
export const layerWith = <ES, RS, ET, RT, EC, RC>(cluster: {
  readonly sessionStore: Layer.Layer<SessionStore, ES, RS>
  readonly tunnelPool: Layer.Layer<TunnelPool, ET, RT>
  readonly credentialStore: Layer.Layer<CredentialStore, EC, RC>
}) => compose(cluster).pipe(Layer.provide(runtime))

/** The credential lives in a Secret when running in a cluster (KUBECONFIG unset), else in a file. */
const credentialStore = Layer.unwrap(
  Effect.map(Effect.service(AgentConfig), (config) => config.kubeconfig === undefined ? CredentialStore.layerKubernetes : CredentialStore.layerFile)
)

/**
 * The whole agent on Kubernetes, given how to reach the API server (Kubernetes.layer reads KUBECONFIG
 * or the in-cluster config; an embedder may pass Kubernetes.layerWith(...) or its own). Needs AgentConfig.
 */
export const layerKubernetes = <E, R>(kubernetes: Layer.Layer<Kubernetes, E, R>) =>
  compose({ sessionStore: SessionStore.layerNoDeps, tunnelPool: TunnelPool.layer, credentialStore }).pipe(
    Layer.provide(kubernetes),
    Layer.provide(runtime)
  )

/**
 * A complete agent: configuration from the current ConfigProvider (the process environment unless the
 * embedder installs another), the Kubernetes API from KUBECONFIG or in-cluster config. Building it
 * starts everything; closing its scope runs the graceful shutdown.
 */
export const layer = layerKubernetes(Kubernetes.layer).pipe(Layer.provideMerge(AgentConfig.layerFromEnv))

export const Agent = {
  Router,
  layer,
  layerKubernetes,
  layerWith
} as const
