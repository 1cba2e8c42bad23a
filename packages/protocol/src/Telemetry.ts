// OpenTelemetry settings shared by both deployables: the standard OTEL_* variables, read and validated the same
// way in the agent and the control plane, plus the trace sampler they name. Parsing and a Tracer wrapper only:
// each process builds its exporters from these settings (agent Tracing.ts, control-plane Observability.ts).
//
// Variables (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
//   OTEL_SDK_DISABLED                       true: export nothing
//   OTEL_EXPORTER_OTLP_ENDPOINT             base URL; signals go to <base>/v1/traces, /v1/metrics, /v1/logs
//   OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT   full URL of one signal (wins over the base)
//   OTEL_EXPORTER_OTLP_HEADERS              k=v,k2=v2 (values percent-encoded), e.g. an API key
//   OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_HEADERS    headers of one signal (merged over the common ones)
//   OTEL_EXPORTER_OTLP_PROTOCOL             http/protobuf (default) or http/json; grpc is refused (use :4318)
//   OTEL_EXPORTER_OTLP_{TRACES,...}_PROTOCOL            protocol of one signal
//   OTEL_EXPORTER_OTLP_COMPRESSION          gzip or none (default)
//   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES         resource (k=v,k2=v2; OTEL_SERVICE_NAME wins for service.name)
//   OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG        parentbased_always_on (default), always_on, always_off,
//                                                       traceidratio, parentbased_always_off, parentbased_traceidratio
import { Config, type Duration, Effect, Layer, Option, Tracer } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpExporter, OtlpLogger, OtlpMetrics, OtlpSerialization, OtlpTracer } from "effect/observability"
import { SettingError } from "./Settings.ts"

export type OtlpSignal = "traces" | "metrics" | "logs"
export type OtlpProtocol = "http/protobuf" | "http/json"

export type TraceSampler =
  | { readonly _tag: "AlwaysOn" }
  | { readonly _tag: "AlwaysOff" }
  | { readonly _tag: "TraceIdRatio"; readonly ratio: number }
  | { readonly _tag: "ParentBased"; readonly root: TraceSampler }

export interface OtlpSignalSettings {
  /** Full URL the signal is POSTed to. */
  readonly url: string
  readonly headers: Readonly<Record<string, string>>
  readonly protocol: OtlpProtocol
  readonly compression: "gzip" | "none"
}

export interface TelemetrySettings {
  /** OTEL_SDK_DISABLED: nothing is exported even when an endpoint is set. */
  readonly disabled: boolean
  /** Where each signal goes; a signal without an endpoint is not exported. */
  readonly signals: { readonly [S in OtlpSignal]: OtlpSignalSettings | undefined }
  readonly serviceName: string
  /** OTEL_RESOURCE_ATTRIBUTES (without service.name, which is `serviceName`). */
  readonly resourceAttributes: Readonly<Record<string, string>>
  readonly sampler: TraceSampler
}

const SIGNAL_ENV: Record<OtlpSignal, string> = { traces: "TRACES", metrics: "METRICS", logs: "LOGS" }

const raw = (name: string): Effect.Effect<string | undefined, SettingError> =>
  Config.option(Config.String(name)).pipe(
    Effect.map((o) => Option.getOrUndefined(o)?.trim() || undefined),
    Effect.mapError((e) => new SettingError({ variable: name, message: `${name} could not be read: ${e.message}` }))
  )

const invalid = (name: string, value: string, expected: string) =>
  new SettingError({ variable: name, message: `${name}=${JSON.stringify(value)} is invalid: expected ${expected}` })

/**
 * A W3C-baggage-style list, `key1=value1,key2=value2`, values percent-encoded: the format of
 * OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES. Entries without `=` or with an empty key are an error.
 */
export const parseKeyValueList = (name: string, value: string, options: { readonly secret?: boolean } = {}): Effect.Effect<Record<string, string>, SettingError> =>
  Effect.suspend(() => {
    const out: Record<string, string> = {}
    const shown = options.secret ? "<redacted>" : value
    for (const entry of value.split(",")) {
      if (entry.trim() === "") continue
      const eq = entry.indexOf("=")
      const key = eq < 0 ? "" : entry.slice(0, eq).trim()
      if (key === "") return Effect.fail(invalid(name, shown, "a comma-separated list of key=value pairs, such as api-key=abc123,team=ops"))
      try {
        out[decodeURIComponent(key)] = decodeURIComponent(entry.slice(eq + 1).trim())
      } catch {
        return Effect.fail(invalid(name, shown, "percent-encoded keys and values (a '%' must start an escape such as %20)"))
      }
    }
    return Effect.succeed(out)
  })

const readUrl = (name: string) =>
  Effect.flatMap(raw(name), (s) => {
    if (s === undefined) return Effect.succeed(undefined)
    const url = URL.canParse(s) ? new URL(s) : undefined
    return url !== undefined && (url.protocol === "http:" || url.protocol === "https:")
      ? Effect.succeed(url)
      : Effect.fail(invalid(name, s, "an http:// or https:// URL of an OTLP/HTTP receiver, such as http://otel-collector:4318"))
  })

