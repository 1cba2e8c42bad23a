import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Option, Tracer } from "effect"
import { readTelemetrySettings, sampledTracer, traceIdUnderRatio } from "../src/Telemetry.ts"

const read = (env: Record<string, string>) =>
  readTelemetrySettings("svc").pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))

describe("readTelemetrySettings", () => {
  it.effect("nothing set: no exporters, http/protobuf, parent-based sampling, the default service name", () =>
    Effect.gen(function*() {
      const s = yield* read({})
      assert.deepStrictEqual(s.signals, { traces: undefined, metrics: undefined, logs: undefined })
      assert.strictEqual(s.serviceName, "svc")
      assert.deepStrictEqual(s.sampler, { _tag: "ParentBased", root: { _tag: "AlwaysOn" } })
      assert.isFalse(s.disabled)
    }))

  it.effect("the base endpoint gets /v1/<signal>; a signal's own endpoint, headers and protocol win", () =>
    Effect.gen(function*() {
      const s = yield* read({
        OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector.example.com:4318/otlp/",
        OTEL_EXPORTER_OTLP_HEADERS: "api-key=abc%20123, x-team = ops",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://traces.example.com/custom/path",
        OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-team=traces",
        OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_COMPRESSION: "gzip"
      })
      assert.deepStrictEqual(s.signals.traces, {
        url: "https://traces.example.com/custom/path",
        headers: { "api-key": "abc 123", "x-team": "traces" },
        protocol: "http/protobuf",
        compression: "gzip"
      })
      assert.strictEqual(s.signals.metrics?.url, "https://collector.example.com:4318/otlp/v1/metrics")
      assert.strictEqual(s.signals.metrics?.protocol, "http/json")
      assert.deepStrictEqual(s.signals.logs?.headers, { "api-key": "abc 123", "x-team": "ops" })
    }))

  it.effect("resource attributes; OTEL_SERVICE_NAME wins over service.name, which wins over the default", () =>
    Effect.gen(function*() {
      const a = yield* read({ OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attrs,deployment.environment=prod,k8s.cluster.name=eu%2D1" })
      assert.strictEqual(a.serviceName, "from-attrs")
      assert.deepStrictEqual(a.resourceAttributes, { "deployment.environment": "prod", "k8s.cluster.name": "eu-1" })
      const b = yield* read({ OTEL_RESOURCE_ATTRIBUTES: "service.name=from-attrs", OTEL_SERVICE_NAME: "explicit" })
      assert.strictEqual(b.serviceName, "explicit")
    }))

  it.effect("samplers and OTEL_SDK_DISABLED", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual((yield* read({ OTEL_TRACES_SAMPLER: "always_off" })).sampler, { _tag: "AlwaysOff" })
      assert.deepStrictEqual((yield* read({ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "0.25" })).sampler, { _tag: "TraceIdRatio", ratio: 0.25 })
      assert.deepStrictEqual((yield* read({ OTEL_TRACES_SAMPLER: "parentbased_traceidratio" })).sampler, {
        _tag: "ParentBased",
        root: { _tag: "TraceIdRatio", ratio: 1 }
      })
      assert.isTrue((yield* read({ OTEL_SDK_DISABLED: "TRUE", OTEL_EXPORTER_OTLP_ENDPOINT: "http://c:4318" })).disabled)
    }))

  it.effect("a bad value names the variable and what is expected (header values are never echoed)", () =>
    Effect.gen(function*() {
      const cases: Array<[Record<string, string>, string, RegExp]> = [
        [{ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }, "OTEL_EXPORTER_OTLP_PROTOCOL", /not supported: use http\/protobuf/],
        [{ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "thrift" }, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", /http\/protobuf or http\/json/],
        [{ OTEL_EXPORTER_OTLP_ENDPOINT: "collector:4318" }, "OTEL_EXPORTER_OTLP_ENDPOINT", /http:\/\/ or https:\/\/ URL/],
        [{ OTEL_EXPORTER_OTLP_HEADERS: "Bearer secret-token" }, "OTEL_EXPORTER_OTLP_HEADERS", /<redacted>.*key=value/],
        [{ OTEL_RESOURCE_ATTRIBUTES: "a=%zz" }, "OTEL_RESOURCE_ATTRIBUTES", /percent-encoded/],
        [{ OTEL_TRACES_SAMPLER: "sometimes" }, "OTEL_TRACES_SAMPLER", /always_on, always_off/],
        [{ OTEL_TRACES_SAMPLER: "traceidratio", OTEL_TRACES_SAMPLER_ARG: "2" }, "OTEL_TRACES_SAMPLER_ARG", /from 0 to 1/],
        [{ OTEL_SDK_DISABLED: "maybe" }, "OTEL_SDK_DISABLED", /true or false/]
      ]
      for (const [env, variable, message] of cases) {
        const e = yield* Effect.flip(read(env))
        assert.strictEqual(e.variable, variable)
        assert.match(e.message, message)
        assert.notInclude(e.message, "secret-token")
      }
    }))
})

describe("sampledTracer", () => {
  const spans: Array<{ name: string; sampled: boolean }> = []
  const inner = Tracer.make({
    span: (o) => {
      spans.push({ name: o.name, sampled: o.sampled })
      return new Tracer.NativeSpan(o)
    }
  })
  const options = (name: string, parent: Option.Option<Tracer.AnySpan>, sampled = true) => ({
    name,
    parent,
    annotations: Context.empty(),
    links: [],
    startTime: 0n,
    kind: "internal" as const,
    root: false,
    sampled
  })
  const remote = (sampled: boolean) => Option.some(Tracer.externalSpan({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", sampled }))

  it("always_off drops every span; parent-based follows the parent, and decides roots by the root sampler", () => {
    spans.length = 0
    sampledTracer({ _tag: "AlwaysOff" }, inner).span(options("off", Option.none()))
    const pb = sampledTracer({ _tag: "ParentBased", root: { _tag: "AlwaysOff" } }, inner)
    pb.span(options("root", Option.none()))
    pb.span(options("child-of-sampled", remote(true)))
    pb.span(options("child-of-unsampled", remote(false), false))
    assert.deepStrictEqual(spans, [
      { name: "off", sampled: false },
      { name: "root", sampled: false },
      { name: "child-of-sampled", sampled: true },
      { name: "child-of-unsampled", sampled: false }
    ])
  })

  it("traceidratio keeps about that share of traces, and decides a trace the same way everywhere", () => {
    assert.isTrue(traceIdUnderRatio("00000000000000000000000000000000", 0.01))
    assert.isFalse(traceIdUnderRatio("ffffffffffffffffffffffffffffffff", 0.99))
    let kept = 0
    for (let i = 0; i < 4000; i++) {
      const id = Array.from({ length: 32 }, () => Math.floor(Math.random() * 16).toString(16)).join("")
      if (traceIdUnderRatio(id, 0.25)) kept++
    }
    assert.isTrue(kept > 800 && kept < 1200, `kept ${kept} of 4000 at 0.25`)
  })
})
