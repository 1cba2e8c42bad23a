// Every Prometheus metric the agent exports, defined once (names from the agent guide), and `register`,
// which makes every series exist from the start: gauges at 0 (the heartbeat timestamp stays 0 until
// the first beat), counters and histograms at zero for each label set the agent knows in advance, so
// alerts and rates written on them work before the first event.
import { CommandAction } from "@streamspace/protocol"
import { Effect, Metric } from "effect"

export const sessionsActive = Metric.gauge("streamspace_agent_sessions_active", { description: "Active sessions managed by this agent" })
export const uptimeSeconds = Metric.gauge("streamspace_agent_uptime_seconds", { description: "Agent uptime in seconds" })
export const heartbeatLastSuccess = Metric.gauge("streamspace_agent_heartbeat_last_success_timestamp", {
  description: "Unix time (seconds) of the last heartbeat sent to the control plane; 0 before the first"
})
export const vncTunnelsActive = Metric.gauge("streamspace_agent_vnc_tunnels_active", { description: "Open VNC tunnels" })
export const tunnelBufferedBytes = Metric.gauge("streamspace_agent_vnc_tunnel_buffered_bytes", {
  description: "Bytes held for open tunnels (read from the session and not yet sent, or received and not yet written), all tunnels"
})
export const tunnelBufferedBytesMax = Metric.gauge("streamspace_agent_vnc_tunnel_buffered_bytes_max", {
  description: "Bytes held for the tunnel that holds the most"
})
export const commandDuration = Metric.histogram("streamspace_agent_command_duration_seconds", {
  description: "Command execution time by action and outcome",
  boundaries: Metric.exponentialBoundaries({ start: 0.005, factor: 2, count: 14 })
})
export const connected = Metric.gauge("streamspace_agent_control_plane_connected", { description: "1 while connected to the control plane" })
export const reconnects = Metric.counter("streamspace_agent_reconnects_total", { description: "Connection attempts after the first" })
export const tunnelBytes = Metric.counter("streamspace_agent_vnc_tunnel_bytes_total", { description: "VNC bytes relayed, by direction (to_viewer, to_session)" })
export const kubernetesApiErrors = Metric.counter("streamspace_agent_kubernetes_api_errors_total", { description: "Failed Kubernetes API calls, by verb, resource and code" })
export const commandsTotal = Metric.counter("streamspace_agent_commands_total", { description: "Commands received, by action and outcome" })

const OUTCOMES = ["completed", "failed"] as const
const DIRECTIONS = ["to_viewer", "to_session"] as const

/**
 * Registers every series in the current registry at its zero value. The API error counter is left out:
 * its labels (verb, resource, status code) are only known when an error happens.
 */
export const register: Effect.Effect<void> = Effect.gen(function*() {
  for (const gauge of [sessionsActive, uptimeSeconds, heartbeatLastSuccess, vncTunnelsActive, tunnelBufferedBytes, tunnelBufferedBytesMax, connected]) {
    yield* Metric.value(gauge)
  }
  yield* Metric.value(reconnects)
  for (const direction of DIRECTIONS) yield* Metric.value(Metric.withAttributes(tunnelBytes, { direction }))
  for (const action of CommandAction.literals) {
    for (const outcome of OUTCOMES) {
      yield* Metric.value(Metric.withAttributes(commandsTotal, { action, outcome }))
      yield* Metric.value(Metric.withAttributes(commandDuration, { action, outcome }))
    }
  }
})
