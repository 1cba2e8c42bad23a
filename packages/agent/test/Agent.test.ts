import { assert, describe, it } from "@effect/vitest"
import { encodeData } from "@streamspace/protocol"
import type { SessionId, TunnelId } from "@streamspace/protocol"
import { Context, Deferred, Effect, Exit, Fiber, Layer, Metric, Option, PubSub, Scope } from "effect"
import { TestClock } from "effect/testing"
import { Agent } from "../src/Agent.ts"
import { Health } from "../src/Health.ts"
import { makeFakeSessionStore, makeFakeTunnelPool, makeMemoryCredentialStore, status } from "./support/Fakes.ts"
import { waitFor } from "@streamspace/testbed"
import { baseEnv, configLayer, freePort } from "./support/harness.ts"
import * as TestControlPlane from "./support/TestControlPlane.ts"

const FAR = "2099-01-01T00:00:00.000Z"
const spec = { user_id: "ann", template: "firefox", image: "example/firefox:1", persistent_home: false, vnc_port: 5900 } as never

const start = (url: string, env: Record<string, string> = {}, ports: { healthPort: number; metricsPort: number } = { healthPort: 0, metricsPort: 0 }) =>
  Effect.gen(function*() {
    const sessions = yield* makeFakeSessionStore
    const tunnels = yield* makeFakeTunnelPool
    const creds = yield* makeMemoryCredentialStore()
    const scope = yield* Scope.make()
    const layer = Agent.layerWith({ sessionStore: sessions.layer, tunnelPool: tunnels.layer, credentialStore: creds.layer }).pipe(
      Layer.provide(configLayer(baseEnv(url, { LOG_LEVEL: "error", ...env }), ports))
    )
    const ctx = yield* Layer.buildWithScope(layer, scope)
    const health = Context.get(ctx, Health)
    const get = (port: number, path: string) =>
      Effect.promise(() => fetch(`http://127.0.0.1:${port}${path}`).then(async (r) => ({ status: r.status, body: await r.text() })))
    return { sessions, tunnels, creds, scope, health, get }
  })

