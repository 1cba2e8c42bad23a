// Bad input against the real control plane and both config readers: fast-check fuzzing of API bodies, paths
// and query strings, oversized and malformed bodies, hostile frames on the agent socket. What must hold: only
// typed answers (a JSON error with a stable code, never a 500 or a crash), no half-written record (every
// session and template in the store is one the API answered 201 for), and the server keeps serving.
import { readAgentConfig } from "@streamspace/agent"
import { readControlPlaneConfig } from "@streamspace/control-plane"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Exit } from "effect"
import * as fc from "fast-check"
import { connect } from "node:net"
import { WebSocket } from "ws"
import * as S from "../support/stack.ts"
import * as V from "../support/systemVnc.ts"

const TYPED = new Set([200, 201, 202, 400, 401, 403, 404, 405, 409, 413, 415, 429, 503])

const isTypedError = (r: S.ApiResponse) => r.status < 400 || (typeof r.body?.error?.code === "string" && typeof r.body?.error?.message === "string")

const jsonish = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  fc.record({
    template: fc.oneof(fc.constant("demo"), fc.string({ maxLength: 80 }), fc.jsonValue({ maxDepth: 1 })),
    region: fc.oneof(fc.string({ maxLength: 80 }), fc.integer()),
    resources: fc.oneof(fc.record({ cpu: fc.string({ maxLength: 12 }), memory: fc.string({ maxLength: 12 }) }), fc.jsonValue({ maxDepth: 2 })),
    env: fc.oneof(fc.dictionary(fc.string({ maxLength: 20 }), fc.string({ maxLength: 20 }), { maxKeys: 4 }), fc.jsonValue({ maxDepth: 2 })),
    persistent_home: fc.oneof(fc.boolean(), fc.string({ maxLength: 5 })),
    extra: fc.jsonValue({ maxDepth: 1 })
  }, { requiredKeys: [] })
)

const templateBody = fc.record({
  name: fc.oneof(fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/), fc.string({ maxLength: 70 })),
  image: fc.oneof(fc.constant("img:1"), fc.string({ maxLength: 600 })),
  display_name: fc.string({ maxLength: 210 }),
  vnc_port: fc.oneof(fc.integer({ min: -5, max: 70_000 }), fc.string({ maxLength: 6 })),
  resources: fc.jsonValue({ maxDepth: 2 }),
  env: fc.jsonValue({ maxDepth: 2 })
}, { requiredKeys: [] })

const pathSegment = fc.oneof(
  fc.string({ maxLength: 40 }).map(encodeURIComponent),
  fc.constantFrom("..", "%2e%2e", "%00", "a%2Fb", "' OR 1=1 --", "%E2%80%AE", "x".repeat(300))
)
const query = fc.array(fc.tuple(fc.string({ maxLength: 20 }), fc.string({ maxLength: 40 })), { maxLength: 4 })
  .map((kv) => (kv.length === 0 ? "" : `?${kv.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&")}`))

