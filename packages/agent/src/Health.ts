// Health: the liveness and readiness endpoints (`/health`, `/ready` on HEALTH_PORT, JSON shapes of the agent
// guide) and Prometheus `/metrics` on METRICS_PORT when METRICS_ENABLED, every series present from the
// start. Exposes the bound ports, so a test can ask for port 0.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { formatDuration } from "@streamspace/protocol"
import { Clock, Context, Duration, Effect, Layer, Metric, Option, Schema } from "effect"
import { HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import { createServer } from "node:http"
import { AgentConfig } from "./AgentConfig.ts"
import { Connection } from "./Connection.ts"
import { Heartbeat } from "./Heartbeat.ts"
import * as Metrics from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"
import { TunnelPool } from "./TunnelPool.ts"

export class HealthError extends Schema.TaggedError<HealthError>()("HealthError", {
  reason: Schema.Literals(["Listen"]),
  message: Schema.String
}) {}

export interface HealthShape {
  /** The port /health and /ready listen on. */
  readonly healthPort: number
  /** The port /metrics listens on, when METRICS_ENABLED. */
  readonly metricsPort: Option.Option<number>
  /** Makes /ready answer 503 from now on (shutdown has begun). */
  readonly markStopping: Effect.Effect<void>
}

const portOf = (address: unknown): number => (address as { port: number }).port

export class Health extends Context.Service<Health, HealthShape>()("agent/Health") {
  static readonly layer: Layer.Layer<Health, HealthError, AgentConfig | Connection | Heartbeat | SessionStore | TunnelPool> = Layer.effect(
    Health,
    Effect.gen(function*() {
      const config = yield* AgentConfig
      const connection = yield* Connection
      const heartbeat = yield* Heartbeat
      const store = yield* SessionStore
      const tunnels = yield* TunnelPool
      yield* Metrics.register
      const startedAt = yield* Clock.currentTimeMillis
      let stopping = false

      const uptime = Clock.currentTimeMillis.pipe(Effect.map((now) => Duration.millis(Math.max(0, now - startedAt))))

      const healthApp = Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const path = request.url.split("?")[0]
        if (request.method !== "GET") return HttpServerResponse.empty({ status: 405 })
        if (path === "/health" || path === "/healthz") {
          const up = yield* uptime
          return HttpServerResponse.jsonUnsafe({ status: "healthy", agent_id: config.agentId, uptime: formatDuration(Duration.seconds(Math.floor(Duration.toSeconds(up)))) })
        }
        if (path === "/ready" || path === "/readyz") {
          const connected = yield* connection.isConnected
          const last = yield* heartbeat.lastSuccess
          const ready = connected && !stopping
          return HttpServerResponse.jsonUnsafe(
            {
              status: ready ? "ready" : "not_ready",
              control_plane_connected: connected,
              last_heartbeat: Option.match(last, { onNone: () => null, onSome: (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z") })
            },
            { status: ready ? 200 : 503 }
          )
        }
        return HttpServerResponse.empty({ status: 404 })
      })

      const metricsApp = Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        if (request.method !== "GET" || request.url.split("?")[0] !== "/metrics") return HttpServerResponse.empty({ status: 404 })
        // Gauges that are cheap to read are refreshed at scrape time rather than on every change.
        yield* Metric.update(Metrics.uptimeSeconds, Math.floor(Duration.toSeconds(yield* uptime)))
        yield* Metric.update(Metrics.sessionsActive, yield* store.activeCount)
        yield* Metric.update(Metrics.vncTunnelsActive, yield* tunnels.active)
        const buffered = yield* tunnels.buffered
        yield* Metric.update(Metrics.tunnelBufferedBytes, buffered.total)
        yield* Metric.update(Metrics.tunnelBufferedBytesMax, buffered.max)
        yield* Metric.update(Metrics.connected, (yield* connection.isConnected) ? 1 : 0)
        const body = yield* PrometheusMetrics.format()
        return HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
      })

      const listen = (port: number, what: string) =>
        NodeHttpServer.make(() => createServer(), { port, ...(config.healthHost === undefined ? {} : { host: config.healthHost }), gracefulShutdownTimeout: Duration.seconds(1) }).pipe(
          Effect.mapError((e) => new HealthError({ reason: "Listen", message: `${what} could not listen on port ${port}: ${e.message}` }))
        )

      const shared = config.metricsEnabled && config.metricsPort === config.healthPort && config.healthPort !== 0
      const healthServer = yield* listen(config.healthPort, "HEALTH_PORT")
      // One port for both when METRICS_PORT equals HEALTH_PORT.
      yield* healthServer.serve(shared ? Effect.flatMap(Effect.service(HttpServerRequest.HttpServerRequest), (r) => r.url.startsWith("/metrics") ? metricsApp : healthApp) : healthApp)
      let metricsPort: Option.Option<number> = shared ? Option.some(portOf(healthServer.address)) : Option.none()
      if (config.metricsEnabled && !shared) {
        const metricsServer = yield* listen(config.metricsPort, "METRICS_PORT")
        yield* metricsServer.serve(metricsApp)
        metricsPort = Option.some(portOf(metricsServer.address))
      }
      const healthPort = portOf(healthServer.address)
      yield* Effect.logInfo(`health on :${healthPort}${Option.isSome(metricsPort) ? `, metrics on :${metricsPort.value}` : ""}`)

      return Health.of({
        healthPort,
        metricsPort,
        markStopping: Effect.sync(() => {
          stopping = true
        })
      })
    })
  )
}