const readProtocol = (name: string) =>
  Effect.flatMap(raw(name), (s): Effect.Effect<OtlpProtocol | undefined, SettingError> => {
    if (s === undefined) return Effect.succeed(undefined)
    if (s === "http/protobuf" || s === "http/json") return Effect.succeed(s)
    if (s === "grpc") {
      return Effect.fail(new SettingError({
        variable: name,
        message: `${name}=grpc is not supported: use http/protobuf (the collector's OTLP/HTTP receiver, usually port 4318) or http/json`
      }))
    }
    return Effect.fail(invalid(name, s, "http/protobuf or http/json"))
  })

const readCompression = (name: string) =>
  Effect.flatMap(raw(name), (s): Effect.Effect<"gzip" | "none" | undefined, SettingError> =>
    s === undefined ? Effect.succeed(undefined) : s === "gzip" || s === "none" ? Effect.succeed(s) : Effect.fail(invalid(name, s, "gzip or none")))

const readSampler: Effect.Effect<TraceSampler, SettingError> = Effect.gen(function*() {
  const name = (yield* raw("OTEL_TRACES_SAMPLER")) ?? "parentbased_always_on"
  const arg = yield* raw("OTEL_TRACES_SAMPLER_ARG")
  const ratio = () => {
    if (arg === undefined) return Effect.succeed(1)
    const n = Number(arg)
    return Number.isFinite(n) && n >= 0 && n <= 1 ? Effect.succeed(n) : Effect.fail(invalid("OTEL_TRACES_SAMPLER_ARG", arg, "a sampling probability from 0 to 1, such as 0.25"))
  }
  switch (name) {
    case "always_on":
      return { _tag: "AlwaysOn" }
    case "always_off":
      return { _tag: "AlwaysOff" }
    case "traceidratio":
      return { _tag: "TraceIdRatio", ratio: yield* ratio() }
    case "parentbased_always_on":
      return { _tag: "ParentBased", root: { _tag: "AlwaysOn" } }
    case "parentbased_always_off":
      return { _tag: "ParentBased", root: { _tag: "AlwaysOff" } }
    case "parentbased_traceidratio":
      return { _tag: "ParentBased", root: { _tag: "TraceIdRatio", ratio: yield* ratio() } }
    default:
      return yield* invalid(
        "OTEL_TRACES_SAMPLER",
        name,
        "always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
      )
  }
})

/** Reads every OTEL_* variable above; the first bad one fails with a SettingError naming it. */
export const readTelemetrySettings = (defaultServiceName: string): Effect.Effect<TelemetrySettings, SettingError> =>
  Effect.gen(function*() {
    const disabledRaw = (yield* raw("OTEL_SDK_DISABLED")) ?? "false"
    if (!/^(true|false)$/i.test(disabledRaw)) return yield* invalid("OTEL_SDK_DISABLED", disabledRaw, "true or false")
    const base = yield* readUrl("OTEL_EXPORTER_OTLP_ENDPOINT")
    const baseHeadersRaw = yield* raw("OTEL_EXPORTER_OTLP_HEADERS")
    const baseHeaders = baseHeadersRaw === undefined ? {} : yield* parseKeyValueList("OTEL_EXPORTER_OTLP_HEADERS", baseHeadersRaw, { secret: true })
    const baseProtocol = (yield* readProtocol("OTEL_EXPORTER_OTLP_PROTOCOL")) ?? "http/protobuf"
    const baseCompression = (yield* readCompression("OTEL_EXPORTER_OTLP_COMPRESSION")) ?? "none"
    const signal = (s: OtlpSignal) =>
      Effect.gen(function*() {
        const env = `OTEL_EXPORTER_OTLP_${SIGNAL_ENV[s]}_`
        const own = yield* readUrl(`${env}ENDPOINT`)
        const headersRaw = yield* raw(`${env}HEADERS`)
        const headers = headersRaw === undefined ? {} : yield* parseKeyValueList(`${env}HEADERS`, headersRaw, { secret: true })
        const protocol = (yield* readProtocol(`${env}PROTOCOL`)) ?? baseProtocol
        const compression = (yield* readCompression(`${env}COMPRESSION`)) ?? baseCompression
        const url = own?.href ?? (base === undefined ? undefined : `${base.href.replace(/\/+$/, "")}/v1/${s}`)
        return url === undefined ? undefined : { url, headers: { ...baseHeaders, ...headers }, protocol, compression }
      })
    const attrsRaw = yield* raw("OTEL_RESOURCE_ATTRIBUTES")
    const attributes = attrsRaw === undefined ? {} : yield* parseKeyValueList("OTEL_RESOURCE_ATTRIBUTES", attrsRaw)
    const serviceName = (yield* raw("OTEL_SERVICE_NAME")) ?? attributes["service.name"] ?? defaultServiceName
    const { ["service.name"]: _, ...resourceAttributes } = attributes
    return {
      disabled: /^true$/i.test(disabledRaw),
      signals: { traces: yield* signal("traces"), metrics: yield* signal("metrics"), logs: yield* signal("logs") },
      serviceName,
      resourceAttributes,
      sampler: yield* readSampler
    }
  })

