// Heartbeat: while connected, tells the control plane every HEARTBEAT_INTERVAL (at most the interval the control
// plane announced in welcome) how this agent is doing:
// status (online / warning / error), capacity, active sessions and tunnels, with the ids of the open tunnels
// (the control plane closes those it does not know and ends viewers whose tunnel is gone). Remembers the last success
// for /ready and the heartbeat metric.
import type { AgentStatus } from "@streamspace/protocol"
import { Clock, Context, Duration, Effect, FiberHandle, Layer, Metric, Option, Stream } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { Connection } from "./Connection.ts"
import type { ConnectionError } from "./Connection.ts"
import * as Metrics from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"
import { TunnelPool } from "./TunnelPool.ts"

export interface HeartbeatShape {
  /** Sends one heartbeat now. */
  readonly beat: Effect.Effect<void, ConnectionError>
  /** When the last heartbeat was sent (Unix ms), if one was. */
  readonly lastSuccess: Effect.Effect<Option.Option<number>>
}

/** Capacity in use at or above this share turns the status to `warning`. */
export const NEARLY_FULL = 0.9

export class Heartbeat extends Context.Service<Heartbeat, HeartbeatShape>()("agent/Heartbeat") {
  static readonly layer: Layer.Layer<Heartbeat, never, AgentConfig | Connection | SessionStore | TunnelPool> = Layer.effect(
    Heartbeat,
    Effect.gen(function*() {
      const config = yield* AgentConfig
      const connection = yield* Connection
      const store = yield* SessionStore
      const tunnels = yield* TunnelPool
      let last: Option.Option<number> = Option.none()

      const beat = Effect.fn("Heartbeat.beat")(function*() {
        const health = yield* store.health
        const capacity = yield* store.capacity
        const sessions = yield* store.activeCount
        const tunnelIds = yield* tunnels.ids
        const activeTunnels = tunnelIds.length
        let status: AgentStatus = "online"
        let message: string | undefined
        if (health.status === "failing") {
          status = "error"
          message = health.message ?? "the Kubernetes API is failing"
        } else if (health.status === "degraded") {
          status = "warning"
          message = health.message ?? "the Kubernetes API is degraded"
        } else if (sessions >= config.maxSessions * NEARLY_FULL) {
          status = "warning"
          message = `${sessions} of ${config.maxSessions} sessions in use (MAX_SESSIONS)`
        }
        yield* connection.send("heartbeat", {
          status,
          capacity,
          active_sessions: sessions,
          active_tunnels: activeTunnels,
          ...(message !== undefined ? { message } : {}),
          tunnel_ids: tunnelIds
        })
        const now = yield* Clock.currentTimeMillis
        last = Option.some(now)
        yield* Metric.update(Metrics.heartbeatLastSuccess, Math.floor(now / 1000))
        yield* Metric.update(Metrics.sessionsActive, sessions)
        yield* Metric.update(Metrics.vncTunnelsActive, activeTunnels)
      })

      // One heartbeat right after each handshake, then every HEARTBEAT_INTERVAL (or the shorter interval the
      // control plane announced in welcome, so it does not declare this agent offline), only while connected.
      const interval = Effect.map(connection.announcedHeartbeatInterval, (announced) =>
        Option.match(announced, { onNone: () => config.heartbeatInterval, onSome: (d) => Duration.min(config.heartbeatInterval, d) }))
      const loop = Effect.forever(Effect.gen(function*() {
        yield* beat().pipe(Effect.catch((e) => Effect.logDebug(`heartbeat not sent: ${e.message}`)))
        yield* Effect.sleep(yield* interval)
      }))
      const handle = yield* FiberHandle.make()
      yield* connection.status.pipe(
        Stream.runForEach((up) => (up ? FiberHandle.run(handle, loop) : FiberHandle.clear(handle))),
        Effect.forkScoped
      )

      return Heartbeat.of({
        beat: beat(),
        lastSuccess: Effect.sync(() => last)
      })
    })
  )
}
