// Traces in a real collector: Jaeger v1.76.0 (built by the test bed) receives the control plane's and an agent's
// spans over OTLP/HTTP (http/protobuf, the default), behind basic auth that only OTEL_EXPORTER_OTLP_HEADERS
// satisfies. A caller's own `traceparent` on the API request is continued, so one trace — the caller's — holds
// the API request, the dispatch, the agent's command span and its Kubernetes calls, with each service's
// resource attributes.
import { assert, describe, it } from "@effect/vitest"
import { type JaegerSpan, type JaegerTrace, type RunningJaeger, startJaeger } from "@streamspace/testbed"
import { Effect } from "effect"
import { randomBytes } from "node:crypto"
import * as S from "../support/stack.ts"

const jaeger = (options: Parameters<typeof startJaeger>[0]) =>
  Effect.acquireRelease(Effect.promise(() => startJaeger(options)), (j: RunningJaeger) => Effect.promise(() => j.stop()))

const tag = (tags: ReadonlyArray<{ readonly key: string; readonly value: unknown }>, key: string) => tags.find((t) => t.key === key)?.value

describe("tracing into a real OpenTelemetry collector (Jaeger)", () => {
  it.live("one trace holds the API request, the dispatch, the agent's command and its Kubernetes calls, from both services", () =>
    Effect.gen(function*() {
      const auth = { username: "otel", password: "collector-s3cret" }
      const j = yield* jaeger({ basicAuth: auth })
      // The collector refuses exports without this header: spans arriving prove OTEL_EXPORTER_OTLP_HEADERS is sent.
      const headers = `authorization=${encodeURIComponent(`Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString("base64")}`)}`
      const otel = (service: string, attributes: string) => ({
        OTEL_EXPORTER_OTLP_ENDPOINT: j.otlpHttp,
        OTEL_EXPORTER_OTLP_HEADERS: headers,
        OTEL_SERVICE_NAME: service,
        OTEL_RESOURCE_ATTRIBUTES: attributes
      })
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane({ ...S.SYSTEM_ENV, ...otel("e2e-control-plane", "deployment.environment=e2e,streamspace.component=control-plane") })
      const agent = yield* S.startApprovedAgent(
        cp,
        S.agentEnv(cluster, cp.wsUrl, "agent-traced", otel("e2e-agent", "deployment.environment=e2e,k8s.cluster.name=test%2D1"))
      )

      // The caller's own trace: its traceparent on the API request.
      const traceId = randomBytes(16).toString("hex")
      const callerSpan = randomBytes(8).toString("hex")
      const created = yield* S.request(cp.url, "POST", "/api/v1/sessions", {
        token: S.userToken("ann"),
        body: { template: "demo" },
        headers: { traceparent: `00-${traceId}-${callerSpan}-01` }
      })
      assert.strictEqual(created.status, 201, created.text)
      yield* S.waitForSession(S.api(cp.url, S.userToken("ann")), created.body.id, ["running"])

      // Stopping both flushes their exporters.
      yield* agent.stop
      yield* cp.stop
      const trace = yield* S.waitFor(
        "the caller's trace in Jaeger with spans of both services",
        Effect.promise(async (): Promise<JaegerTrace | undefined> => {
          const t = await j.trace(traceId)
          const services = new Set(Object.values(t?.processes ?? {}).map((p) => p.serviceName))
          const names = new Set(t?.spans.map((s) => s.operationName))
          return services.has("e2e-agent") && services.has("e2e-control-plane") && names.has("CommandQueue.execute") && names.has("Kubernetes.create pods")
            ? t
            : undefined
        }),
        { timeout: 20_000 }
      )

      const byId = new Map(trace.spans.map((s) => [s.spanID, s]))
      const service = (s: JaegerSpan) => trace.processes[s.processID]!.serviceName
      const parentOf = (s: JaegerSpan) => s.references.find((r) => r.refType === "CHILD_OF")?.spanID
      const ancestors = (s: JaegerSpan): Array<JaegerSpan> => {
        const out: Array<JaegerSpan> = []
        for (let p = parentOf(s); p !== undefined && byId.has(p); p = parentOf(byId.get(p)!)) out.push(byId.get(p)!)
        return out
      }
      const named = (name: string) => {
        const s = trace.spans.find((s) => s.operationName === name)
        assert.isDefined(s, `a ${name} span in the trace; got ${trace.spans.map((s) => `${service(s)}:${s.operationName}`).join(", ")}`)
        return s!
      }

      // The API request: the HTTP server span is a child of the caller's span.
      const server = trace.spans.find((s) => service(s) === "e2e-control-plane" && tag(s.tags, "span.kind") === "server")
      assert.isDefined(server, "the control plane's HTTP server span")
      assert.strictEqual(parentOf(server!), callerSpan)
      const api = named("Api.createSession")
      const dispatch = named("CommandDispatcher.dispatch")
      const command = named("CommandQueue.execute")
      const kube = trace.spans.filter((s) => s.operationName.startsWith("Kubernetes.") && tag(s.tags, "span.kind") === "client")
      assert.isAbove(kube.length, 0)
      assert.strictEqual(service(api), "e2e-control-plane")
      assert.strictEqual(service(dispatch), "e2e-control-plane")
      assert.strictEqual(service(command), "e2e-agent")
      // One chain: request → API → dispatch → (over the WebSocket) agent command → Kubernetes calls.
      assert.include(ancestors(api), server)
      assert.include(ancestors(dispatch), api)
      assert.include(ancestors(command), dispatch)
      for (const k of kube.filter((k) => ancestors(k).includes(command))) assert.strictEqual(service(k), "e2e-agent")
      assert.isTrue(kube.some((k) => ancestors(k).includes(command) && k.operationName === "Kubernetes.create pods"))

      // Each service's resource attributes (OTEL_RESOURCE_ATTRIBUTES and its own) are on its process.
      const proc = (name: string) => Object.values(trace.processes).find((p) => p.serviceName === name)!
      assert.strictEqual(tag(proc("e2e-control-plane").tags, "deployment.environment"), "e2e")
      assert.strictEqual(tag(proc("e2e-control-plane").tags, "streamspace.component"), "control-plane")
      assert.strictEqual(tag(proc("e2e-agent").tags, "deployment.environment"), "e2e")
      assert.strictEqual(tag(proc("e2e-agent").tags, "k8s.cluster.name"), "test-1")
      assert.strictEqual(tag(proc("e2e-agent").tags, "streamspace.agent_id"), "agent-traced")
      assert.isDefined(tag(proc("e2e-agent").tags, "service.version"))
    }), { timeout: 120_000 })
})
