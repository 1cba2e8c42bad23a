// Tracing: when OTEL_EXPORTER_OTLP_ENDPOINT is set, the agent exports its spans over OTLP/HTTP. Each
// command's span is a child of the control plane's `traceparent`, so one trace runs from the API
// request through the agent to the Kubernetes calls.
import { Effect, Layer } from "effect"
import { FetchHttpClient } from "effect/http"
import { Otlp } from "effect/observability"
import { AgentConfig } from "./AgentConfig.ts"

export const layer: Layer.Layer<never, never, AgentConfig> = Layer.unwrap(
  Effect.map(Effect.service(AgentConfig), (config) =>
    config.otelEndpoint === undefined
      ? Layer.empty
      : Otlp.layerJson({
        baseUrl: config.otelEndpoint.replace(/\/+$/, ""),
        resource: { serviceName: config.otelServiceName, attributes: { "streamspace.agent_id": config.agentId } }
      }).pipe(Layer.provide(FetchHttpClient.layer)))
)