describe("Agent", () => {
  it.effect("routes commands, pings, tunnel bytes and drain; forwards session status", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { sessions, tunnels } = yield* start(cp.url)
      const conn = yield* cp.nextConnection
      yield* conn.next("hello")

      yield* conn.send("command", { command_id: "c-1", action: "create_session", deadline: FAR, args: { session_id: "s-a" as SessionId, spec } } as never)
      assert.strictEqual((yield* conn.next("command_ack")).payload.command_id, "c-1")
      assert.strictEqual((yield* conn.next("command_completed")).payload.command_id, "c-1")

      yield* conn.send("ping", { nonce: "abc" })
      assert.strictEqual((yield* conn.next("pong")).payload.nonce, "abc")

      yield* conn.sendRaw(encodeData(5 as TunnelId, new Uint8Array([1, 2, 3])))
      yield* waitFor("binary frame routed", Effect.sync(() => tunnels.state.received.length === 1))
      assert.strictEqual(tunnels.state.received[0]!.tunnelId, 5)

      yield* conn.send("drain", { draining: true })
      yield* PubSub.publish(sessions.state.changes, status("s-a", "running"))
      const update = yield* conn.next("session_status")
      assert.strictEqual(update.payload.session_id, "s-a")
      assert.strictEqual(update.payload.phase, "running")
    }))

  it.effect("health, ready and metrics", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { health, get } = yield* start(cp.url)
      const conn = yield* cp.nextConnection
      yield* conn.next("heartbeat")

      const h = yield* get(health.healthPort, "/health")
      assert.strictEqual(h.status, 200)
      assert.deepStrictEqual(JSON.parse(h.body), { status: "healthy", agent_id: "test-agent", uptime: "0s" })

      const r = yield* get(health.healthPort, "/ready")
      assert.strictEqual(r.status, 200)
      const ready = JSON.parse(r.body)
      assert.strictEqual(ready.status, "ready")
      assert.strictEqual(ready.control_plane_connected, true)
      assert.strictEqual(ready.last_heartbeat, "1970-01-01T00:00:00Z")

      yield* conn.send("command", { command_id: "c-m", action: "list_sessions", deadline: FAR, args: {} } as never)
      yield* conn.next("command_completed")
      yield* TestClock.adjust("90 seconds")
      assert.isTrue(Option.isSome(health.metricsPort))
      const m = yield* get(Option.getOrThrow(health.metricsPort), "/metrics")
      assert.strictEqual(m.status, 200)
      for (
        const line of [
          "# TYPE streamspace_agent_sessions_active gauge",
          "streamspace_agent_uptime_seconds 90",
          "# TYPE streamspace_agent_heartbeat_last_success_timestamp gauge",
          "# TYPE streamspace_agent_vnc_tunnels_active gauge",
          "# TYPE streamspace_agent_command_duration_seconds histogram",
          "streamspace_agent_command_duration_seconds_count{action=\"list_sessions\",outcome=\"completed\"}",
          "streamspace_agent_control_plane_connected 1"
        ]
      ) assert.include(m.body, line)
      assert.strictEqual((yield* get(health.healthPort, "/nope")).status, 404)
    }))

  it.effect("every metric series exists before the first event, in the agent's own registry", () =>
    Effect.gen(function*() {
      // Something else in the process (the quick start's control plane) has metrics of its own.
      yield* Metric.update(Metric.counter("embedding_program_requests_total"), 1)
      const cp = yield* TestControlPlane.make({ approved: [] })
      const { health, get } = yield* start(cp.url)
      const m = yield* get(Option.getOrThrow(health.metricsPort), "/metrics")
      for (
        const line of [
          "streamspace_agent_heartbeat_last_success_timestamp 0",
          "streamspace_agent_control_plane_connected 0",
          "streamspace_agent_sessions_active 0",
          "streamspace_agent_vnc_tunnels_active 0",
          "streamspace_agent_reconnects_total 0",
          "streamspace_agent_vnc_tunnel_bytes_total{direction=\"to_viewer\"} 0",
          "streamspace_agent_vnc_tunnel_bytes_total{direction=\"to_session\"} 0",
          "streamspace_agent_commands_total{action=\"create_session\",outcome=\"completed\"} 0",
          "streamspace_agent_commands_total{action=\"vnc_connect\",outcome=\"failed\"} 0",
          "streamspace_agent_command_duration_seconds_count{action=\"delete_session\",outcome=\"completed\"} 0"
        ]
      ) assert.include(m.body, `${line}\n`)
      assert.notInclude(m.body, "embedding_program_requests_total")
    }))

  it.effect("METRICS_PORT equal to HEALTH_PORT serves all three on one port", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const port = yield* freePort
      const { health, get } = yield* start(cp.url, {}, { healthPort: port, metricsPort: port })
      assert.strictEqual(health.healthPort, port)
      assert.deepStrictEqual(health.metricsPort, Option.some(port))
      assert.strictEqual((yield* get(port, "/health")).status, 200)
      assert.include((yield* get(port, "/metrics")).body, "streamspace_agent_uptime_seconds")
    }))

  it.effect("HEALTH_HOST=127.0.0.1 keeps health and metrics on loopback; by default every interface answers", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      // 127.0.0.2 reaches this machine too, but not a socket bound to 127.0.0.1 only.
      const reachable = (host: string, port: number) =>
        Effect.promise(() => fetch(`http://${host}:${port}/health`).then((r) => r.status === 200, () => false))
      const open = yield* start(cp.url)
      assert.isTrue(yield* reachable("127.0.0.2", open.health.healthPort))
      const local = yield* start(cp.url, { HEALTH_HOST: "127.0.0.1" })
      assert.isTrue(yield* reachable("127.0.0.1", local.health.healthPort))
      assert.isFalse(yield* reachable("127.0.0.2", local.health.healthPort))
      assert.isTrue(Option.isSome(local.health.metricsPort))
      assert.isFalse(yield* reachable("127.0.0.2", Option.getOrThrow(local.health.metricsPort)))
    }))

  it.effect("ready is 503 while the control plane is unreachable", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ approved: [] })
      const { health, get } = yield* start(cp.url)
      yield* waitFor("an attempt", Effect.sync(() => cp.attempts.length === 1))
      const r = yield* get(health.healthPort, "/ready")
      assert.strictEqual(r.status, 503)
      assert.deepStrictEqual(JSON.parse(r.body), { status: "not_ready", control_plane_connected: false, last_heartbeat: null })
      assert.strictEqual((yield* get(health.healthPort, "/health")).status, 200)
    }))

  it.effect("a lost link closes all tunnels", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { tunnels } = yield* start(cp.url)
      const conn = yield* cp.nextConnection
      yield* conn.next("hello")
      yield* conn.send("command", { command_id: "c-v", action: "vnc_connect", deadline: FAR, args: { session_id: "s-a", tunnel_id: 4 } } as never)
      yield* conn.next("command_completed")
      assert.strictEqual(tunnels.state.open.size, 1)
      yield* conn.terminate
      yield* waitFor("tunnels closed on link loss", Effect.sync(() => tunnels.state.closedAll.includes("error")))
      assert.deepStrictEqual(tunnels.state.closed, [{ tunnelId: 4, reason: "error" }])
    }))

  it.effect("graceful shutdown: in-flight command finishes within the timeout, tunnels close, goodbye and 1001", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { sessions, tunnels, scope, health, get } = yield* start(cp.url)
      const conn = yield* cp.nextConnection
      yield* conn.next("hello")
      yield* conn.send("command", { command_id: "c-v", action: "vnc_connect", deadline: FAR, args: { session_id: "s-v", tunnel_id: 8 } } as never)
      yield* conn.next("command_completed")
      const gate = yield* Deferred.make<void>()
      sessions.state.gates.set("s-a", gate)
      yield* conn.send("command", { command_id: "c-1", action: "create_session", deadline: FAR, args: { session_id: "s-a", spec } } as never)
      yield* conn.next("command_ack")
      yield* waitFor("create running", Effect.sync(() => sessions.state.running === 1))

      const stopping = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* waitFor("ready turns 503", get(health.healthPort, "/ready").pipe(Effect.map((r) => r.status === 503)))
      // a command arriving now is refused
      yield* conn.send("command", { command_id: "c-late", action: "list_sessions", deadline: FAR, args: {} } as never)
      const refused = yield* conn.next("command_failed")
      assert.strictEqual(refused.payload.command_id, "c-late")
      assert.strictEqual(refused.payload.error.code, "shutting_down")

      yield* TestClock.adjust("20 seconds")
      yield* Deferred.succeed(gate, undefined)
      const done = yield* conn.next("command_completed")
      assert.strictEqual(done.payload.command_id, "c-1")
      const bye = yield* conn.next("goodbye")
      assert.strictEqual(bye.payload.reason, "agent shutting down")
      assert.strictEqual((yield* Deferred.await(conn.closed)).code, 1001)
      yield* Fiber.join(stopping)
      assert.include(tunnels.state.closedAll, "shutdown")
      assert.deepStrictEqual(tunnels.state.closed, [{ tunnelId: 8, reason: "shutdown" }])
    }))

  it.effect("graceful shutdown: commands still running after GRACEFUL_SHUTDOWN_TIMEOUT fail with shutting_down", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { sessions, scope } = yield* start(cp.url, { GRACEFUL_SHUTDOWN_TIMEOUT: "10s" })
      const conn = yield* cp.nextConnection
      yield* conn.next("hello")
      sessions.state.gates.set("s-a", yield* Deferred.make<void>())
      yield* conn.send("command", { command_id: "c-1", action: "create_session", deadline: FAR, args: { session_id: "s-a", spec } } as never)
      yield* conn.next("command_ack")
      yield* waitFor("create running", Effect.sync(() => sessions.state.running === 1))
      const stopping = yield* Effect.forkChild(Scope.close(scope, Exit.void), { startImmediately: true })
      yield* Effect.yieldNow
      yield* TestClock.adjust("10 seconds")
      const failed = yield* conn.next("command_failed")
      assert.strictEqual(failed.payload.command_id, "c-1")
      assert.strictEqual(failed.payload.error.code, "shutting_down")
      yield* conn.next("goodbye")
      assert.strictEqual((yield* Deferred.await(conn.closed)).code, 1001)
      yield* Fiber.join(stopping)
    }))
})
