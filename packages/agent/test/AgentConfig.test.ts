import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Option, Redacted } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { readAgentConfig } from "../src/AgentConfig.ts"
import * as TestControlPlane from "./support/TestControlPlane.ts"

const read = (env: Record<string, string>) => readAgentConfig.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))
const good = { AGENT_ID: "k8s-test-1", CONTROL_PLANE_URL: "wss://cp.example.com" }

const REPO = fileURLToPath(new URL("../../../", import.meta.url))

/** Runs main.ts with exactly this environment; resolves with its exit code and output. */
const runMain = (env: Record<string, string>) =>
  Effect.callback<{ code: number | null; stderr: string; stdout: string }>((resume) => {
    const child = spawn(`${REPO}node_modules/.bin/node`, [`${REPO}packages/agent/src/main.ts`], {
      cwd: REPO,
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stderr = ""
    let stdout = ""
    child.stderr.on("data", (d) => (stderr += d))
    child.stdout.on("data", (d) => (stdout += d))
    child.on("exit", (code) => resume(Effect.succeed({ code, stderr, stdout })))
    return Effect.sync(() => child.kill("SIGKILL"))
  })

describe("AgentConfig", () => {
  it.effect("defaults of the agent guide", () =>
    Effect.gen(function*() {
      const c = yield* read(good)
      assert.strictEqual(Duration.toSeconds(c.heartbeatInterval), 30)
      assert.strictEqual(Duration.toSeconds(c.reconnectDelay), 5)
      assert.strictEqual(Duration.toMinutes(c.maxReconnectDelay), 5)
      assert.strictEqual(c.maxSessions, 100)
      assert.strictEqual(c.maxConcurrentOperations, 10)
      assert.strictEqual(c.healthPort, 8080)
      assert.strictEqual(c.metricsPort, 9090)
      assert.strictEqual(c.logFormat, "json")
      assert.strictEqual(c.logLevel, "Info")
      assert.isTrue(Option.isNone(c.agentToken))
      assert.strictEqual(c.sessionEphemeralStorageLimit, "10Gi")
      assert.strictEqual((yield* read({ ...good, SESSION_EPHEMERAL_STORAGE_LIMIT: "2Gi" })).sessionEphemeralStorageLimit, "2Gi")
      assert.include((yield* Effect.flip(read({ ...good, SESSION_EPHEMERAL_STORAGE_LIMIT: "big" }))).message, "SESSION_EPHEMERAL_STORAGE_LIMIT")
    }))

  it.effect("AGENT_TOKEN is a redacted secret", () =>
    Effect.gen(function*() {
      const c = yield* read({ ...good, AGENT_TOKEN: "s3cret-token-value" })
      assert.strictEqual(Redacted.value(Option.getOrThrow(c.agentToken)), "s3cret-token-value")
      assert.notInclude(String(Option.getOrThrow(c.agentToken)), "s3cret")
    }))

  it.effect("missing AGENT_ID", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(read({ CONTROL_PLANE_URL: "wss://cp.example.com" }))
      assert.strictEqual(e.variable, "AGENT_ID")
      assert.match(e.message, /AGENT_ID is required/)
    }))

  it.effect("a bad duration names the variable and the value", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(read({ ...good, HEARTBEAT_INTERVAL: "30 parsecs" }))
      assert.strictEqual(e.variable, "HEARTBEAT_INTERVAL")
      assert.include(e.message, `"30 parsecs"`)
      assert.include(e.message, "30s")
    }))

  it.effect("ws:// to a non-loopback host is refused; loopback or ALLOW_INSECURE_TRANSPORT allow it", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(read({ ...good, CONTROL_PLANE_URL: "ws://cp.example.com" }))
      assert.strictEqual(e.variable, "CONTROL_PLANE_URL")
      assert.include(e.message, "ALLOW_INSECURE_TRANSPORT")
      yield* read({ ...good, CONTROL_PLANE_URL: "ws://127.0.0.1:8000" })
      yield* read({ ...good, CONTROL_PLANE_URL: "ws://cp.example.com", ALLOW_INSECURE_TRANSPORT: "true" })
    }))

  it.effect("variables the agent no longer reads are ignored: VNC_BUFFER_SIZE from an older deployment starts fine", () =>
    Effect.gen(function*() {
      const c = yield* read({ ...good, VNC_BUFFER_SIZE: "not even a number" })
      assert.strictEqual(c.agentId, "k8s-test-1")
      assert.notProperty(c, "vncBufferSize")
    }))

  it.effect("a bad integer names the variable and the value", () =>
    Effect.gen(function*() {
      const e = yield* Effect.flip(read({ ...good, MAX_SESSIONS: "ten" }))
      assert.strictEqual(e.variable, "MAX_SESSIONS")
      assert.include(e.message, `"ten"`)
      const e2 = yield* Effect.flip(read({ ...good, MAX_CONCURRENT_OPERATIONS: "0" }))
      assert.strictEqual(e2.variable, "MAX_CONCURRENT_OPERATIONS")
    }))

  it.live("main.ts exits non-zero with the message before dialling anything", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const cases: Array<[Record<string, string>, RegExp]> = [
        [{ CONTROL_PLANE_URL: cp.url }, /AGENT_ID is required/],
        [{ AGENT_ID: "a1", CONTROL_PLANE_URL: cp.url, AGENT_TOKEN: "t0123456789abcdef", HEARTBEAT_INTERVAL: "soon" }, /HEARTBEAT_INTERVAL="soon"/]
      ]
      const results = yield* Effect.forEach(cases, ([env]) => runMain(env), { concurrency: "unbounded" })
      results.forEach((r, i) => {
        assert.notStrictEqual(r.code, 0)
        assert.isNotNull(r.code)
        assert.match(r.stderr, cases[i]![1])
        assert.match(r.stderr, /configuration error/)
      })
      assert.strictEqual(cp.attempts.length, 0)
    }), 90_000)
})
