import { assert, describe, it } from "@effect/vitest"
import type { Command, CommandId, Message, MessageId } from "@streamspace/protocol"
import { Context, Deferred, Duration, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import type { AgentConfigShape } from "../src/AgentConfig.ts"
import { CommandQueue, OUTCOME_MEMORY } from "../src/CommandQueue.ts"
import * as Logging from "../src/Logging.ts"
import { makeFakeConnection, makeFakeSessionStore, makeFakeTunnelPool, status, storeError, tunnelError } from "./support/Fakes.ts"
import { baseEnv, configLayer } from "./support/harness.ts"

const FAR = "2099-01-01T00:00:00.000Z"
const spec = { user_id: "ann", template: "firefox", image: "example/firefox:1", persistent_home: false, vnc_port: 5900 }

let n = 0
const command = (payload: Record<string, unknown>, id = `cmd-${++n}`, deadline = FAR): Message<"command"> => ({
  type: "command",
  id: `f-${id}` as MessageId,
  ts: new Date(0).toISOString(),
  payload: { command_id: id as CommandId, deadline, ...payload } as Command
})
const create = (session: string, id?: string, deadline?: string) => command({ action: "create_session", args: { session_id: session, spec } }, id, deadline)
const del = (session: string, id?: string) => command({ action: "delete_session", args: { session_id: session } }, id)

/** Lets forked fibers run without moving the clock. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

const setup = (overrides: Partial<AgentConfigShape> = {}) =>
  Effect.gen(function*() {
    const connection = yield* makeFakeConnection
    const sessions = yield* makeFakeSessionStore
    const tunnels = yield* makeFakeTunnelPool
    const ctx = yield* Layer.build(
      CommandQueue.layer.pipe(Layer.provide([configLayer(baseEnv("wss://cp.example.com"), overrides), connection.layer, sessions.layer, tunnels.layer]))
    )
    yield* connection.setConnected(true)
    return { queue: Context.get(ctx, CommandQueue), connection, sessions, tunnels }
  })

describe("CommandQueue", () => {
  it.effect("log lines carry agent, command, session and trace ids", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      yield* Effect.gen(function*() {
        const { queue, connection } = yield* setup()
        yield* queue.submit(command({
          action: "create_session",
          args: { session_id: "s-t", spec },
          traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        }, "c-traced"))
        yield* connection.next("command_completed")
      }).pipe(Effect.provide(Logging.layerWith("json", "Info", "agent-x", (l) => lines.push(l))))
      const done = lines.map((l) => JSON.parse(l)).find((l) => String(l.msg).includes("completed"))
      assert.isDefined(done)
      assert.strictEqual(done.agent_id, "agent-x")
      assert.strictEqual(done.command_id, "c-traced")
      assert.strictEqual(done.session_id, "s-t")
      assert.strictEqual(done.action, "create_session")
      assert.strictEqual(done.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736")
    }))

  it.effect("acks at once, runs create_session and reports command_completed", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      yield* queue.submit(create("s-a", "c-1"))
      assert.deepStrictEqual(connection.sent[0], { type: "command_ack", payload: { command_id: "c-1" } })
      const done = yield* connection.next("command_completed")
      assert.strictEqual(done.payload.command_id, "c-1")
      assert.strictEqual(done.payload.result.action, "create_session")
      assert.strictEqual(done.payload.result.session.session_id, "s-a")
      assert.isTrue(sessions.state.sessions.has("s-a"))
      assert.strictEqual(yield* queue.inFlight, 0)
    }))

  it.effect("a re-delivered command is acked and answered with its first outcome, not run again", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      yield* queue.submit(create("s-a", "c-1"))
      const first = yield* connection.next("command_completed")
      yield* queue.submit(create("s-a", "c-1"))
      const second = yield* connection.next("command_completed")
      assert.deepStrictEqual(second.payload, first.payload)
      assert.deepStrictEqual(sessions.state.calls, ["create:s-a"])
      assert.strictEqual(connection.sent.filter((m) => m.type === "command_ack").length, 2)
    }))

  it.effect("a duplicate of an in-flight command is acked but runs once", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      const gate = yield* Deferred.make<void>()
      sessions.state.gates.set("s-a", gate)
      yield* queue.submit(create("s-a", "c-1"))
      yield* settle
      yield* queue.submit(create("s-a", "c-1"))
      yield* settle
      assert.strictEqual(connection.sent.filter((m) => m.type === "command_ack").length, 2)
      yield* Deferred.succeed(gate, undefined)
      yield* connection.next("command_completed")
      yield* settle
      assert.deepStrictEqual(sessions.state.calls, ["create:s-a"])
      assert.strictEqual(connection.sent.filter((m) => m.type === "command_completed").length, 1)
    }))

  it.effect("COMMAND_TIMEOUT and the command's own deadline, whichever is sooner, fail with timeout", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      sessions.state.gates.set("s-stuck", yield* Deferred.make<void>())
      sessions.state.gates.set("s-soon", yield* Deferred.make<void>())
      yield* queue.submit(create("s-stuck", "c-stuck")) // COMMAND_TIMEOUT default 5m
      yield* queue.submit(create("s-soon", "c-soon", new Date(10_000).toISOString())) // deadline 10s from t=0
      yield* settle
      yield* TestClock.adjust("10 seconds")
      const soon = yield* connection.next("command_failed")
      assert.strictEqual(soon.payload.command_id, "c-soon")
      assert.strictEqual(soon.payload.error.code, "timeout")
      assert.isTrue(soon.payload.error.retryable)
      yield* TestClock.adjust("4 minutes")
      yield* settle
      assert.strictEqual(connection.sent.filter((m) => m.type === "command_failed").length, 1)
      yield* TestClock.adjust("50 seconds")
      const stuck = yield* connection.next("command_failed")
      assert.strictEqual(stuck.payload.command_id, "c-stuck")
      assert.strictEqual(stuck.payload.error.code, "timeout")
      assert.strictEqual(yield* queue.inFlight, 0)
    }))

  it.effect("runs at most MAX_CONCURRENT_OPERATIONS at once", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup({ maxConcurrentOperations: 2 })
      const gate = yield* Deferred.make<void>()
      for (const id of ["s-1", "s-2", "s-3", "s-4"]) sessions.state.gates.set(id, gate)
      for (const id of ["s-1", "s-2", "s-3", "s-4"]) yield* queue.submit(create(id))
      yield* settle
      assert.strictEqual(sessions.state.running, 2)
      assert.strictEqual(connection.sent.filter((m) => m.type === "command_ack").length, 4)
      yield* Deferred.succeed(gate, undefined)
      for (let i = 0; i < 4; i++) yield* connection.next("command_completed")
      assert.strictEqual(sessions.state.maxRunning, 2)
    }))

  it.effect("commands on one session run in arrival order, one at a time; other sessions are not held up", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      const gate = yield* Deferred.make<void>()
      sessions.state.gates.set("s-a", gate)
      yield* queue.submit(create("s-a", "c-create"))
      yield* queue.submit(del("s-a", "c-delete"))
      yield* queue.submit(create("s-b", "c-other"))
      const other = yield* connection.next("command_completed")
      assert.strictEqual(other.payload.command_id, "c-other")
      assert.deepStrictEqual(sessions.state.calls, ["create:s-a", "create:s-b"])
      yield* Deferred.succeed(gate, undefined)
      const a = yield* connection.next("command_completed")
      const b = yield* connection.next("command_completed")
      assert.deepStrictEqual([a.payload.command_id, b.payload.command_id], ["c-create", "c-delete"])
      assert.deepStrictEqual(sessions.state.calls, ["create:s-a", "create:s-b", "delete:s-a"])
    }))

  it.effect("a command that timed out waiting does not let the next one overtake the running one", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      const gate = yield* Deferred.make<void>()
      sessions.state.gates.set("s-a", gate)
      yield* queue.submit(create("s-a", "c-1"))
      yield* queue.submit(command({ action: "delete_session", args: { session_id: "s-a" } }, "c-2", new Date(10_000).toISOString()))
      yield* queue.submit(del("s-a", "c-3"))
      yield* settle
      yield* TestClock.adjust("10 seconds")
      const timedOut = yield* connection.next("command_failed")
      assert.strictEqual(timedOut.payload.command_id, "c-2")
      yield* settle
      assert.deepStrictEqual(sessions.state.calls, ["create:s-a"]) // c-3 still waits for c-1
      sessions.state.gates.delete("s-a")
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual((yield* connection.next("command_completed")).payload.command_id, "c-1")
      assert.strictEqual((yield* connection.next("command_completed")).payload.command_id, "c-3")
      assert.deepStrictEqual(sessions.state.calls, ["create:s-a", "delete:s-a"])
    }))

  it.effect("refuses create_session beyond MAX_SESSIONS, counting creates in flight; existing sessions are adopted", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup({ maxSessions: 2 })
      sessions.state.sessions.set("s-old", status("s-old"))
      const gate = yield* Deferred.make<void>()
      sessions.state.gates.set("s-new", gate)
      yield* queue.submit(create("s-new", "c-new"))
      yield* settle
      yield* queue.submit(create("s-over", "c-over"))
      const refused = yield* connection.next("command_failed")
      assert.strictEqual(refused.payload.command_id, "c-over")
      assert.strictEqual(refused.payload.action, "create_session")
      assert.strictEqual(refused.payload.error.code, "capacity_exceeded")
      assert.match(refused.payload.error.message, /MAX_SESSIONS/)
      yield* queue.submit(create("s-old", "c-adopt"))
      const adopted = yield* connection.next("command_completed")
      assert.strictEqual(adopted.payload.command_id, "c-adopt")
      yield* Deferred.succeed(gate, undefined)
      const created = yield* connection.next("command_completed")
      assert.strictEqual(created.payload.command_id, "c-new")
      assert.isFalse(sessions.state.calls.includes("create:s-over"))
    }))

  it.effect("hibernate_session frees the slot; resume_session takes one under MAX_SESSIONS, in order with the session's other commands", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup({ maxSessions: 1 })
      yield* queue.submit(create("s-h", "c-create"))
      assert.strictEqual((yield* connection.next("command_completed")).payload.command_id, "c-create")
      yield* queue.submit(command({ action: "hibernate_session", args: { session_id: "s-h" } }, "c-hib"))
      const hib = yield* connection.next("command_completed")
      assert.deepStrictEqual(hib.payload.result, { action: "hibernate_session", session_id: "s-h" })
      assert.isFalse(sessions.state.sessions.has("s-h"))
      // The freed slot goes to another session; the resume is refused until it is free again.
      yield* queue.submit(create("s-other", "c-other"))
      assert.strictEqual((yield* connection.next("command_completed")).payload.command_id, "c-other")
      yield* queue.submit(command({ action: "resume_session", args: { session_id: "s-h", spec } }, "c-res1"))
      const full = yield* connection.next("command_failed")
      assert.deepStrictEqual([full.payload.action, full.payload.error.code], ["resume_session", "capacity_exceeded"])
      yield* queue.submit(del("s-other", "c-del"))
      yield* connection.next("command_completed")
      yield* queue.submit(command({ action: "resume_session", args: { session_id: "s-h", spec } }, "c-res2"))
      const resumed = yield* connection.next("command_completed")
      assert.strictEqual(resumed.payload.result.action, "resume_session")
      assert.strictEqual(resumed.payload.result.session.session_id, "s-h")
      assert.deepStrictEqual(sessions.state.calls, ["create:s-h", "hibernate:s-h", "create:s-other", "delete:s-other", "resume:s-h"])
    }))

  it.effect("maps SessionStore and TunnelPool errors to command error codes", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions, tunnels } = yield* setup()
      const cases: Array<[string, ReturnType<typeof storeError>, string, boolean]> = [
        ["s-nf", storeError("NotFound"), "session_not_found", false],
        ["s-rj", storeError("Rejected", "spec.containers[0].image: Required value"), "kubernetes_rejected", false],
        ["s-fb", storeError("Forbidden"), "forbidden", false],
        ["s-un", storeError("Unavailable"), "kubernetes_unavailable", true],
        ["s-cx", storeError("CapacityExceeded"), "capacity_exceeded", true]
      ]
      for (const [id, error, code, retryable] of cases) {
        sessions.state.failures.set(id, error)
        yield* queue.submit(del(id))
        const failed = yield* connection.next("command_failed")
        assert.strictEqual(failed.payload.error.code, code)
        assert.strictEqual(failed.payload.error.retryable, retryable)
        assert.strictEqual(failed.payload.error.message, error.message)
      }
      const tunnelCases: Array<[number, ReturnType<typeof tunnelError>, string]> = [
        [1, tunnelError("SessionNotFound"), "session_not_found"],
        [2, tunnelError("SessionNotRunning"), "session_not_running"],
        [3, tunnelError("TooManyTunnels"), "capacity_exceeded"],
        [4, tunnelError("PortForwardFailed"), "tunnel_failed"],
        [5, tunnelError("DuplicateTunnel"), "invalid_command"]
      ]
      for (const [tunnel, error, code] of tunnelCases) {
        tunnels.state.failures.set(tunnel, error)
        yield* queue.submit(command({ action: "vnc_connect", args: { session_id: "s-v", tunnel_id: tunnel } }))
        const failed = yield* connection.next("command_failed")
        assert.strictEqual(failed.payload.action, "vnc_connect")
        assert.strictEqual(failed.payload.error.code, code)
      }
    }))

  it.effect("list_sessions, vnc_connect and vnc_disconnect", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions, tunnels } = yield* setup()
      sessions.state.sessions.set("s-1", status("s-1"))
      sessions.state.sessions.set("s-2", status("s-2", "creating"))
      yield* queue.submit(command({ action: "list_sessions", args: {} }))
      const listed = yield* connection.next("command_completed")
      assert.deepStrictEqual(listed.payload.result.sessions.map((s: { session_id: string }) => s.session_id), ["s-1", "s-2"])

      yield* queue.submit(command({ action: "vnc_connect", args: { session_id: "s-1", tunnel_id: 9, window: 65536 } }))
      const opened = yield* connection.next("command_completed")
      assert.deepStrictEqual(opened.payload.result, { action: "vnc_connect", tunnel_id: 9, window: 65536 })
      assert.strictEqual(tunnels.state.open.get(9), "s-1")

      yield* queue.submit(command({ action: "vnc_disconnect", args: { tunnel_id: 9 } }))
      const closed = yield* connection.next("command_completed")
      assert.deepStrictEqual(closed.payload.result, { action: "vnc_disconnect", tunnel_id: 9 })
      assert.deepStrictEqual(tunnels.state.closed, [{ tunnelId: 9, reason: "disconnect" }])
    }))

  it.effect("an outcome produced while disconnected is sent when the command is re-delivered", () =>
    Effect.gen(function*() {
      const { queue, connection } = yield* setup()
      yield* connection.setConnected(false)
      yield* queue.submit(create("s-a", "c-1"))
      yield* settle
      assert.strictEqual(connection.sent.length, 0)
      yield* connection.setConnected(true)
      yield* queue.submit(create("s-a", "c-1"))
      const done = yield* connection.next("command_completed")
      assert.strictEqual(done.payload.command_id, "c-1")
    }))

  it.effect(`outcomes of the last ${OUTCOME_MEMORY} commands are kept; older ones are forgotten`, () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      for (let i = 0; i <= OUTCOME_MEMORY; i++) {
        yield* queue.submit(del("s-x", `old-${i}`))
        yield* connection.next("command_completed")
      }
      const runs = () => sessions.state.calls.length
      assert.strictEqual(runs(), OUTCOME_MEMORY + 1)
      yield* queue.submit(del("s-x", `old-${OUTCOME_MEMORY}`)) // recent: answered from memory
      yield* connection.next("command_completed")
      assert.strictEqual(runs(), OUTCOME_MEMORY + 1)
      yield* queue.submit(del("s-x", "old-0")) // evicted: runs again (delete is idempotent)
      yield* connection.next("command_completed")
      assert.strictEqual(runs(), OUTCOME_MEMORY + 2)
    }), 60_000)

  it.effect("shutdown lets in-flight commands finish within the timeout and refuses new ones", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      const gate = yield* Deferred.make<void>()
      sessions.state.gates.set("s-a", gate)
      yield* queue.submit(create("s-a", "c-1"))
      yield* settle
      const stopping = yield* Effect.forkChild(queue.shutdown(Duration30s))
      yield* settle
      yield* queue.submit(create("s-b", "c-late"))
      const refused = yield* connection.next("command_failed")
      assert.strictEqual(refused.payload.error.code, "shutting_down")
      yield* TestClock.adjust("10 seconds")
      yield* Deferred.succeed(gate, undefined)
      const done = yield* connection.next("command_completed")
      assert.strictEqual(done.payload.command_id, "c-1")
      yield* Fiber.join(stopping)
    }))

  it.effect("shutdown fails commands still running after the timeout with shutting_down", () =>
    Effect.gen(function*() {
      const { queue, connection, sessions } = yield* setup()
      sessions.state.gates.set("s-a", yield* Deferred.make<void>())
      yield* queue.submit(create("s-a", "c-1"))
      yield* settle
      const stopping = yield* Effect.forkChild(queue.shutdown(Duration30s))
      yield* settle
      yield* TestClock.adjust("30 seconds")
      yield* Fiber.join(stopping)
      const failed = yield* connection.next("command_failed")
      assert.strictEqual(failed.payload.command_id, "c-1")
      assert.strictEqual(failed.payload.error.code, "shutting_down")
      assert.strictEqual(yield* queue.inFlight, 0)
      assert.strictEqual(connection.sent.filter((m) => m.type === "command_failed").length, 1)
    }))
})

const Duration30s = Duration.seconds(30)