describe("API under fuzzed input", () => {
  it.live("random bodies, paths and query strings get typed answers and leave no half-written record", () =>
    Effect.gen(function*() {
      const cp = yield* S.startControlPlane({ MAX_BODY_BYTES: "4096" })
      const cluster = yield* S.makeCluster()
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, "agent-fuzz"))
      yield* S.approveAgent(cp, "agent-fuzz")
      const alice = S.api(cp.url, S.userToken("alice"))
      let sessionsCreated = 0
      let templatesCreated = 0
      const seen = new Map<number, number>()
      const check = (what: string, r: S.ApiResponse) => {
        seen.set(r.status, (seen.get(r.status) ?? 0) + 1)
        if (!TYPED.has(r.status) || !isTypedError(r)) throw new Error(`${what}: HTTP ${r.status} ${r.text.slice(0, 300)}`)
      }
      const run = <A>(arb: fc.Arbitrary<A>, f: (a: A) => Promise<void>, numRuns: number) =>
        Effect.promise(() => fc.assert(fc.asyncProperty(arb, f), { numRuns }))

      yield* run(jsonish, async (body) => {
        const r = await Effect.runPromise(alice.post("/sessions", body))
        check(`POST /sessions ${JSON.stringify(body)}`, r)
        if (r.status === 201) sessionsCreated++
      }, 80)
      yield* run(templateBody, async (body) => {
        const r = await Effect.runPromise(cp.admin.post("/templates", body))
        check(`POST /templates ${JSON.stringify(body)}`, r)
        if (r.status === 201) templatesCreated++
      }, 50)
      yield* run(fc.tuple(fc.jsonValue({ maxDepth: 3 }), pathSegment), async ([body, id]) => {
        check(`PATCH /agents/${id}`, await Effect.runPromise(cp.admin.patch(`/agents/${id}`, body)))
      }, 40)
      yield* run(
        fc.tuple(fc.constantFrom("GET", "DELETE", "POST", "PUT", "PATCH"), fc.constantFrom("/sessions/", "/agents/", "/templates/", "/commands/", "/"), pathSegment, query),
        async ([method, base, id, q]) => {
          const path = `/api/v1${base}${id}${q}`
          const r = await Effect.runPromise(S.request(cp.url, method, path, { token: S.userToken("alice") }))
          // ".." can climb out of /api/v1, where the web UI answers (not JSON): only the status is checked there
          if (new URL(path, cp.url).pathname.startsWith("/api/v1/")) check(`${method} ${path}`, r)
          else if (r.status >= 500) throw new Error(`${method} ${path}: HTTP ${r.status}`)
        },
        120
      )
      // malformed percent-encoding (the router cannot decode the path): a JSON 400 naming the problem
      for (const bad of ["/api/v1/sessions/%ff", "/api/v1/agents/%", "/api/v1/%c3%28"]) {
        const r = yield* S.request(cp.url, "GET", bad, { token: S.userToken("alice") })
        assert.strictEqual(r.status, 400, bad)
        assert.strictEqual(r.body?.error?.code, "invalid_request", r.text)
        assert.include(r.body.error.message, "malformed percent-encoding", r.text)
      }
      // random bytes with a JSON content type
      yield* run(fc.uint8Array({ maxLength: 600 }), async (bytes) => {
        check("raw bytes", await Effect.runPromise(S.request(cp.url, "POST", "/api/v1/sessions", { token: S.userToken("alice"), raw: bytes, headers: { "content-type": "application/json" } })))
      }, 50)

      // nothing half-written: the store holds exactly what was answered 201
      const all = yield* cp.admin.get("/sessions")
      assert.strictEqual(all.body.sessions.length, sessionsCreated, `statuses seen: ${JSON.stringify([...seen])}`)
      for (const s of all.body.sessions) assert.include(["pending", "creating", "running"], s.state)
      const templates = yield* cp.admin.get("/templates")
      assert.strictEqual(templates.body.templates.length, 1 + templatesCreated)
      assert.strictEqual((yield* S.request(cp.url, "GET", "/api/v1/health")).status, 200)
    }), 120_000)
})

