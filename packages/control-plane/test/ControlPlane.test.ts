import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:http"
import { get as httpsGet } from "node:https"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { TestClock } from "effect/testing"
import { WebSocket } from "ws"
import { type AddressInfo, connect } from "node:net"
import { waitForPromise } from "@streamspace/testbed"
import { ControlPlane } from "../src/ControlPlane.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import * as Observability from "../src/Observability.ts"
import { TEST_TLS_CERT, TEST_TLS_KEY } from "./support/httpTls.ts"
import { TEST_JWT_SECRET } from "./support/jwt.ts"

const withEnv = (env: Record<string, string>) => ControlPlane.layer.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))

describe("ControlPlane.layer", () => {
  it.live("serves the API, the agent endpoint and /metrics on one port, with a DEV_MODE admin token", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(withEnv({ DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn" }))
      const cp = Context.get(ctx, ControlPlane)
      assert.match(cp.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.isString(cp.devToken)
      const get = (path: string, token?: string) =>
        Effect.promise(async () => {
          const r = await fetch(`${cp.url}${path}`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } })
          return { status: r.status, text: await r.text() }
        })
      assert.strictEqual((yield* get("/api/v1/health")).status, 200)
      const templates = yield* get("/api/v1/templates", cp.devToken)
      assert.strictEqual(templates.status, 200)
      assert.include(templates.text, "\"demo\"")
      assert.strictEqual((yield* get("/api/v1/agents")).status, 401)
      // The hub's route is mounted: a plain GET is told to upgrade, not 404.
      assert.notStrictEqual((yield* get("/api/v1/agent/connect")).status, 404)
      assert.include((yield* get("/metrics")).text, "streamspace_control_plane_sessions")
    }), { timeout: 120_000 })

  it.live("binds its port only once the database is ready, so the first request is answered", () =>
    Effect.gen(function*() {
      const dir = mkdtempSync(join(tmpdir(), "cp-bind-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
      const port = yield* Effect.promise(() => new Promise<number>((resolve) => {
        const probe = createServer().listen(0, "127.0.0.1", () => {
          const p = (probe.address() as AddressInfo).port
          probe.close(() => resolve(p))
        })
      }))
      // A fresh on-disk database takes seconds to create: start the layer and knock on the port meanwhile.
      yield* Effect.forkScoped(Layer.build(withEnv({ DEV_MODE: "true", PORT: String(port), HOST: "127.0.0.1", DATA_DIR: dir, LOG_LEVEL: "warn" })))
      const accepts = () => new Promise<boolean>((resolve) => {
        const socket = connect(port, "127.0.0.1")
        socket.once("connect", () => {
          socket.destroy()
          resolve(true)
        })
        socket.once("error", () => resolve(false))
      })
      yield* Effect.promise(() => waitForPromise("the port accepts connections", accepts, { timeout: 120_000 }))
      // Held until the routes exist (a fresh on-disk database takes 10-20 s on a loaded machine), then answered:
      // the bound is only there so a request that is never answered fails the test instead of hanging it.
      const answered = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${port}/api/v1/health`, { signal: AbortSignal.timeout(90_000) }).then((r) => r.status, (e: Error) => e.name)
      )
      assert.strictEqual(answered, 200)
    }), { timeout: 150_000 })

  it.live("one client address holds at most MAX_CONNECTIONS_PER_ADDRESS connections", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(withEnv({
        DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn",
        MAX_CONNECTIONS_PER_ADDRESS: "5"
      }))
      const cp = Context.get(ctx, ControlPlane)
      const open = () => {
        const socket = connect(cp.port, "127.0.0.1")
        const closed = new Promise<number>((resolve) => socket.once("close", () => resolve(Date.now())))
        return { socket, closed }
      }
      // Five idle connections are kept; the sixth from the same address is closed at once.
      const idle = Array.from({ length: 5 }, open)
      yield* Effect.promise(() => Promise.all(idle.map((c) => new Promise((r) => c.socket.once("connect", r)))))
      const sixth = open()
      const sixthClosed = yield* Effect.promise(() => sixth.closed)
      assert.isBelow(sixthClosed - Date.now(), 1)
      for (const c of idle) c.socket.destroy()
      yield* Effect.promise(() => Promise.all(idle.map((c) => c.closed)))
      // Once they are gone the address may connect again.
      const ok = yield* Effect.promise(() => fetch(`${cp.url}/api/v1/health`).then((r) => r.status))
      assert.strictEqual(ok, 200)
    }), { timeout: 60_000 })

  it.effect("a bad setting fails the layer with an error naming the variable", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(Layer.build(withEnv({ JWT_SECRET: TEST_JWT_SECRET, PORT: "99999" })))
      assert.strictEqual(e._tag, "SettingError")
      assert.include(e.message, "PORT")
    }))

  it.effect("per-user limits and session resource bounds: defaults, overrides, and bad values named (zero or inverted bounds)", () =>
    Effect.gen(function*() {
      const read = (env: Record<string, string>) => Effect.map(Layer.build(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, ...env })), (ctx) => Context.get(ctx, ControlPlaneConfig))
      const d = yield* read({})
      assert.deepStrictEqual(d.userLimits, { sessionsPerUser: 10, createsPerMinute: 20, viewersPerSession: 8, viewersPerUser: 16 })
      assert.deepStrictEqual(d.sessionResourceBounds, { min: { cpu: "100m", memory: "128Mi" }, max: { cpu: "16", memory: "64Gi" } })
      const c = yield* read({ MAX_SESSIONS_PER_USER: "0", SESSION_CREATES_PER_MINUTE: "5", MAX_VIEWERS_PER_SESSION: "2", MAX_VIEWERS_PER_USER: "3", SESSION_MAX_MEMORY: "8Gi" })
      assert.deepStrictEqual(c.userLimits, { sessionsPerUser: 0, createsPerMinute: 5, viewersPerSession: 2, viewersPerUser: 3 })
      assert.strictEqual(c.sessionResourceBounds.max.memory, "8Gi")
      for (const [env, variable] of [
        [{ MAX_SESSIONS_PER_USER: "-1" }, "MAX_SESSIONS_PER_USER"],
        [{ MAX_VIEWERS_PER_USER: "many" }, "MAX_VIEWERS_PER_USER"],
        [{ SESSION_MIN_MEMORY: "0" }, "SESSION_MIN_MEMORY"],
        [{ SESSION_MAX_CPU: "lots" }, "SESSION_MAX_CPU"],
        [{ SESSION_MIN_CPU: "4", SESSION_MAX_CPU: "2" }, "SESSION_MIN_CPU"]
      ] as const) {
        const e = yield* Effect.flip(read(env))
        assert.strictEqual(e._tag, "SettingError")
        assert.include(e.message, variable)
      }
    }))
})

describe("OpenTelemetry", () => {
  it.live("with OTEL_EXPORTER_OTLP_ENDPOINT set, API spans reach the collector", () =>
    Effect.gen(function*() {
      const spans: Array<string> = []
      const collector = createServer((req, res) => {
        let body = ""
        req.on("data", (c) => (body += c))
        req.on("end", () => {
          if (req.url === "/v1/traces") {
            for (const rs of JSON.parse(body).resourceSpans ?? []) {
              for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push(s.name)
            }
          }
          res.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      yield* Effect.acquireRelease(Effect.promise(() => new Promise<void>((r) => collector.listen(0, "127.0.0.1", r))), () => Effect.sync(() => collector.close()))
      const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`
      yield* Effect.scoped(Effect.gen(function*() {
        const ctx = yield* Layer.build(withEnv({ DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn", OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }))
        const cp = Context.get(ctx, ControlPlane)
        const r = yield* Effect.promise(() => fetch(`${cp.url}/api/v1/templates`, { headers: { authorization: `Bearer ${cp.devToken}` } }))
        assert.strictEqual(r.status, 200)
      }))
      // Closing the layer flushed the exporter.
      yield* Effect.promise(() => waitForPromise("spans at the collector", () => spans.includes("Api.listTemplates")))
      assert.include(spans, "Auth.authenticate")
    }), { timeout: 120_000 })

  it.live("an API request's traceparent is continued (its spans join the caller's trace); OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES go with them", () =>
    Effect.gen(function*() {
      const received: Array<{ headers: Record<string, unknown>; body: any }> = []
      const collector = createServer((req, res) => {
        let body = ""
        req.on("data", (c) => (body += c))
        req.on("end", () => {
          if (req.url === "/v1/traces") received.push({ headers: req.headers, body: JSON.parse(body) })
          res.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      yield* Effect.acquireRelease(Effect.promise(() => new Promise<void>((r) => collector.listen(0, "127.0.0.1", r))), () => Effect.sync(() => collector.close()))
      const endpoint = `http://127.0.0.1:${(collector.address() as AddressInfo).port}`
      const traceId = "5bf92f3577b34da6a3ce929d0e0e4737"
      const callerSpan = "10f067aa0ba902b8"
      yield* Effect.scoped(Effect.gen(function*() {
        const ctx = yield* Layer.build(withEnv({
          DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn",
          OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
          OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=k-1", OTEL_RESOURCE_ATTRIBUTES: "deployment.environment=test"
        }))
        const cp = Context.get(ctx, ControlPlane)
        const r = yield* Effect.promise(() =>
          fetch(`${cp.url}/api/v1/templates`, { headers: { authorization: `Bearer ${cp.devToken}`, traceparent: `00-${traceId}-${callerSpan}-01` } })
        )
        assert.strictEqual(r.status, 200)
      }))
      yield* Effect.promise(() => waitForPromise("spans at the collector", () => received.length > 0))
      const spans = received.flatMap((r) => r.body.resourceSpans.flatMap((rs: any) => rs.scopeSpans.flatMap((ss: any) => ss.spans)))
      const server = spans.find((s: any) => s.traceId === traceId && s.parentSpanId === callerSpan)
      assert.isDefined(server, `a span whose parent is the caller's; got ${JSON.stringify(spans.map((s: any) => [s.name, s.traceId, s.parentSpanId]))}`)
      assert.isTrue(spans.some((s: any) => s.name === "Api.listTemplates" && s.traceId === traceId))
      assert.strictEqual(received[0]!.headers["x-api-key"], "k-1")
      const attrs = received[0]!.body.resourceSpans[0].resource.attributes
      assert.deepInclude(attrs, { key: "deployment.environment", value: { stringValue: "test" } })
      assert.deepInclude(attrs, { key: "service.name", value: { stringValue: "streamspace-control-plane" } })
    }), { timeout: 120_000 })
})

describe("slow clients", () => {
  it.live("a client that never finishes its headers is cut off after HTTP_HEADERS_TIMEOUT", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(withEnv({ DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn", HTTP_HEADERS_TIMEOUT: "1s" }))
      const cp = Context.get(ctx, ControlPlane)
      const started = Date.now()
      const answer = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const socket = connect(cp.port, "127.0.0.1", () => socket.write("GET /api/v1/health HTTP/1.1\r\nHost: x\r\n"))
          let got = ""
          socket.on("data", (d) => (got += d.toString()))
          socket.on("close", () => resolve(got))
          socket.on("error", () => {})
        })
      )
      assert.match(answer, /^HTTP\/1\.1 408/)
      assert.isBelow(Date.now() - started, 5000)
    }), { timeout: 120_000 })
})

describe("logging", () => {
  /** The lines the control plane's logger writes for one `session placed` event inside a span. */
  const logged = (format: "json" | "text") =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const original = globalThis.console.log
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          globalThis.console.log = (line: string) => void lines.push(line)
        }),
        () => Effect.sync(() => {
          globalThis.console.log = original
        })
      )
      yield* Effect.logInfo("session placed").pipe(
        Effect.annotateLogs({ session_id: "s-1", agent_id: "a" }),
        Effect.withSpan("Sessions.create"),
        Effect.provide(Observability.loggerLayer.pipe(Layer.provide(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, LOG_FORMAT: format, LOG_LEVEL: "debug" }))))
      )
      return lines.filter((l) => l.includes("session placed"))
    })

  it.effect("LOG_FORMAT=json writes one object per line (ts, level, msg, the annotations, the trace and span ids), as the agent does", () =>
    Effect.gen(function*() {
      const [only, ...more] = yield* logged("json")
      assert.deepStrictEqual(more, [])
      const line = JSON.parse(only!)
      assert.deepStrictEqual(Object.keys(line), ["ts", "level", "msg", "session_id", "agent_id", "trace_id", "span_id"])
      assert.match(line.ts, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/)
      assert.strictEqual(line.level, "info")
      assert.strictEqual(line.msg, "session placed")
      assert.deepStrictEqual([line.session_id, line.agent_id], ["s-1", "a"])
      assert.match(line.trace_id, /^[0-9a-f]{32}$/)
      assert.match(line.span_id, /^[0-9a-f]{16}$/)
    }))

  it.effect("LOG_REPEAT_LIMIT: a storm of similar lines is cut to the limit, then summarised", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const original = globalThis.console.log
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          globalThis.console.log = (line: string) => void lines.push(line)
        }),
        () => Effect.sync(() => {
          globalThis.console.log = original
        })
      )
      yield* Effect.gen(function*() {
        for (let i = 0; i < 1700; i++) yield* Effect.logWarning(`AgentHub: refused a connection from 10.0.${i >> 8}.${i & 255}: invalid agent token`)
        assert.strictEqual(lines.length, 5)
        yield* TestClock.adjust("1 minute")
        assert.strictEqual(lines.length, 6)
        assert.include(lines[5]!, "suppressed 1695 similar lines")
      }).pipe(Effect.provide(Observability.loggerLayer.pipe(Layer.provide(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, LOG_REPEAT_LIMIT: "5" })))))
    }))

  it.effect("LOG_FORMAT=text writes logfmt with the same field names", () =>
    Effect.gen(function*() {
      const [only, ...more] = yield* logged("text")
      assert.deepStrictEqual(more, [])
      assert.match(only!, /^ts=\S+Z level=info msg="session placed" session_id=s-1 agent_id=a trace_id=[0-9a-f]{32} span_id=[0-9a-f]{16}$/)
    }))
})

