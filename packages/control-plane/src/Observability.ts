// Observability: the control plane's metrics (streamspace_control_plane_*), its logger (LOG_FORMAT json|text,
// LOG_LEVEL), the Prometheus /metrics route, and OTLP export of traces, metrics and logs when
// OTEL_EXPORTER_OTLP_ENDPOINT is set. Gauges that describe current state (agents by status, sessions by state)
// are recomputed on each scrape from their owners instead of being kept in step by hand.
import { otlpLayer as otlpLayer_, throttledLineLogger } from "@streamspace/protocol"
import { Effect, Layer, Logger, Metric, References } from "effect"
import { HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import pkg from "../package.json" with { type: "json" }
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"

const P = "streamspace_control_plane_"

export const agentsGauge = Metric.gauge(`${P}agents`, { description: "Agents by status (online, offline, warning, error, draining) and enrollment" })
export const sessionsGauge = Metric.gauge(`${P}sessions`, { description: "Session records by state" })
export const commandsTotal = Metric.counter(`${P}commands_total`, { description: "Commands awaited by the control plane, by action and outcome" })
export const commandDuration = Metric.histogram(`${P}command_duration_seconds`, {
  description: "Time from dispatch to outcome, by action",
  boundaries: Metric.exponentialBoundaries({ start: 0.005, factor: 2.5, count: 12 })
})
export const vncViewers = Metric.gauge(`${P}vnc_viewers`, { description: "Open VNC viewer connections" })
export const vncBufferedBytes = Metric.gauge(`${P}vnc_buffered_bytes`, {
  description: "Bytes held for VNC viewers (relayed and not yet written to the viewer, or sent by it and waiting for credit), all viewers"
})
export const vncBufferedBytesMax = Metric.gauge(`${P}vnc_buffered_bytes_max`, { description: "Bytes held for the viewer that holds the most" })
export const vncBytesTotal = Metric.counter(`${P}vnc_bytes_total`, { description: "VNC bytes relayed, by direction (to_agent, to_viewer)" })
export const unknownSessionsTotal = Metric.counter(`${P}unknown_sessions_total`, {
  description: "Sessions an agent reported in its hello inventory that the control plane has no record of"
})
export const droppedTunnelFrames = Metric.counter(`${P}tunnel_frames_dropped_total`, {
  description: "Binary frames from agents for tunnels nobody is registered for"
})
export const tunnelsReconciledTotal = Metric.counter(`${P}tunnels_reconciled_total`, {
  description: "Tunnels the control plane and an agent disagreed on, by outcome: closed_on_agent (the agent had one nobody views), viewer_closed (the agent no longer had a viewer's tunnel)"
})
export const sessionTransitionsTotal = Metric.counter(`${P}session_transitions_total`, { description: "Session state transitions, by target state" })

// Per team (issue 18): the label values are the admin-created teams and `none` (sessions and homes of no team),
// so their number stays bounded; there are no per-user series (users are unbounded: GET /api/v1/usage?by=user).
export const teamSessions = Metric.gauge(`${P}team_sessions`, { description: "Sessions holding a pod, by the team they are charged to" })
export const teamCpu = Metric.gauge(`${P}team_cpu_cores`, { description: "CPU requested by the sessions charged to each team, in cores" })
export const teamMemory = Metric.gauge(`${P}team_memory_bytes`, { description: "Memory requested by the sessions charged to each team, in bytes" })
export const teamStorage = Metric.gauge(`${P}team_home_storage_bytes`, { description: "Requested size of the homes charged to each team, in bytes" })
export const teamQuota = Metric.gauge(`${P}team_quota`, {
  description: "Each team's quota by resource (sessions; cpu in cores; memory and storage in bytes); -1: no limit"
})

/**
 * Puts every series whose labels are known in advance into the registry at zero, so the first scrape shows
 * them and alerts written on them work before the first event. (Gauges of current state are set per scrape.)
 */
export const registerMetrics = Effect.gen(function*() {
  const actions = ["create_session", "delete_session", "vnc_connect"]
  const series: Array<Metric.Metric<any, any>> = [
    vncViewers,
    droppedTunnelFrames,
    ...["closed_on_agent", "viewer_closed"].map((outcome) => Metric.withAttributes(tunnelsReconciledTotal, { outcome })),
    ...actions.map((action) => Metric.withAttributes(commandsTotal, { action, outcome: "completed" })),
    ...actions.map((action) => Metric.withAttributes(commandDuration, { action })),
    ...["to_agent", "to_viewer"].map((direction) => Metric.withAttributes(vncBytesTotal, { direction })),
    ...["creating", "running", "terminating", "terminated", "failed"].map((state) => Metric.withAttributes(sessionTransitionsTotal, { state }))
  ]
  yield* Effect.forEach(series, (m) => Metric.value(m), { discard: true })
})

/** A metric registry of the control plane's own, so another program in the process (the quick start's agent) never shows its series. */
export const registryLayer = Layer.effect(Metric.MetricRegistry, Effect.sync((): Metric.MetricRegistry => new Map()))

/**
 * Records the outcome and latency of one awaited command: `completed`, the agent's error code, or `error` when
 * the control plane could not learn the outcome.
 */
export const recordCommand = (action: string, outcome: string, startedMs: number, endedMs: number) =>
  Effect.all([
    Metric.update(Metric.withAttributes(commandsTotal, { action, outcome }), 1),
    Metric.update(Metric.withAttributes(commandDuration, { action }), Math.max(0, endedMs - startedMs) / 1000)
  ], { discard: true })

/** Sets a labelled gauge family from a full snapshot (labels absent from the snapshot drop to 0). */
export const setGaugeFamily = (gauge: Metric.Gauge<number>, label: string, all: ReadonlyArray<string>, counts: ReadonlyMap<string, number>) =>
  Effect.forEach(all, (value) => Metric.update(Metric.withAttributes(gauge, { [label]: value }), counts.get(value) ?? 0), { discard: true })

/** Logger and minimum level from LOG_FORMAT, LOG_LEVEL and LOG_REPEAT_LIMIT, in the format the agent writes too (@streamspace/protocol Logs). */
export const loggerLayer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  return Layer.mergeAll(
    Logger.layer([throttledLineLogger(config.logFormat, (line) => globalThis.console.log(line), {}, { perMinute: config.logRepeatLimit })]),
    Layer.succeed(References.MinimumLogLevel, config.logLevel === "None" ? "None" : config.logLevel)
  )
}))

/**
 * OTLP/HTTP export of traces, metrics and logs per the standard OTEL_* variables (endpoints, headers, protocol,
 * resource attributes, sampler, OTEL_SDK_DISABLED; @streamspace/protocol Telemetry.ts); nothing without an endpoint.
 */
export const otlpLayer = Layer.unwrap(Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  return otlpLayer_(config.telemetry, { serviceName: config.telemetry.serviceName, serviceVersion: pkg.version }, {
    signals: ["traces", "metrics", "logs"],
    loggerMergeWithExisting: true
  })
}))

/** Everything above that a deployment wants: logs, and OTLP when configured. */
export const layer = Layer.mergeAll(loggerLayer, otlpLayer)

/** The GET /metrics handler (Prometheus text format); `refresh` updates the snapshot gauges first. */
export const metricsHandler = <E>(refresh: Effect.Effect<void, E>) =>
  Effect.gen(function*() {
    yield* refresh.pipe(Effect.ignore)
    const text = yield* PrometheusMetrics.format()
    return HttpServerResponse.text(text, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
  })
