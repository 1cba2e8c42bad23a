import { assert, describe, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option } from "effect"
import { TestClock } from "effect/testing"
import type { AgentConfigShape } from "../src/AgentConfig.ts"
import { Heartbeat } from "../src/Heartbeat.ts"
import { makeFakeConnection, makeFakeSessionStore, makeFakeTunnelPool, status } from "./support/Fakes.ts"
import { baseEnv, configLayer } from "./support/harness.ts"

const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const setup = (overrides: Partial<AgentConfigShape> = {}) =>
  Effect.gen(function*() {
    const connection = yield* makeFakeConnection
    const sessions = yield* makeFakeSessionStore
    const tunnels = yield* makeFakeTunnelPool
    const ctx = yield* Layer.build(
      Heartbeat.layer.pipe(Layer.provide([configLayer(baseEnv("wss://cp.example.com"), overrides), connection.layer, sessions.layer, tunnels.layer]))
    )
    const beats = () => connection.sent.filter((m) => m.type === "heartbeat")
    return { heartbeat: Context.get(ctx, Heartbeat), connection, sessions, tunnels, beats }
  })

describe("Heartbeat", () => {
  it.effect("beats on connect and every HEARTBEAT_INTERVAL while connected, never while down", () =>
    Effect.gen(function*() {
      const { heartbeat, connection, beats } = yield* setup({})
      yield* TestClock.adjust("2 minutes")
      yield* settle
      assert.strictEqual(beats().length, 0)
      assert.isTrue(Option.isNone(yield* heartbeat.lastSuccess))

      yield* connection.setConnected(true)
      yield* settle
      assert.strictEqual(beats().length, 1)
      yield* TestClock.adjust("29 seconds")
      assert.strictEqual(beats().length, 1)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(beats().length, 2)
      yield* TestClock.adjust("60 seconds")
      assert.strictEqual(beats().length, 4)
      assert.deepStrictEqual(yield* heartbeat.lastSuccess, Option.some(Date.UTC(1970, 0, 1, 0, 3, 30)))

      yield* connection.setConnected(false)
      yield* settle
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual(beats().length, 4)

      yield* connection.setConnected(true)
      yield* settle
      assert.strictEqual(beats().length, 5)
    }))

  it.effect("beats at the control plane's announced interval when HEARTBEAT_INTERVAL is longer, never slower", () =>
    Effect.gen(function*() {
      const { connection, beats } = yield* setup({})
      connection.announced.interval = Option.some(Duration.seconds(10))
      yield* connection.setConnected(true)
      yield* settle
      assert.strictEqual(beats().length, 1)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(beats().length, 2)
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual(beats().length, 4)
      // A longer announced interval does not slow this agent down: its own 30 s stands.
      connection.announced.interval = Option.some(Duration.minutes(2))
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(beats().length, 5)
      yield* TestClock.adjust("29 seconds")
      assert.strictEqual(beats().length, 5)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(beats().length, 6)
    }))

  it.effect("content: online with capacity, sessions and tunnels", () =>
    Effect.gen(function*() {
      const { connection, sessions, tunnels } = yield* setup()
      sessions.state.sessions.set("s-1", status("s-1"))
      sessions.state.sessions.set("s-2", status("s-2", "terminated"))
      tunnels.state.open.set(3, "s-1")
      yield* connection.setConnected(true)
      const beat = yield* connection.next("heartbeat")
      assert.deepStrictEqual(beat.payload, {
        status: "online",
        capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 100 },
        active_sessions: 1,
        active_tunnels: 1,
        tunnel_ids: [3]
      })
    }))

  it.effect("each beat lists the tunnels open at that moment (reconciliation on the control plane's side), also the first after a reconnect", () =>
    Effect.gen(function*() {
      const { connection, tunnels, beats } = yield* setup()
      tunnels.state.open.set(3, "s-1")
      tunnels.state.open.set(9, "s-2")
      yield* connection.setConnected(true)
      yield* settle
      assert.deepStrictEqual(beats().map((b) => b.payload.tunnel_ids), [[3, 9]])
      tunnels.state.open.delete(3)
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual(beats().map((b) => b.payload.tunnel_ids), [[3, 9], [9]])
      yield* connection.setConnected(false)
      yield* settle
      tunnels.state.open.clear()
      yield* connection.setConnected(true)
      yield* settle
      assert.deepStrictEqual(beats().map((b) => b.payload.tunnel_ids), [[3, 9], [9], []])
    }))

  it.effect("warning when the cluster is degraded or capacity is at least 90% used; error when failing", () =>
    Effect.gen(function*() {
      const { heartbeat, connection, sessions } = yield* setup({ maxSessions: 10 })
      yield* connection.setConnected(true)
      yield* connection.next("heartbeat")

      sessions.state.health = { status: "degraded", message: "429 from the API server" }
      yield* heartbeat.beat
      let beat = yield* connection.next("heartbeat")
      assert.strictEqual(beat.payload.status, "warning")
      assert.strictEqual(beat.payload.message, "429 from the API server")

      sessions.state.health = { status: "failing" }
      yield* heartbeat.beat
      beat = yield* connection.next("heartbeat")
      assert.strictEqual(beat.payload.status, "error")
      assert.match(beat.payload.message, /Kubernetes API/)

      sessions.state.health = { status: "ok" }
      for (let i = 0; i < 8; i++) sessions.state.sessions.set(`s-${i}`, status(`s-${i}`))
      yield* heartbeat.beat
      beat = yield* connection.next("heartbeat")
      assert.strictEqual(beat.payload.status, "online")
      sessions.state.sessions.set("s-9", status("s-9"))
      yield* heartbeat.beat
      beat = yield* connection.next("heartbeat")
      assert.strictEqual(beat.payload.status, "warning")
      assert.strictEqual(beat.payload.message, "9 of 10 sessions in use (MAX_SESSIONS)")
    }))
})
