// AgentHub link behaviour over real WebSockets: heartbeats and the offline timeout (TestClock), a reconnect
// replacing the old socket without an offline flap, bad frames answered and survived, the frame limit (1009),
// version negotiation, hello first and its timeout, the drain flag, and ping timeouts.
import { assert, layer } from "@effect/vitest"
import type { AgentId } from "@streamspace/protocol"
import { encodeData, MAX_FRAME_BYTES, utf8Length } from "@streamspace/protocol"
import { Deferred, Effect, Option } from "effect"
import { TestClock } from "effect/testing"
import { waitFor } from "@streamspace/testbed"
import type { AgentHubShape } from "../src/AgentHub.ts"
import { Store } from "../src/Store.ts"
import {
  agentRow,
  collectEvents,
  connect,
  connectAndHello,
  connectApproved,
  enrol,
  heartbeatPayload,
  helloPayload,
  openTunnel,
  startHub,
  withTestClock
} from "./support/fakeAgent.ts"
import { BOOTSTRAP } from "./support/fakeAgent.ts"

const id = (s: string) => s as AgentId
const view = (hub: AgentHubShape, agentId: string) => Effect.map(hub.get(id(agentId)), Option.getOrThrow)
const statusIs = (hub: AgentHubShape, agentId: string, status: string) => Effect.map(view(hub, agentId), (v) => v.status === status)

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("AgentHub link", (it) => {
  it.effect("heartbeats update status, capacity and counts; missing HEARTBEAT_MISSED_LIMIT of them makes the agent offline", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ HEARTBEAT_INTERVAL: "30s", HEARTBEAT_MISSED_LIMIT: "3" })
      const { agent } = yield* connectApproved(cp, "hb-1")
      const events = yield* collectEvents(cp.hub)
      yield* agent.send("heartbeat", heartbeatPayload({ status: "warning", active_sessions: 3, active_tunnels: 2, capacity: { cpu: "4", memory: "8Gi", max_sessions: 5 } }))
      yield* waitFor("the warning status", statusIs(cp.hub, "hb-1", "warning"))
      const v = yield* view(cp.hub, "hb-1")
      assert.strictEqual(v.activeSessions, 3)
      assert.strictEqual(v.activeTunnels, 2)
      assert.deepStrictEqual(v.capacity, { cpu: "4", memory: "8Gi", max_sessions: 5 })
      // The row is written after the record is updated, off the read loop.
      yield* waitFor("the row", Effect.map(agentRow("hb-1"), (r) => r.status === "warning"))
      const row = yield* agentRow("hb-1")
      assert.strictEqual(row.status, "warning")
      assert.strictEqual(row.activeSessions, 3)
      assert.deepStrictEqual(row.capacity, { cpu: "4", memory: "8Gi", max_sessions: 5 })
      assert.isDefined(row.lastHeartbeat)

      // One heartbeat within every 90 s keeps it up.
      yield* TestClock.adjust("80 seconds")
      yield* agent.send("heartbeat", heartbeatPayload())
      yield* waitFor("the online status", statusIs(cp.hub, "hb-1", "online"))
      yield* TestClock.adjust("80 seconds")
      assert.strictEqual((yield* view(cp.hub, "hb-1")).status, "online")
      // Then silence: offline at 90 s after the last one.
      yield* TestClock.adjust("11 seconds")
      yield* waitFor("the offline status", statusIs(cp.hub, "hb-1", "offline"))
      assert.strictEqual((yield* agent.closed()).code, 4005)
      assert.strictEqual((yield* agentRow("hb-1")).status, "offline")
      const tags = events.map((e) => e._tag === "StatusChanged" ? `status:${e.status}` : e._tag)
      assert.deepStrictEqual(tags, ["status:warning", "status:online", "status:offline", "Disconnected"])
    }).pipe(withTestClock))

  it.effect("a heartbeat whose write is slow holds up neither the agent's frames nor its liveness; the latest beat is stored", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      let writes = 0
      const cp = yield* startHub({ HEARTBEAT_INTERVAL: "30s", HEARTBEAT_MISSED_LIMIT: "3" }, undefined, (store) => ({
        ...store,
        agents: {
          ...store.agents,
          heartbeat: (agentId, beat) => Deferred.await(gate).pipe(Effect.andThen(store.agents.heartbeat(agentId, beat)), Effect.ensuring(Effect.sync(() => void writes++)))
        }
      }))
      const { agent } = yield* connectApproved(cp, "hb-slow")
      const frames: Array<number> = []
      const tunnel = yield* openTunnel(cp.hub, agent, "hb-slow", {
        onFrame: (f) => void frames.push(f.kind === "data" ? f.payload.length : 0),
        onClosed: () => Effect.void,
        onAgentGone: Effect.void
      })
      yield* agent.send("heartbeat", heartbeatPayload({ active_sessions: 1 }))
      // The first write hangs; the socket is still read.
      yield* agent.sendRaw(encodeData(tunnel.id, new Uint8Array(3)))
      yield* waitFor("the data frame", Effect.sync(() => frames.length === 1))
      yield* waitFor("the record", Effect.map(view(cp.hub, "hb-slow"), (v) => v.activeSessions === 1))
      // Beats keep arriving every 80 s while no write finishes: the agent stays online well past 90 s.
      for (let i = 2; i <= 4; i++) {
        yield* TestClock.adjust("80 seconds")
        yield* agent.send("heartbeat", heartbeatPayload({ active_sessions: i }))
        yield* waitFor(`beat ${i}`, Effect.map(view(cp.hub, "hb-slow"), (v) => v.activeSessions === i))
      }
      assert.strictEqual((yield* view(cp.hub, "hb-slow")).status, "online")
      assert.strictEqual(writes, 0)
      // Once the store answers, the write it was doing and then one with the latest record.
      yield* Deferred.succeed(gate, undefined)
      yield* waitFor("the latest beat stored", Effect.map(agentRow("hb-slow"), (r) => r.activeSessions === 4))
      assert.isAtMost(writes, 2)
    }).pipe(withTestClock))

  it.effect("a second process with the agent's credential cannot displace a connection that answers pings: 4007, the old link stays", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const credential = yield* enrol(cp, "re-1")
      const first = yield* connectAndHello(cp.url, credential, "re-1")
      const events = yield* collectEvents(cp.hub)
      const second = yield* connect(cp.url, { token: credential })
      yield* second.send("hello", helloPayload("re-1"))
      const error = yield* second.next("error")
      assert.strictEqual(error.payload.code, "AlreadyConnected")
      const closed = yield* second.closed()
      assert.strictEqual(closed.code, 4007)
      assert.match(closed.reason, /already connected/)
      assert.isFalse(first.agent.isClosed())
      // The first link still carries commands, and nothing flapped.
      yield* cp.hub.send(id("re-1"), "drain", { draining: false })
      yield* first.agent.next("drain")
      assert.strictEqual((yield* view(cp.hub, "re-1")).status, "online")
      assert.deepStrictEqual(events.map((e) => e._tag), [])
    }).pipe(withTestClock))

  it.effect("a new connection replaces an old one that fails the liveness check (no pong within 3 s), without an offline flap", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ PING_INTERVAL: "1h", HEARTBEAT_INTERVAL: "1h" })
      const credential = yield* enrol(cp, "re-2")
      const first = yield* connectAndHello(cp.url, credential, "re-2", {}, { autoPong: false })
      const pinged = yield* Deferred.make<void>()
      first.agent.ws.once("ping", () => Deferred.doneUnsafe(pinged, Effect.void))
      const events = yield* collectEvents(cp.hub)
      const second = yield* connect(cp.url, { token: credential })
      yield* second.send("hello", helloPayload("re-2"))
      yield* Deferred.await(pinged)
      // Within the bound the newcomer waits; after it, the silent link loses.
      yield* TestClock.adjust("2 seconds")
      assert.isFalse(first.agent.isClosed())
      yield* TestClock.adjust("1 second")
      yield* second.next("welcome")
      const closed = yield* first.agent.closed()
      assert.strictEqual(closed.code, 4001)
      assert.match(closed.reason, /replaced/)
      yield* waitFor("the Connected event", Effect.sync(() => events.some((e) => e._tag === "Connected")))
      assert.deepStrictEqual(events.map((e) => e._tag), ["Connected"])
      assert.strictEqual((yield* view(cp.hub, "re-2")).status, "online")
      yield* cp.hub.send(id("re-2"), "drain", { draining: false })
      yield* second.next("drain")
      // Frames still in flight on the replaced socket are not taken as the agent's.
      assert.isFalse(events.some((e) => e._tag === "Disconnected" || (e._tag === "StatusChanged" && e.status === "offline")))
    }).pipe(withTestClock))

  it.effect("malformed and unknown frames get an error reply naming the problem and the frame; the connection stays up", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "bad-1")
      yield* agent.sendRaw("this is not json")
      const e1 = yield* agent.next("error")
      assert.strictEqual(e1.payload.code, "MalformedJson")
      yield* agent.sendRaw(JSON.stringify({ type: "teleport", id: "f-2", ts: new Date().toISOString(), payload: {} }))
      const e2 = yield* agent.next("error")
      assert.strictEqual(e2.payload.code, "UnknownType")
      assert.strictEqual(e2.payload.ref_id, "f-2")
      yield* agent.sendRaw(JSON.stringify({ type: "heartbeat", id: "f-3", ts: new Date().toISOString(), payload: { status: "sleepy" } }))
      const e3 = yield* agent.next("error")
      assert.strictEqual(e3.payload.code, "InvalidPayload")
      assert.strictEqual(e3.payload.ref_id, "f-3")
      yield* agent.sendRaw(JSON.stringify({ type: "welcome", id: "f-4", ts: new Date().toISOString(), payload: {} }))
      assert.strictEqual((yield* agent.next("error")).payload.code, "UnexpectedType")
      yield* agent.send("hello", helloPayload("bad-1"), "f-5")
      const e5 = yield* agent.next("error")
      assert.strictEqual(e5.payload.code, "UnexpectedType")
      yield* agent.sendRaw(new Uint8Array([1, 0]))
      assert.strictEqual((yield* agent.next("error")).payload.code, "TruncatedBinary")
      yield* agent.sendRaw(new Uint8Array([9, 0, 0, 0, 1, 42]))
      assert.strictEqual((yield* agent.next("error")).payload.code, "UnknownBinaryKind")
      // Still up, and a good frame still works.
      assert.isFalse(agent.isClosed())
      yield* agent.send("heartbeat", heartbeatPayload({ status: "error" }))
      yield* waitFor("the error status", statusIs(cp.hub, "bad-1", "error"))
    }).pipe(withTestClock))

  it.effect("a frame of exactly MAX_FRAME_BYTES is read; one byte more closes the socket with 1009", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "big-1")
      const frame = (bytes: number) => {
        const base = JSON.stringify({ type: "heartbeat", id: "big", ts: new Date().toISOString(), payload: { ...heartbeatPayload(), message: "" } })
        const text = base.replace(`"message":""`, `"message":"${"x".repeat(bytes - utf8Length(base))}"`)
        assert.strictEqual(utf8Length(text), bytes)
        return text
      }
      yield* agent.sendRaw(frame(MAX_FRAME_BYTES))
      yield* agent.send("heartbeat", heartbeatPayload({ status: "warning" }))
      yield* waitFor("the heartbeat after the large frame", statusIs(cp.hub, "big-1", "warning"))
      assert.deepStrictEqual(agent.pending(), [])
      yield* agent.sendRaw(frame(MAX_FRAME_BYTES + 1))
      assert.strictEqual((yield* agent.closed()).code, 1009)
      yield* waitFor("the offline status", statusIs(cp.hub, "big-1", "offline"))
    }).pipe(withTestClock))

  it.effect("no common protocol version: error NoCommonVersion, then close 4002", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const agent = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* agent.send("hello", helloPayload("ver-1", { protocol_versions: ["v7", "v9"] }), "h-1")
      const error = yield* agent.next("error")
      assert.strictEqual(error.payload.code, "NoCommonVersion")
      assert.strictEqual(error.payload.ref_id, "h-1")
      assert.strictEqual((yield* agent.closed()).code, 4002)
      assert.isTrue(Option.isNone(yield* cp.hub.get(id("ver-1"))))
    }).pipe(withTestClock))

  it.effect("hello must come first: other frames are answered, and no hello within the timeout closes with 4004", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const agent = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* agent.send("heartbeat", heartbeatPayload(), "early")
      const error = yield* agent.next("error")
      assert.strictEqual(error.payload.code, "UnexpectedType")
      assert.strictEqual(error.payload.ref_id, "early")
      yield* TestClock.adjust("11 seconds")
      assert.strictEqual((yield* agent.closed()).code, 4004)
      // A prompt agent is unaffected.
      const ok = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* ok.send("heartbeat", heartbeatPayload())
      yield* ok.next("error")
      yield* ok.send("hello", helloPayload("late-1"))
      assert.strictEqual((yield* ok.next("welcome")).payload.enrollment, "pending")
    }).pipe(withTestClock))

  it.effect("drain: the agent is told, the status says draining, and a reconnect keeps the flag", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent, credential } = yield* connectApproved(cp, "dr-1")
      const events = yield* collectEvents(cp.hub)
      const drained = yield* cp.hub.setDraining(id("dr-1"), true)
      assert.strictEqual(drained.status, "draining")
      assert.isTrue(drained.draining)
      assert.deepStrictEqual((yield* agent.next("drain")).payload, { draining: true })
      assert.isTrue((yield* agentRow("dr-1")).draining)
      // The agent loses its link and comes back.
      yield* agent.close()
      yield* waitFor("offline", statusIs(cp.hub, "dr-1", "offline"))
      const again = yield* connectAndHello(cp.url, credential, "dr-1")
      assert.isTrue(again.welcome.draining)
      assert.strictEqual((yield* cp.hub.setDraining(id("dr-1"), false)).status, "online")
      assert.deepStrictEqual((yield* again.agent.next("drain")).payload, { draining: false })
      const statuses = events.flatMap((e) => (e._tag === "StatusChanged" ? [e.status] : []))
      assert.deepStrictEqual(statuses, ["draining", "offline", "draining", "online"])
      // Draining an agent that is offline is remembered too.
      yield* again.agent.close()
      yield* waitFor("offline", statusIs(cp.hub, "dr-1", "offline"))
      assert.isTrue((yield* cp.hub.setDraining(id("dr-1"), true)).draining)
    }).pipe(withTestClock))

  it.effect("transport pings: a link that stops answering them is dropped after the next PING_INTERVAL", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ PING_INTERVAL: "20s", HEARTBEAT_INTERVAL: "1h" })
      const { agent } = yield* connectApproved(cp, "ping-1", { autoPong: false })
      yield* TestClock.adjust("20 seconds")
      assert.strictEqual((yield* view(cp.hub, "ping-1")).status, "online")
      yield* TestClock.adjust("20 seconds")
      yield* waitFor("offline", statusIs(cp.hub, "ping-1", "offline"))
      assert.strictEqual((yield* agent.closed()).code, 1006)
    }).pipe(withTestClock))
})
