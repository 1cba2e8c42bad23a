// Tracing: the agent exports its spans over OTLP/HTTP per the standard OTEL_* variables (endpoint, headers,
// protocol, resource attributes, sampler, OTEL_SDK_DISABLED; see @streamspace/protocol Telemetry.ts). Each
// command's span is a child of the control plane's `traceparent`, so one trace runs from the API request
// through the agent to the Kubernetes calls.
import { otlpLayer } from "@streamspace/protocol"
import { Effect, Layer } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { agentVersion } from "./internal/version.ts"

export const layer: Layer.Layer<never, never, AgentConfig> = Layer.unwrap(
  Effect.map(Effect.service(AgentConfig), (config) =>
    otlpLayer(config.telemetry, {
      serviceName: config.telemetry.serviceName,
      serviceVersion: agentVersion,
      attributes: { "streamspace.agent_id": config.agentId, ...(config.region === "" ? {} : { "streamspace.region": config.region }) }
    }, { signals: ["traces"] }))
)
