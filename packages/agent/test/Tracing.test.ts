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

/** A minimal OTLP/HTTP JSON collector: records the spans it receives. */
const collector = Effect.acquireRelease(
  Effect.callback<{ url: string; spans: Array<{ traceId: string; parentSpanId?: string; name: string }>; close: () => void }>((resume) => {
    const spans: Array<{ traceId: string; parentSpanId?: string; name: string }> = []
    const server = createServer((req, res) => {
      let body = ""
      req.on("data", (c) => (body += c))
      req.on("end", () => {
        if (req.url === "/v1/traces") {
          for (const rs of JSON.parse(body).resourceSpans ?? []) for (const ss of rs.scopeSpans) spans.push(...ss.spans)
        }
        res.writeHead(200, { "content-type": "application/json" }).end("{}")
      })
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number }
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, spans, close: () => server.close() }))
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
        Layer.provide(configLayer(baseEnv(cp.url, { LOG_LEVEL: "error", OTEL_EXPORTER_OTLP_ENDPOINT: otel.url }), { healthPort: 0, metricsPort: 0 }))
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
})
