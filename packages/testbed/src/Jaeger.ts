// Jaeger (v1.76.0, built by goTools.ts): a real OpenTelemetry collector and trace store on loopback, for the
// tracing tests. OTLP over HTTP and gRPC on free ports, traces kept in memory, queryable over its HTTP API.
// With `basicAuth`, the OTLP receivers refuse requests without that user's Authorization header, which is
// how a test proves that OTEL_EXPORTER_OTLP_HEADERS reaches the collector.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { toolPath } from "./goTools.ts"
import { freePort, startProcess, waitReady } from "./internal/process.ts"

export interface JaegerOptions {
  /** Require HTTP Basic authentication on the OTLP receivers. */
  readonly basicAuth?: { readonly username: string; readonly password: string }
}

export interface JaegerSpan {
  readonly traceID: string
  readonly spanID: string
  readonly operationName: string
  readonly references: ReadonlyArray<{ readonly refType: string; readonly traceID: string; readonly spanID: string }>
  readonly processID: string
  readonly tags: ReadonlyArray<{ readonly key: string; readonly value: unknown }>
}

export interface JaegerTrace {
  readonly traceID: string
  readonly spans: ReadonlyArray<JaegerSpan>
  readonly processes: Readonly<Record<string, { readonly serviceName: string; readonly tags: ReadonlyArray<{ readonly key: string; readonly value: unknown }> }>>
}

export interface RunningJaeger {
  /** Base URL of the OTLP/HTTP receiver (what OTEL_EXPORTER_OTLP_ENDPOINT takes). */
  readonly otlpHttp: string
  /** host:port of the OTLP/gRPC receiver. */
  readonly otlpGrpc: string
  /** Base URL of the query API and UI. */
  readonly queryUrl: string
  /** Traces of a service (empty when none arrived yet). */
  readonly traces: (service: string) => Promise<ReadonlyArray<JaegerTrace>>
  /** One trace by id, or undefined. */
  readonly trace: (traceId: string) => Promise<JaegerTrace | undefined>
  readonly stop: () => Promise<void>
}

const config = (ports: { http: number; grpc: number; query: number; queryGrpc: number; health: number }, auth: JaegerOptions["basicAuth"]) => {
  const authLine = auth === undefined ? "" : `\n        auth:\n          authenticator: basicauth/otlp`
  return `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2${auth === undefined ? "" : ", basicauth/otlp"}]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:${ports.query}
    grpc:
      endpoint: 127.0.0.1:${ports.queryGrpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:${ports.health}
${auth === undefined ? "" : `  basicauth/otlp:
    htpasswd:
      inline: |
        ${auth.username}:${auth.password}
`}receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${ports.grpc}${authLine}
      http:
        endpoint: 127.0.0.1:${ports.http}${authLine}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`
}

export const startJaeger = async (options: JaegerOptions = {}): Promise<RunningJaeger> => {
  const dir = mkdtempSync(path.join(tmpdir(), "streamspace-jaeger-"))
  const [http, grpc, query, queryGrpc, health] = await Promise.all([freePort(), freePort(), freePort(), freePort(), freePort()])
  const file = path.join(dir, "config.yaml")
  writeFileSync(file, config({ http, grpc, query, queryGrpc, health }, options.basicAuth))
  const proc = startProcess("jaeger", toolPath("jaeger"), [`--config=${file}`], dir)
  const queryUrl = `http://127.0.0.1:${query}`
  try {
    await waitReady(proc, "health", async () => (await fetch(`http://127.0.0.1:${health}/status`)).ok)
    await waitReady(proc, "query API", async () => (await fetch(`${queryUrl}/api/services`)).ok)
  } catch (e) {
    await proc.stop()
    rmSync(dir, { recursive: true, force: true })
    throw e
  }
  const get = async <A>(p: string): Promise<A | undefined> => {
    const res = await fetch(`${queryUrl}${p}`)
    if (res.status === 404) return undefined
    if (!res.ok) throw new Error(`jaeger ${p}: HTTP ${res.status} ${await res.text()}`)
    return ((await res.json()) as { data: A }).data
  }
  return {
    otlpHttp: `http://127.0.0.1:${http}`,
    otlpGrpc: `127.0.0.1:${grpc}`,
    queryUrl,
    traces: async (service) => (await get<Array<JaegerTrace>>(`/api/traces?service=${encodeURIComponent(service)}&limit=100`)) ?? [],
    trace: async (traceId) => (await get<Array<JaegerTrace>>(`/api/traces/${traceId}`))?.[0],
    stop: async () => {
      await proc.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