describe("oversized and malformed requests", () => {
  it.live("over MAX_BODY_BYTES (declared or chunked) is 413; nested, invalid UTF-8 and non-JSON bodies are 400/415; huge headers are 431; nothing is stored", () =>
    Effect.gen(function*() {
      const cp = yield* S.startControlPlane({ MAX_BODY_BYTES: "65536" })
      const token = S.userToken("alice")
      const post = (raw: string | Uint8Array, headers: Record<string, string> = { "content-type": "application/json" }) =>
        S.request(cp.url, "POST", "/api/v1/sessions", { token, raw, headers })
      const big = JSON.stringify({ template: "demo", region: "x".repeat(70_000) })
      const declared = yield* post(big)
      assert.strictEqual(declared.status, 413)
      assert.strictEqual(declared.body.error.code, "body_too_large")
      // chunked: no content-length, the server must count
      const chunked = yield* Effect.promise(() =>
        fetch(`${cp.url}/api/v1/sessions`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: new ReadableStream({
            start(c) {
              for (let i = 0; i < 70; i++) c.enqueue(new TextEncoder().encode("x".repeat(1000)))
              c.close()
            }
          }),
          duplex: "half"
        } as RequestInit).then(async (r) => ({ status: r.status, body: await r.json() }))
      )
      assert.strictEqual(chunked.status, 413)
      const deep = yield* post("[".repeat(30_000) + "]".repeat(30_000))
      assert.strictEqual(deep.status, 400)
      const deepObject = yield* post("{\"a\":".repeat(10_000) + "1" + "}".repeat(10_000))
      assert.strictEqual(deepObject.status, 400)
      const invalidUtf8 = yield* post(new Uint8Array([0x7b, 0x22, 0x74, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]))
      assert.strictEqual(invalidUtf8.status, 400)
      assert.match(invalidUtf8.body.error.message, /not valid JSON/)
      const notJson = yield* post("template=demo", { "content-type": "application/x-www-form-urlencoded" })
      assert.strictEqual(notJson.status, 415)
      const hugeHeader = yield* S.request(cp.url, "GET", "/api/v1/health", { headers: { "x-pad": "y".repeat(20_000) } })
      assert.strictEqual(hugeHeader.status, 431)
      assert.strictEqual((yield* cp.admin.get("/sessions")).body.sessions.length, 0)
      assert.strictEqual((yield* S.request(cp.url, "GET", "/api/v1/health")).status, 200)
    }), 60_000)
})

describe("hostile agent sockets", () => {
  it.live("invalid UTF-8, random frames and oversized frames from a pending agent: typed errors or a close, and an approved agent is unaffected", () =>
    Effect.gen(function*() {
      const cp = yield* S.startControlPlane()
      const cluster = yield* S.makeCluster()
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, "agent-good"))
      yield* S.approveAgent(cp, "agent-good")
      const hostile = (frames: ReadonlyArray<string | Uint8Array>, binaryAsText = false) =>
        Effect.promise(() =>
          new Promise<{ code: number; errors: number }>((resolve) => {
            const ws = new WebSocket(`${cp.wsUrl}/api/v1/agent/connect`, ["streamspace.v1"], { headers: { authorization: `Bearer ${S.BOOTSTRAP_TOKEN}` } })
            let errors = 0
            ws.on("message", (d, isBinary) => {
              if (!isBinary && JSON.parse(String(d)).type === "error") errors++
              if (errors >= frames.length) ws.close(1000)
            })
            ws.on("open", () => {
              for (const f of frames) ws.send(f, { binary: typeof f !== "string" && !binaryAsText })
            })
            ws.on("error", () => {})
            ws.on("close", (code) => resolve({ code, errors }))
          })
        )
      const randomFrames = fc.sample(fc.oneof(fc.string({ maxLength: 200 }), fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v))), 50)
      const fuzzed = yield* hostile(randomFrames)
      assert.strictEqual(fuzzed.errors, randomFrames.length, "one error reply per rejected frame")
      // a text frame that is not UTF-8: the WebSocket layer closes with 1007
      const utf8 = yield* hostile([new Uint8Array([0xc3, 0x28, 0xff])], true)
      assert.strictEqual(utf8.code, 1007)
      // over the frame limit: 1009
      const huge = yield* hostile(["x".repeat(2 * 1024 * 1024)])
      assert.strictEqual(huge.code, 1009)
      const good = yield* S.waitForOnline(cp, "agent-good")
      assert.isTrue(good.connected)
      const alice = S.api(cp.url, S.userToken("alice"))
      const created = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201)
      yield* S.waitForSession(alice, created.body.id, ["running"])
    }), 60_000)

  it.live("half a request line, then silence, on the agent endpoint does not stop other agents connecting", () =>
    Effect.gen(function*() {
      const cp = yield* S.startControlPlane()
      const sockets = yield* Effect.acquireRelease(
        Effect.sync(() => Array.from({ length: 50 }, () => connect(cp.port, "127.0.0.1").on("error", () => {}).setNoDelay(true))),
        (ss) => Effect.sync(() => ss.forEach((s) => s.destroy()))
      )
      for (const s of sockets) s.write("GET /api/v1/agent/connect HTTP/1.1\r\nHost: x\r\n")
      const cluster = yield* S.makeCluster()
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, "agent-after"))
      yield* S.approveAgent(cp, "agent-after")
    }), 60_000)
})