/** Whether a trace id (32 hex digits) falls under the ratio: its low 56 bits against ratio × 2^56, as the spec suggests. */
export const traceIdUnderRatio = (traceId: string, ratio: number): boolean => {
  if (ratio >= 1) return true
  if (ratio <= 0) return false
  const low = Number.parseInt(traceId.slice(-14), 16)
  return Number.isFinite(low) && low < ratio * 2 ** 56
}

const decide = (sampler: TraceSampler, parent: Option.Option<Tracer.AnySpan>): boolean => {
  switch (sampler._tag) {
    case "AlwaysOn":
      return true
    case "AlwaysOff":
      return false
    case "TraceIdRatio":
      // A root span's trace id is not made yet: a uniform draw is the same probability as its (random) id.
      return Option.isSome(parent) ? traceIdUnderRatio(parent.value.traceId, sampler.ratio) : Math.random() < sampler.ratio
    case "ParentBased":
      return Option.isSome(parent) ? parent.value.sampled : decide(sampler.root, parent)
  }
}

/**
 * A tracer that applies `sampler` before `tracer` makes the span: an unsampled span is still created (its
 * context propagates, so children and the agent honour the decision) but never exported.
 */
export const sampledTracer = (sampler: TraceSampler, tracer: Tracer.Tracer): Tracer.Tracer => {
  if (sampler._tag === "ParentBased" && sampler.root._tag === "AlwaysOn") return tracer // Effect's own behaviour
  return Tracer.make({
    span: (options) => {
      const parent = options.root ? Option.none() : options.parent
      const sampled = sampler._tag === "ParentBased" ? options.sampled && decide(sampler, parent) : decide(sampler, parent)
      return tracer.span({ ...options, sampled })
    },
    ...(tracer.context === undefined ? {} : { context: tracer.context })
  })
}

// ---- exporters ------------------------------------------------------------------------------------------------
// The layers below describe OTLP/HTTP exporters over `fetch`; they do nothing until a process installs them.

export interface TelemetryResource {
  readonly serviceName: string
  readonly serviceVersion?: string | undefined
  /** The process's own attributes (e.g. streamspace.agent_id); OTEL_RESOURCE_ATTRIBUTES win over them. */
  readonly attributes?: Record<string, string> | undefined
}

const resourceOf = (settings: TelemetrySettings, resource: TelemetryResource) => ({
  serviceName: settings.serviceName,
  ...(resource.serviceVersion === undefined ? {} : { serviceVersion: resource.serviceVersion }),
  attributes: { ...resource.attributes, ...settings.resourceAttributes }
})

const serialization = (protocol: OtlpProtocol) => protocol === "http/json" ? OtlpSerialization.layerJson : OtlpSerialization.layerProtobuf

/**
 * Exporters for the signals asked for, per `settings` (nothing when OTEL_SDK_DISABLED or no endpoint). Traces go
 * through the configured sampler. `exportInterval` shortens the batch delay (tests); default 5 s as the SDKs.
 */
export const otlpLayer = (
  settings: TelemetrySettings,
  resource: TelemetryResource,
  options: {
    readonly signals: ReadonlyArray<OtlpSignal>
    readonly exportInterval?: Duration.Input | undefined
    readonly loggerMergeWithExisting?: boolean | undefined
  }
): Layer.Layer<never> => {
  if (settings.disabled) return Layer.empty
  const res = resourceOf(settings, resource)
  const layers: Array<Layer.Layer<never>> = []
  for (const signal of options.signals) {
    const s = settings.signals[signal]
    if (s === undefined) continue
    const common = {
      url: s.url,
      resource: res,
      headers: s.headers,
      compression: s.compression,
      ...(options.exportInterval === undefined ? {} : { exportInterval: options.exportInterval })
    }
    const exporter = signal === "traces"
      ? Layer.effect(Tracer.Tracer, Effect.map(OtlpTracer.make(common), (t) => sampledTracer(settings.sampler, t))).pipe(
        Layer.provideMerge(OtlpExporter.layerFlusher)
      )
      : signal === "metrics"
      ? OtlpMetrics.layer(common)
      : OtlpLogger.layer({ ...common, mergeWithExisting: options.loggerMergeWithExisting ?? true })
    layers.push(exporter.pipe(Layer.provide(serialization(s.protocol)), Layer.provide(FetchHttpClient.layer)))
  }
  return layers.length === 0 ? Layer.empty : Layer.mergeAll(...(layers as [Layer.Layer<never>, ...Array<Layer.Layer<never>>]))
}
