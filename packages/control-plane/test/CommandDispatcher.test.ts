// CommandDispatcher against a real hub and a fake agent over WebSockets: the lifecycle pending -> sent -> ack
// -> completed | failed, forward-only transitions, deadlines (TestClock), redelivery when the agent
// reconnects, and awaiting across a control-plane restart on the same store.
import { assert, layer } from "@effect/vitest"
import type { AgentId, CommandId, PayloadOf, SessionId } from "@streamspace/protocol"
import { Traceparent } from "@streamspace/protocol"
import { Effect, Exit, Fiber, Option, Schema, Scope } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { TestClock } from "effect/testing"
import { waitFor, within } from "@streamspace/testbed"
import type { CommandDispatcherShape } from "../src/CommandDispatcher.ts"
import { Store } from "../src/Store.ts"
import {
  connectAndHello,
  connectApproved,
  enrol,
  type FakeAgent,
  startControlPlane,
  withTestClock
} from "./support/fakeAgent.ts"

const id = (s: string) => s as AgentId
const deleteSession = (session: string) => ({ action: "delete_session" as const, args: { session_id: session as SessionId } })
const stateIs = (d: CommandDispatcherShape, cmd: CommandId, state: string) => Effect.map(d.get(cmd), (r) => r.state === state)
const completed = (cmd: string, session: string): PayloadOf<"command_completed"> => ({
  command_id: cmd as CommandId,
  result: { action: "delete_session", session_id: session as SessionId }
})

/**
 * Returns once the dispatcher has handled every report the agent sent before: it gets one agent's reports in order,
 * so the outcome of a fresh command sent after them comes last.
 */