// ---- config values

const agentVars = ["AGENT_ID", "CONTROL_PLANE_URL", "ALLOW_INSECURE_TRANSPORT", "PLATFORM", "NAMESPACE", "HEARTBEAT_INTERVAL", "RECONNECT_DELAY", "MAX_RECONNECT_DELAY", "PING_INTERVAL", "PING_TIMEOUT", "MAX_SESSIONS", "SESSION_IMAGE_PULL_POLICY", "SESSION_DEFAULT_CPU", "SESSION_DEFAULT_MEMORY", "SESSION_DEFAULT_STORAGE", "SESSION_SERVICE_TYPE", "VNC_PORT", "VNC_TUNNEL_TIMEOUT", "VNC_BUFFER_SIZE", "VNC_TUNNEL_WINDOW", "LOG_LEVEL", "LOG_FORMAT", "METRICS_ENABLED", "METRICS_PORT", "HEALTH_PORT", "COMMAND_TIMEOUT", "GRACEFUL_SHUTDOWN_TIMEOUT", "MAX_CONCURRENT_OPERATIONS"]
const cpVars = ["HOST", "PORT", "PUBLIC_URL", "TLS_CERT_FILE", "DATABASE_URL", "DATABASE_IN_MEMORY", "JWT_JWKS_URL", "DEV_MODE", "HEARTBEAT_INTERVAL", "HEARTBEAT_MISSED_LIMIT", "COMMAND_TIMEOUT", "CREDENTIAL_ROTATION_GRACE", "VNC_TICKET_TTL", "VNC_TUNNEL_WINDOW", "PING_INTERVAL", "LOG_LEVEL", "LOG_FORMAT", "METRICS_ENABLED", "JWT_CLOCK_TOLERANCE", "DEV_TOKEN_TTL", "MAX_BODY_BYTES", "OTEL_EXPORTER_OTLP_ENDPOINT"]

const value = fc.oneof(
  fc.string({ maxLength: 30 }),
  fc.string({ unit: "binary", maxLength: 30 }),
  fc.constantFrom("", " ", "-1", "0", "1e309", "NaN", "99999999999999999999", "5", "30s", "1h", "0ms", "-5m", "true", "ws://10.0.0.1", "wss://x", "%", "\u0000")
)

describe("config values under fuzzing", () => {
  it.effect("every agent variable: a random value gives a config or a SettingError naming a variable, never a defect", () =>
    Effect.gen(function*() {
      const samples = fc.sample(fc.tuple(fc.constantFrom(...agentVars), value), 600)
      for (const [name, v] of samples) {
        const env = { AGENT_ID: "a1", CONTROL_PLANE_URL: "wss://cp.example.com", [name]: v }
        const exit = yield* Effect.exit(readAgentConfig.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))))
        if (Exit.isFailure(exit)) {
          const e = exit.cause.reasons.find((r) => r._tag === "Fail")
          assert.isDefined(e, `${name}=${JSON.stringify(v)} died: ${String(exit.cause)}`)
          const err = (e as { error: { _tag: string; variable: string } }).error
          assert.strictEqual(err._tag, "SettingError")
          assert.include([...agentVars, "RECONNECT_DELAY"], err.variable)
        }
      }
    }))

  it.effect("every control-plane variable: a random value gives a config or a SettingError, never a defect; secrets are never echoed", () =>
    Effect.gen(function*() {
      const samples = fc.sample(fc.tuple(fc.constantFrom(...cpVars), value), 600)
      for (const [name, v] of samples) {
        const env = { JWT_SECRET: "s3cr3t-value-never-echoed-0123456789abcdef", [name]: v }
        const exit = yield* Effect.exit(readControlPlaneConfig.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))))
        if (Exit.isFailure(exit)) {
          const e = exit.cause.reasons.find((r) => r._tag === "Fail")
          assert.isDefined(e, `${name}=${JSON.stringify(v)} died: ${String(exit.cause)}`)
          const err = (e as { error: { _tag: string; message: string } }).error
          assert.strictEqual(err._tag, "SettingError")
          assert.notInclude(err.message, "s3cr3t-value-never-echoed-0123456789abcdef")
          if (name === "DATABASE_URL") assert.notInclude(err.message, v.length > 3 ? v : "\u0000never")
        }
      }
    }))
})

