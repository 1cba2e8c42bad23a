// Agent: one whole agent as a layer. Wires the link side (Connection, Heartbeat, CommandQueue, Health,
// logging) to the cluster side (SessionStore, TunnelPool, CredentialStore), routes what the control plane
// sends, and owns graceful shutdown: stop taking commands, let in-flight ones finish within
// GRACEFUL_SHUTDOWN_TIMEOUT (then fail them), close tunnels, say goodbye. Sessions keep running.
import type { Incoming } from "./Connection.ts"
import { Effect, Layer, Stream } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { CommandQueue } from "./CommandQueue.ts"
import { Connection } from "./Connection.ts"
import { CredentialStore } from "./CredentialStore.ts"
import { Health } from "./Health.ts"
import { Kubernetes } from "./Kubernetes.ts"
import { Heartbeat } from "./Heartbeat.ts"
import * as Logging from "./Logging.ts"
import * as Tracing from "./Tracing.ts"
import { SessionStore } from "./SessionStore.ts"
import { TunnelPool } from "./TunnelPool.ts"

/**
 * Dispatches incoming frames (commands to the queue, tunnel bytes to the pool, ping to pong), forwards
 * session status changes while connected, closes tunnels when the link drops, and runs the shutdown
 * sequence when its scope closes (it is built last, so its finalizer runs first).
 */
export const Router: Layer.Layer<never, never, AgentConfig | Connection | CommandQueue | TunnelPool | SessionStore | Health> = Layer.effectDiscard(
  Effect.gen(function*() {
    const config = yield* AgentConfig
    const connection = yield* Connection
    const queue = yield* CommandQueue
    const tunnels = yield* TunnelPool
    const store = yield* SessionStore
    const health = yield* Health
    let draining = false

    const dispatch = Effect.fnUntraced(function*(frame: Incoming) {
      if ("kind" in frame) return yield* tunnels.receive(frame)
      switch (frame.type) {
        case "command":
          return yield* queue.submit(frame)
        case "ping":
          return yield* connection.send("pong", { nonce: frame.payload.nonce }).pipe(Effect.ignore)
        case "drain":
          if (draining !== frame.payload.draining) {
            draining = frame.payload.draining
            yield* Effect.logInfo(draining ? "drained by an operator: no new sessions will be placed here" : "no longer draining")
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

    yield* connection.incoming.pipe(
      Stream.runForEach((frame) => dispatch(frame).pipe(Effect.catchCause((cause) => Effect.logError("could not handle a frame", cause)))),
      Effect.forkScoped
    )

    // A lost link takes its tunnels with it: the viewers reconnect through the control plane.
    let wasUp = false
    yield* connection.status.pipe(
      Stream.runForEach((up) => {
        const lost = wasUp && !up
        wasUp = up
        return lost ? tunnels.closeAll("error") : Effect.void
      }),
      Effect.forkScoped
    )

    // Every observed session change goes up while connected; the next hello's inventory covers the gaps.
    yield* store.changes.pipe(
      Stream.runForEach((status) =>
        Effect.gen(function*() {
          if (yield* connection.isConnected) {
            yield* connection.send("session_status", status).pipe(Effect.ignore)
          }
        }).pipe(Effect.annotateLogs({ session_id: status.session_id }))
      ),
      Effect.forkScoped
    )

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        yield* Effect.logInfo("shutting down: no new commands; waiting for those in flight")
        yield* health.markStopping
        yield* queue.shutdown(config.gracefulShutdownTimeout)
        yield* tunnels.closeAll("shutdown")
        yield* connection.close("agent shutting down")
        yield* Effect.logInfo("shutdown complete; sessions keep running in the cluster")
      })
    )
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

/**
 * The whole agent around any cluster side (tests pass in-memory ones). The TunnelPool layer may need
 * Connection and SessionStore: both are provided here. Still needs AgentConfig.
 */
export const layerWith = <ES, RS, ET, RT, EC, RC>(cluster: {
  readonly sessionStore: Layer.Layer<SessionStore, ES, RS>
  readonly tunnelPool: Layer.Layer<TunnelPool, ET, RT>
  readonly credentialStore: Layer.Layer<CredentialStore, EC, RC>
}) => compose(cluster).pipe(Layer.provide(Logging.layer), Layer.provide(Tracing.layer))

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
    Layer.provide(Logging.layer),
    Layer.provide(Tracing.layer)
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