describe("TLS", () => {
  it.live("with TLS_CERT_FILE and TLS_KEY_FILE it serves HTTPS and WSS", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "cp-tls-"))), (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true })))
      writeFileSync(join(dir, "tls.crt"), TEST_TLS_CERT)
      writeFileSync(join(dir, "tls.key"), TEST_TLS_KEY)
      const ctx = yield* Layer.build(withEnv({
        DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn",
        TLS_CERT_FILE: join(dir, "tls.crt"), TLS_KEY_FILE: join(dir, "tls.key")
      }))
      const cp = Context.get(ctx, ControlPlane)
      assert.match(cp.url, /^https:\/\//)
      const body = yield* Effect.promise(() =>
        new Promise<string>((resolve, reject) => {
          httpsGet(`${cp.url}/api/v1/health`, { ca: TEST_TLS_CERT }, (res) => {
            let text = ""
            res.on("data", (c) => (text += c))
            res.on("end", () => resolve(text))
          }).on("error", reject)
        })
      )
      assert.strictEqual(JSON.parse(body).status, "ok")
      // A viewer over wss reaches the VNC route (no such session: closed with 4404).
      const code = yield* Effect.promise(() =>
        new Promise<number>((resolve, reject) => {
          const ws = new WebSocket(`${cp.url.replace("https", "wss")}/api/v1/sessions/s-000000000000/vnc`, ["binary"], {
            ca: TEST_TLS_CERT,
            headers: { authorization: `Bearer ${cp.devToken}` }
          })
          ws.on("close", (c) => resolve(c))
          ws.on("error", reject)
        })
      )
      assert.strictEqual(code, 4404)
    }), { timeout: 120_000 })
})