describe("a greedy user (issue 14)", () => {
  it.live("one user cannot fill the agent or a session's viewers: 429 and 4429 naming the limit, while another user is served; env and resources are bounded", () =>
    Effect.gen(function*() {
      const cp = yield* S.startControlPlane({ MAX_SESSIONS_PER_USER: "2", MAX_VIEWERS_PER_SESSION: "1" })
      const cluster = yield* S.makeCluster()
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, "agent-greedy"))
      yield* S.approveAgent(cp, "agent-greedy")
      const token = S.userToken("greedy")
      const greedy = S.api(cp.url, token)
      const a = yield* greedy.post("/sessions", { template: "demo" })
      assert.strictEqual(a.status, 201, a.text)
      assert.strictEqual((yield* greedy.post("/sessions", { template: "demo" })).status, 201)
      const over = yield* greedy.post("/sessions", { template: "demo" })
      assert.deepStrictEqual([over.status, over.body.error.code], [429, "limit_exceeded"])
      assert.include(over.body.error.message, "MAX_SESSIONS_PER_USER=2")
      // Someone else still gets a session on the same agent.
      const other = S.api(cp.url, S.userToken("patient"))
      const theirs = yield* other.post("/sessions", { template: "demo" })
      assert.strictEqual(theirs.status, 201, theirs.text)
      // Bounded input: a 900 KiB env value, platform variables and zero resources are refused, naming why.
      const big = yield* greedy.post("/sessions", { template: "demo", env: { X: "y".repeat(900 * 1024) } })
      assert.deepStrictEqual([big.status, big.body.error.code], [400, "invalid_request"])
      assert.include(big.body.error.message, "env.X: value is 921600 bytes; at most 32768")
      const reserved = yield* greedy.post("/sessions", { template: "demo", env: { STREAMSPACE_USER: "admin" } })
      assert.include(reserved.body.error.message, "STREAMSPACE_USER")
      const zero = yield* greedy.post("/sessions", { template: "demo", resources: { memory: "0" } })
      assert.include(zero.body.error.message, "resources.memory: must be greater than zero")
      // One viewer per session: the second is refused (ticket 429, upgrade closed 4429); the first keeps working.
      yield* S.waitForSession(greedy, a.body.id, ["running"])
      const first = yield* S.openViewer(cp.wsUrl, a.body.id, token)
      const ticket = yield* greedy.post(`/sessions/${a.body.id}/vnc-ticket`, {})
      assert.deepStrictEqual([ticket.status, ticket.body.error.code], [429, "limit_exceeded"])
      const second = yield* Effect.scoped(Effect.flatMap(V.openRaw(cp.wsUrl, a.body.id, { token }), (v) => v.closed()))
      assert.strictEqual(second.code, 4429)
      assert.include(second.reason, "MAX_VIEWERS_PER_SESSION=1")
      yield* Effect.promise(() => first.client.update(false))
      // The pod the agent made carries the platform's env and the ephemeral-storage limit.
      const pod = S.sessionPods(cluster).find((p: any) => p.metadata.name === a.body.id) as any
      assert.strictEqual(pod.spec.containers[0].resources.limits["ephemeral-storage"], "10Gi")
      assert.strictEqual(pod.spec.securityContext.fsGroup, 1000)
    }), 60_000)
})
