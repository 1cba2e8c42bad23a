import { assert, describe, it } from "@effect/vitest"
import type { SessionId } from "@streamspace/protocol"
import { Effect, Exit, Layer, Scope } from "effect"
import { createServer } from "node:http"
import { Agent } from "../src/Agent.ts"
import { makeFakeSessionStore, makeFakeTunnelPool, makeMemoryCredentialStore } from "./support/Fakes.ts"
import { waitFor } from "@streamspace/testbed"
import { baseEnv, configLayer } from "./support/harness.ts"
import * as TestControlPlane from "./support/TestControlPlane.ts"

const TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
const PARENT_SPAN = "00f067aa0ba902b7"

interface Received {
  readonly url: string
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly body: string
}

/** A minimal OTLP/HTTP collector: records every request, and the spans of JSON ones. */
const collector = Effect.acquireRelease(
  Effect.callback<{ url: string; spans: Array<{ traceId: string; parentSpanId?: string; name: string }>; requests: Array<Received>; close: () => void }>((resume) => {
    const spans: Array<{ traceId: string; parentSpanId?: string; name: string }> = []
    const requests: Array<Received> = []
    const server = createServer((req, res) => {
      let body = ""
      req.setEncoding("latin1")
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        requests.push({ url: req.url ?? "", headers: req.headers, body })
        if (req.url === "/v1/traces" && req.headers["content-type"] === "application/json") {
          for (const rs of JSON.parse(body).resourceSpans ?? []) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
        }
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, spans, requests, close: () => server.close() }))
    })
  }),
  (c) => Effect.sync(c.close)
)

describe("Tracing", () => {
  it.live("a command's spans join the control plane's trace and are exported over OTLP", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      const cp = yield* TestControlPlane.make()
      const scope = yield* Scope.make()
      const sessions = yield* makeFakeSessionStore
      const tunnels = yield* makeFakeTunnelPool
      const creds = yield* makeMemoryCredentialStore()
      const layer = Agent.layerWith({ sessionStore: sessions.layer, tunnelPool: tunnels.layer, credentialStore: creds.layer }).pipe(
        Layer.provide(configLayer(baseEnv(cp.url, { LOG_LEVEL: "error", OTEL_EXPORTER_OTLP_ENDPOINT: otel.url, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }), { healthPort: 0, metricsPort: 0 }))
      )
      yield* Layer.buildWithScope(layer, scope)
      const conn = yield* cp.nextConnection
      yield* conn.next("hello")
      yield* conn.send("command", {
        command_id: "c-traced",
        action: "delete_session",
        deadline: "2099-01-01T00:00:00.000Z",
        traceparent: `00-${TRACE_ID}-${PARENT_SPAN}-01`,
        args: { session_id: "s-traced" as SessionId }
      } as never)
      yield* conn.next("command_completed")
      yield* Scope.close(scope, Exit.void) // shutting down flushes the exporter
      yield* waitFor("a span in the control plane's trace", Effect.sync(() => otel.spans.some((s) => s.traceId === TRACE_ID)))
      const root = otel.spans.find((s) => s.traceId === TRACE_ID && s.parentSpanId === PARENT_SPAN)
      assert.isDefined(root, `a span whose parent is the command's traceparent span; got ${JSON.stringify(otel.spans.map((s) => s.name))}`)
    }))

  /** Runs an agent with `env`, has it complete one traced command, stops it (which flushes the exporter). */
  const runTraced = (otelEnv: Record<string, string>) =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const scope = yield* Scope.make()
      const sessions = yield* makeFakeSessionStore
      const tunnels = yield* makeFakeTunnelPool
      const creds = yield* makeMemoryCredentialStore()
      const layer = Agent.layerWith({ sessionStore: sessions.layer, tunnelPool: tunnels.layer, credentialStore: creds.layer }).pipe(
        Layer.provide(configLayer(baseEnv(cp.url, { LOG_LEVEL: "error", ...otelEnv }), { healthPort: 0, metricsPort: 0 }))
      )
      yield* Layer.buildWithScope(layer, scope)
      const conn = yield* cp.nextConnection
      yield* conn.next("hello")
      yield* conn.send("command", {
        command_id: "c-traced",
        action: "delete_session",
        deadline: "2099-01-01T00:00:00.000Z",
        traceparent: `00-${TRACE_ID}-${PARENT_SPAN}-01`,
        args: { session_id: "s-traced" as SessionId }
      } as never)
      yield* conn.next("command_completed")
      yield* Scope.close(scope, Exit.void)
    })

  it.live("by default spans go as http/protobuf, with OTEL_EXPORTER_OTLP_HEADERS and the resource attributes", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      yield* runTraced({
        OTEL_EXPORTER_OTLP_ENDPOINT: otel.url,
        OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=k%2D123,x-team=ops",
        OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=staging",
        OTEL_SERVICE_NAME: "agent-eu"
      })
      yield* waitFor("a trace export", Effect.sync(() => otel.requests.some((r) => r.url === "/v1/traces")))
      const r = otel.requests.find((r) => r.url === "/v1/traces")!
      assert.strictEqual(r.headers["content-type"], "application/x-protobuf")
      assert.strictEqual(r.headers["x-api-key"], "k-123")
      assert.strictEqual(r.headers["x-team"], "ops")
      // Protobuf strings are stored as they are: the resource and the command span are in the body.
      for (const text of ["agent-eu", "deployment.environment", "staging", "streamspace.agent_id", "CommandQueue.execute"]) assert.include(r.body, text)
    }))

  it.live("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      yield* runTraced({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${otel.url}/custom/traces` })
      yield* waitFor("a trace export", Effect.sync(() => otel.requests.length > 0))
      assert.deepStrictEqual([...new Set(otel.requests.map((r) => r.url))], ["/custom/traces"])
    }))

  it.live("OTEL_SDK_DISABLED=true and OTEL_TRACES_SAMPLER=always_off export nothing (the agent still runs the command)", () =>
    Effect.gen(function*() {
      const otel = yield* collector
      yield* runTraced({ OTEL_EXPORTER_OTLP_ENDPOINT: otel.url, OTEL_SDK_DISABLED: "true" })
      yield* runTraced({ OTEL_EXPORTER_OTLP_ENDPOINT: otel.url, OTEL_TRACES_SAMPLER: "always_off" })
      // Stopping an agent flushes its exporter, so whatever it would send has been sent by now.
      assert.deepStrictEqual(otel.requests.map((r) => r.url), [])
      yield* runTraced({ OTEL_EXPORTER_OTLP_ENDPOINT: otel.url })
      yield* waitFor("the control run's export", Effect.sync(() => otel.requests.length > 0))
    }))
})