const barrier = (d: CommandDispatcherShape, agent: FakeAgent, agentId: string) =>
  Effect.gen(function*() {
    const probe = yield* d.dispatch(id(agentId), { action: "list_sessions", args: {} })
    const cmd = yield* agent.next("command")
    assert.strictEqual(cmd.payload.command_id, probe.id)
    yield* agent.send("command_completed", { command_id: probe.id, result: { action: "list_sessions", sessions: [] } })
    yield* within(5000, "the barrier command", d.await(probe.id))
  })

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("CommandDispatcher", (it) => {
  it.effect("pending -> sent -> ack -> completed, with a deadline, a traceparent and every timestamp", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({})
      const { agent } = yield* connectApproved(cp, "dx-1")
      // Dispatched inside a caller's span (an API request): the command carries that trace.
      const [record, traceId] = yield* Effect.gen(function*() {
        const span = yield* Effect.currentSpan
        return [yield* cp.dispatcher.dispatch(id("dx-1"), deleteSession("s-1")), span.traceId] as const
      }).pipe(Effect.withSpan("POST /api/v1/sessions"))
      assert.strictEqual(record.state, "sent")
      assert.isDefined(record.sentAt)
      const cmd = (yield* agent.next("command")).payload
      assert.strictEqual(cmd.command_id, record.id)
      assert.strictEqual(cmd.action, "delete_session")
      assert.deepStrictEqual(cmd.args, { session_id: "s-1" })
      assert.strictEqual(cmd.deadline, record.deadline.toISOString())
      assert.strictEqual(record.deadline.getTime() - record.createdAt.getTime(), 5 * 60_000)
      assert.isTrue(Schema.is(Traceparent)(cmd.traceparent))
      assert.isTrue(cmd.traceparent?.startsWith(`00-${traceId}-`))

      const waiting = yield* Effect.forkChild(cp.dispatcher.await(record.id))
      yield* agent.send("command_ack", { command_id: record.id })
      yield* waitFor("ack", stateIs(cp.dispatcher, record.id, "ack"))
      yield* agent.send("command_completed", completed(record.id, "s-1"))
      const outcome = yield* within(5000, "the outcome", Fiber.join(waiting))
      assert.strictEqual(outcome._tag, "Completed")
      if (outcome._tag === "Completed") assert.deepStrictEqual(outcome.result, { action: "delete_session", session_id: "s-1" as SessionId })
      const done = yield* cp.dispatcher.get(record.id)
      assert.strictEqual(done.state, "completed")
      assert.isDefined(done.ackedAt)
      assert.isDefined(done.completedAt)
      assert.isUndefined(done.failedAt)
      // await after the fact answers from the store.
      assert.strictEqual((yield* cp.dispatcher.await(record.id))._tag, "Completed")
    }).pipe(withTestClock))

  it.effect("failed outcomes are recorded with their error; later reports never move a command backwards", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({})
      const { agent } = yield* connectApproved(cp, "dx-2")
      const record = yield* cp.dispatcher.dispatch(id("dx-2"), deleteSession("s-2"))
      yield* agent.next("command")
      const error = { code: "kubernetes_unavailable" as const, message: "api server down", retryable: true }
      yield* agent.send("command_failed", { command_id: record.id, action: "delete_session", error })
      const outcome = yield* within(5000, "the outcome", cp.dispatcher.await(record.id))
      assert.strictEqual(outcome._tag, "Failed")
      if (outcome._tag === "Failed") assert.deepStrictEqual(outcome.error, error)
      // A late ack and a contradicting completion change nothing.
      yield* agent.send("command_ack", { command_id: record.id })
      yield* agent.send("command_completed", completed(record.id, "s-2"))
      yield* barrier(cp.dispatcher, agent, "dx-2")
      const after = yield* cp.dispatcher.get(record.id)
      assert.strictEqual(after.state, "failed")
      assert.isUndefined(after.ackedAt)
      assert.isUndefined(after.completedAt)
    }).pipe(withTestClock))

  it.effect("a command reported by an agent it was not sent to is ignored", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({})
      const a = yield* connectApproved(cp, "dx-3")
      const b = yield* connectApproved(cp, "dx-4")
      const record = yield* cp.dispatcher.dispatch(id("dx-3"), deleteSession("s-3"))
      yield* a.agent.next("command")
      yield* b.agent.send("command_completed", completed(record.id, "s-3"))
      yield* barrier(cp.dispatcher, b.agent, "dx-4")
      assert.strictEqual((yield* cp.dispatcher.get(record.id)).state, "sent")
    }).pipe(withTestClock))

  it.effect("the deadline fails a command as timeout (COMMAND_TIMEOUT or the per-command option)", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({ COMMAND_TIMEOUT: "2m", HEARTBEAT_INTERVAL: "1h" })
      const { agent } = yield* connectApproved(cp, "dx-5")
      const short = yield* cp.dispatcher.dispatch(id("dx-5"), deleteSession("s-5"), { timeout: "30 seconds" })
      const long = yield* cp.dispatcher.dispatch(id("dx-5"), deleteSession("s-6"))
      yield* agent.next("command")
      yield* agent.next("command")
      yield* agent.send("command_ack", { command_id: short.id })
      yield* waitFor("ack", stateIs(cp.dispatcher, short.id, "ack"))
      const waitShort = yield* Effect.forkChild(cp.dispatcher.await(short.id))
      yield* TestClock.adjust("29 seconds")
      assert.strictEqual((yield* cp.dispatcher.get(short.id)).state, "ack")
      yield* TestClock.adjust("1 second")
      const outcome = yield* within(5000, "the timeout", Fiber.join(waitShort))
      assert.strictEqual(outcome._tag, "Failed")
      if (outcome._tag === "Failed") {
        assert.strictEqual(outcome.error.code, "timeout")
        assert.isTrue(outcome.error.retryable)
      }
      assert.strictEqual((yield* cp.dispatcher.get(long.id)).state, "sent")
      yield* TestClock.adjust("90 seconds")
      yield* waitFor("the default timeout", stateIs(cp.dispatcher, long.id, "failed"))
      // A completion after the deadline is too late.
      yield* agent.send("command_completed", completed(short.id, "s-5"))
      yield* agent.send("command_ack", { command_id: long.id })
      yield* barrier(cp.dispatcher, agent, "dx-5")
      assert.strictEqual((yield* cp.dispatcher.get(short.id)).state, "failed")
      assert.strictEqual((yield* cp.dispatcher.get(long.id)).state, "failed")
    }).pipe(withTestClock))

  it.effect("commands for an agent that is away wait as pending and go out when it connects", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({})
      const credential = yield* enrol(cp, "dx-6")
      const record = yield* cp.dispatcher.dispatch(id("dx-6"), deleteSession("s-7"))
      assert.strictEqual(record.state, "pending")
      assert.isUndefined(record.sentAt)
      const { agent } = yield* connectAndHello(cp.url, credential, "dx-6")
      assert.strictEqual((yield* agent.next("command")).payload.command_id, record.id)
      yield* waitFor("sent", stateIs(cp.dispatcher, record.id, "sent"))
      // Unknown agents are refused outright.
      const err = yield* Effect.flip(cp.dispatcher.dispatch(id("nobody"), deleteSession("s-8")))
      assert.strictEqual(err.reason, "AgentUnavailable")
      assert.strictEqual((yield* Effect.flip(cp.dispatcher.get("cmd-missing" as CommandId))).reason, "NotFound")
    }).pipe(withTestClock))

  it.effect("unfinished commands are re-sent when the agent reconnects; the outcome is recorded once", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({})
      const { agent, credential } = yield* connectApproved(cp, "dx-7")
      const sentOnly = yield* cp.dispatcher.dispatch(id("dx-7"), deleteSession("s-9"))
      const acked = yield* cp.dispatcher.dispatch(id("dx-7"), deleteSession("s-10"))
      yield* agent.next("command")
      yield* agent.next("command")
      yield* agent.send("command_ack", { command_id: acked.id })
      yield* waitFor("ack", stateIs(cp.dispatcher, acked.id, "ack"))
      // The link drops before any outcome; the agent comes back.
      yield* agent.close()
      const again = yield* connectAndHello(cp.url, credential, "dx-7")
      const first = yield* again.agent.next("command")
      const second = yield* again.agent.next("command")
      // Both were created at the same (test) instant, so their order is the store's to choose.
      assert.deepStrictEqual([first.payload.command_id, second.payload.command_id].sort(), [sentOnly.id, acked.id].sort())
      const resent = first.payload.command_id === sentOnly.id ? first.payload : second.payload
      assert.strictEqual(resent.deadline, sentOnly.deadline.toISOString())
      yield* again.agent.send("command_completed", completed(sentOnly.id, "s-9"))
      yield* again.agent.send("command_completed", completed(acked.id, "s-10"))
      yield* waitFor("both completed", Effect.map(Effect.all([cp.dispatcher.get(sentOnly.id), cp.dispatcher.get(acked.id)]), (rs) => rs.every((r) => r.state === "completed")))
      const at = (yield* cp.dispatcher.get(acked.id)).completedAt?.getTime()
      // The agent answers a duplicate delivery with its first result again: nothing changes.
      yield* again.agent.send("command_completed", completed(acked.id, "s-10"))
      yield* barrier(cp.dispatcher, again.agent, "dx-7")
      assert.strictEqual((yield* cp.dispatcher.get(acked.id)).completedAt?.getTime(), at)
      assert.strictEqual((yield* cp.dispatcher.get(acked.id)).state, "completed")
    }).pipe(withTestClock))

  it.effect("a reconnecting agent gets its own unfinished commands again: not finished ones, not another agent's", () =>
    Effect.gen(function*() {
      const cp = yield* startControlPlane({})
      const mine = yield* connectApproved(cp, "dx-20")
      const other = yield* connectApproved(cp, "dx-21")
      const done = yield* cp.dispatcher.dispatch(id("dx-20"), deleteSession("s-21"))
      const open = yield* cp.dispatcher.dispatch(id("dx-20"), deleteSession("s-22"))
      const othersOpen = yield* cp.dispatcher.dispatch(id("dx-21"), deleteSession("s-23"))
      yield* mine.agent.next("command")
      yield* mine.agent.next("command")
      yield* other.agent.next("command")
      yield* mine.agent.send("command_completed", completed(done.id, "s-21"))
      yield* waitFor("completed", stateIs(cp.dispatcher, done.id, "completed"))
      yield* mine.agent.close()
      const again = yield* connectAndHello(cp.url, mine.credential, "dx-20")
      assert.strictEqual((yield* again.agent.next("command")).payload.command_id, open.id)
      // The next command it receives is the barrier's own: nothing else was re-sent to it.
      yield* barrier(cp.dispatcher, again.agent, "dx-20")
      assert.strictEqual((yield* cp.dispatcher.get(othersOpen.id)).state, "sent")
      assert.strictEqual((yield* cp.dispatcher.get(open.id)).state, "sent")
    }).pipe(withTestClock))

  it.effect("after a control-plane restart on the same PGlite DATA_DIR, open commands are awaited, re-sent and completed exactly once", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-dispatch-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const onDisk = Store.layerSettings({ databaseUrl: Option.none(), dataDir: dir, inMemory: false })
      const first = yield* Scope.make()
      const cp1 = yield* startControlPlane({}, onDisk).pipe(Scope.provide(first))
      const { agent, credential } = yield* connectApproved(cp1, "dx-8").pipe(Scope.provide(first))
      const acked = yield* cp1.dispatcher.dispatch(id("dx-8"), deleteSession("s-11"))
      yield* agent.next("command")
      yield* agent.send("command_ack", { command_id: acked.id })
      yield* waitFor("ack", stateIs(cp1.dispatcher, acked.id, "ack"))
      yield* agent.close()
      yield* waitFor("offline", Effect.map(cp1.hub.get(id("dx-8")), (v) => !Option.getOrThrow(v).connected))
      const pending = yield* cp1.dispatcher.dispatch(id("dx-8"), deleteSession("s-12"))
      assert.strictEqual(pending.state, "pending")
      yield* Scope.close(first, Exit.void)

      const cp2 = yield* startControlPlane({}, onDisk)
      const waitPending = yield* Effect.forkChild(cp2.dispatcher.await(pending.id))
      const waitAcked = yield* Effect.forkChild(cp2.dispatcher.await(acked.id))
      const back = yield* connectAndHello(cp2.url, credential, "dx-8")
      const ids = [(yield* back.agent.next("command")).payload.command_id, (yield* back.agent.next("command")).payload.command_id]
      assert.deepStrictEqual(ids, [acked.id, pending.id])
      yield* back.agent.send("command_completed", completed(pending.id, "s-12"))
      yield* back.agent.send("command_completed", completed(acked.id, "s-11"))
      assert.strictEqual((yield* within(10_000, "pending outcome", Fiber.join(waitPending)))._tag, "Completed")
      assert.strictEqual((yield* within(10_000, "acked outcome", Fiber.join(waitAcked)))._tag, "Completed")
      const before = yield* Effect.all([cp2.store.commands.get(pending.id), cp2.store.commands.get(acked.id)])
      // The agent answers a redelivery with its first result again: recorded once.
      yield* back.agent.send("command_completed", completed(pending.id, "s-12"))
      yield* back.agent.send("command_completed", completed(acked.id, "s-11"))
      yield* barrier(cp2.dispatcher, back.agent, "dx-8")
      const after = yield* Effect.all([cp2.store.commands.get(pending.id), cp2.store.commands.get(acked.id)])
      assert.deepStrictEqual(after, before)
      assert.isTrue(after.every((c) => c.state === "completed" && c.completedAt !== undefined))
      assert.deepStrictEqual(after.map((c) => c.attempts), [1, 2])
    }), 120_000)
})
