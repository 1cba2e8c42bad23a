// AgentHub tunnels: opened with a `vnc_connect` command frame that never enters the durable command log,
// binary frames routed to the sink of their tunnel (dropped and counted otherwise), `vnc_closed` and the
// agent's departure told to the sink, `vnc_disconnect` when the tunnel's scope closes (also for a viewer that
// left before the agent opened it), and sends held back while the agent does not read.
import { assert, layer } from "@effect/vitest"
import type { AgentId, BinaryFrame, PayloadOf, SessionId, TunnelId } from "@streamspace/protocol"
import { creditThreshold, decodeBinary, DEFAULT_LINK_WINDOW_BYTES, encodeData, encodeLinkWindow, encodeWindow, MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { Effect, Exit, Fiber, Scope } from "effect"
import { waitFor, within } from "@streamspace/testbed"
import type { TunnelSink } from "../src/AgentHub.ts"
import { Store } from "../src/Store.ts"
import { BOOTSTRAP, connectAndHello, connectApproved, openTunnel, startHub, withTestClock } from "./support/fakeAgent.ts"

const id = (s: string) => s as AgentId
const tid = (n: number) => n as TunnelId

const recordingSink = () => {
  const frames: Array<BinaryFrame> = []
  const closed: Array<PayloadOf<"vnc_closed">> = []
  let gone = 0
  const sink: TunnelSink = {
    onFrame: (f) => void frames.push(f.kind === "data" ? { ...f, payload: f.payload.slice() } : f),
    onClosed: (c) => Effect.sync(() => void closed.push(c)),
    onAgentGone: Effect.sync(() => void gone++)
  }
  return { sink, frames, closed, gone: () => gone }
}

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("AgentHub tunnels", (it) => {
  it.effect("binary frames go to the sink of their tunnel; unknown tunnels are dropped and counted", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "tun-1")
      const a = recordingSink()
      const b = recordingSink()
      const scopeA = yield* Scope.make()
      const ta = yield* openTunnel(cp.hub, agent, "tun-1", a.sink).pipe(Scope.provide(scopeA))
      const tb = yield* openTunnel(cp.hub, agent, "tun-1", b.sink)
      assert.notStrictEqual(ta.id, tb.id)
      const unknown = tid(ta.id + tb.id + 1)
      yield* agent.sendRaw(encodeData(ta.id, new Uint8Array([1, 2, 3])))
      yield* agent.sendRaw(encodeWindow(tb.id, 4096))
      yield* agent.sendRaw(encodeData(unknown, new Uint8Array([9])))
      yield* waitFor("both frames", Effect.sync(() => a.frames.length === 1 && b.frames.length === 1))
      assert.deepStrictEqual(a.frames[0], { kind: "data", tunnelId: ta.id, payload: new Uint8Array([1, 2, 3]) })
      assert.deepStrictEqual(b.frames[0], { kind: "window", tunnelId: tb.id, credit: 4096 })
      yield* waitFor("the dropped frame", Effect.map(cp.hub.droppedFrames, (n) => n === 1))

      // Once its scope closes the sink gets nothing more, and the agent is told to close the tunnel.
      yield* Scope.close(scopeA, Exit.void)
      const disconnect = (yield* agent.next("command")).payload
      assert.deepStrictEqual([disconnect.action, disconnect.args], ["vnc_disconnect", { tunnel_id: ta.id }])
      yield* agent.sendRaw(encodeData(ta.id, new Uint8Array([4])))
      yield* waitFor("the second dropped frame", Effect.map(cp.hub.droppedFrames, (n) => n === 2))
      assert.strictEqual(a.frames.length, 1)

      // Frames the other way.
      yield* tb.send(encodeData(tb.id, new Uint8Array([5, 6])))
      assert.deepStrictEqual([...(yield* agent.nextBinary())], [...encodeData(tb.id, new Uint8Array([5, 6]))])

      // The agent leaves: the remaining sink hears about it, a closed one does not.
      yield* agent.close()
      yield* waitFor("onAgentGone", Effect.sync(() => b.gone() === 1))
      assert.strictEqual(a.gone(), 0)
      assert.strictEqual((yield* Effect.flip(tb.send(encodeData(tb.id, new Uint8Array([1]))))).reason, "NotConnected")
    }).pipe(withTestClock))

  it.effect("tunnel commands never enter the command log, and nothing about a tunnel is redelivered on reconnect", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent, credential } = yield* connectApproved(cp, "tun-log")
      const scope = yield* Scope.make()
      const t = recordingSink()
      yield* openTunnel(cp.hub, agent, "tun-log", t.sink).pipe(Scope.provide(scope))
      yield* Scope.close(scope, Exit.void)
      const disconnect = (yield* agent.next("command")).payload
      assert.strictEqual(disconnect.action, "vnc_disconnect")
      const store = yield* Store
      assert.deepStrictEqual(yield* store.commands.listUnfinished("tun-log"), [])
      assert.strictEqual((yield* Effect.flip(store.commands.get(disconnect.command_id))).reason._tag, "NotFound")
      // The agent reconnects without ever answering the disconnect: nothing is sent again.
      yield* agent.close()
      const again = yield* connectAndHello(cp.url, credential, "tun-log")
      yield* agent.closed()
      yield* cp.hub.send(id("tun-log"), "drain", { draining: false })
      yield* again.agent.next("drain")
      assert.deepStrictEqual(again.agent.pending().filter((m) => m.type === "command"), [])
    }).pipe(withTestClock))

  it.effect("vnc_closed reaches the tunnel's sink and no vnc_disconnect follows; a refused vnc_connect fails with the agent's code", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "tun-close")
      const scope = yield* Scope.make()
      const t = recordingSink()
      const tunnel = yield* openTunnel(cp.hub, agent, "tun-close", t.sink).pipe(Scope.provide(scope))
      yield* agent.send("vnc_closed", { tunnel_id: tunnel.id, session_id: "s-tunnel" as SessionId, reason: "pod_gone" })
      yield* waitFor("onClosed", Effect.sync(() => t.closed.length === 1))
      assert.strictEqual(t.closed[0]!.reason, "pod_gone")
      yield* Scope.close(scope, Exit.void)

      const refused = yield* Effect.forkChild(Effect.scoped(cp.hub.openTunnel(id("tun-close"), { sessionId: "s-x" as SessionId, window: 65536 }, recordingSink().sink)))
      const connect = (yield* agent.next("command")).payload
      assert.strictEqual(connect.action, "vnc_connect")
      yield* agent.send("command_failed", { command_id: connect.command_id, action: "vnc_connect", error: { code: "session_not_running", message: "pod is not ready", retryable: true } })
      const error = yield* Effect.flip(Fiber.join(refused))
      assert.deepStrictEqual([error.reason, error.code, error.message], ["TunnelRefused", "session_not_running", "pod is not ready"])
      // Neither the closed tunnel nor the refused one is closed on the agent.
      yield* cp.hub.send(id("tun-close"), "drain", { draining: false })
      yield* agent.next("drain")
      assert.deepStrictEqual(agent.pending().filter((m) => m.type === "command"), [])
    }).pipe(withTestClock))

  it.effect("a tunnel given up while vnc_connect is out is closed once the agent opens it", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "tun-late")
      const scope = yield* Scope.make()
      const opening = yield* Effect.forkChild(cp.hub.openTunnel(id("tun-late"), { sessionId: "s-x" as SessionId, window: 65536 }, recordingSink().sink).pipe(Scope.provide(scope)))
      const connect = (yield* agent.next("command")).payload
      if (connect.action !== "vnc_connect") throw new Error("expected vnc_connect")
      yield* Fiber.interrupt(opening)
      yield* Scope.close(scope, Exit.void)
      assert.deepStrictEqual(agent.pending().filter((m) => m.type === "command"), [])
      yield* agent.send("command_completed", { command_id: connect.command_id, result: { action: "vnc_connect", tunnel_id: connect.args.tunnel_id, window: 65536 } })
      const disconnect = (yield* agent.next("command")).payload
      assert.deepStrictEqual([disconnect.action, disconnect.args], ["vnc_disconnect", { tunnel_id: connect.args.tunnel_id }])
    }).pipe(withTestClock))

  it.effect("the hub credits the agent's link window as it reads data frames, delivered or dropped", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent, welcome } = yield* connectApproved(cp, "tun-link")
      assert.strictEqual(welcome.link_window, DEFAULT_LINK_WINDOW_BYTES)
      const a = recordingSink()
      const tunnel = yield* openTunnel(cp.hub, agent, "tun-link", a.sink)
      // Just under a quarter window: no credit yet. Credit frames cost nothing.
      const threshold = creditThreshold(DEFAULT_LINK_WINDOW_BYTES)
      const chunk = MAX_BINARY_PAYLOAD_BYTES
      const frames = Math.ceil(threshold / chunk)
      for (let i = 0; i < frames - 1; i++) yield* agent.sendRaw(encodeData(tunnel.id, new Uint8Array(chunk)))
      yield* agent.sendRaw(encodeWindow(tunnel.id, 4096))
      // The last one goes to a tunnel nobody listens on: dropped, but off the socket all the same.
      yield* agent.sendRaw(encodeData(tid(tunnel.id + 1), new Uint8Array(chunk)))
      const credit = decodeBinary(yield* agent.nextBinary())
      assert.deepStrictEqual(credit._tag === "Success" ? credit.success : credit, { kind: "link_window", credit: frames * chunk })
      assert.strictEqual(a.frames.length, frames)
      // Link credit only flows to the agent: one from the agent is answered with an error.
      yield* agent.sendRaw(encodeLinkWindow(1000))
      assert.strictEqual((yield* agent.next("error")).payload.code, "UnexpectedType")
    }).pipe(withTestClock))

  it.effect("AGENT_LINK_WINDOW sets the window announced and the credit batch", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ AGENT_LINK_WINDOW: String(256 * 1024) })
      const { agent, welcome } = yield* connectApproved(cp, "tun-link-2")
      assert.strictEqual(welcome.link_window, 256 * 1024)
      // A quarter of 256 KiB is one maximal frame: credit comes back after each.
      yield* agent.sendRaw(encodeData(tid(3), new Uint8Array(MAX_BINARY_PAYLOAD_BYTES)))
      const credit = decodeBinary(yield* agent.nextBinary())
      assert.deepStrictEqual(credit._tag === "Success" ? credit.success : credit, { kind: "link_window", credit: MAX_BINARY_PAYLOAD_BYTES })
    }).pipe(withTestClock))

  it.effect("a pending agent gets no tunnel and its frames reach no sink", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, "tun-2")
      const s = recordingSink()
      const refused = yield* Effect.flip(Effect.scoped(cp.hub.openTunnel(id("tun-2"), { sessionId: "s-x" as SessionId, window: 65536 }, s.sink)))
      assert.strictEqual(refused.reason, "NotApproved")
      yield* agent.sendRaw(encodeData(tid(1), new Uint8Array([1])))
      yield* waitFor("the dropped frame", Effect.map(cp.hub.droppedFrames, (n) => n === 1))
      assert.strictEqual(s.frames.length, 0)
      assert.deepStrictEqual(agent.pending().filter((m) => m.type === "command"), [])
    }).pipe(withTestClock))

  it.effect("a tunnel's sends wait while the agent does not read, and deliver everything in order once it does", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "tun-3")
      const tunnel = yield* openTunnel(cp.hub, agent, "tun-3", recordingSink().sink)
      const total = 256 // 16 MiB: well over the kernel buffers on loopback (about 4.5 MiB here) plus the hub's high-water mark
      const chunk = new Uint8Array(MAX_BINARY_PAYLOAD_BYTES)
      let sent = 0
      agent.ws.pause()
      const sender = yield* Effect.forkChild(
        Effect.gen(function*() {
          for (let i = 0; i < total; i++) {
            chunk[0] = i & 0xff
            yield* tunnel.send(encodeData(tunnel.id, chunk))
            sent++
          }
        })
      )
      // Wait until the sender stalls: no progress over 20 consecutive polls.
      let last = -1
      let still = 0
      yield* waitFor(
        "the sender to stall",
        Effect.sync(() => {
          still = sent === last ? still + 1 : 0
          last = sent
          return still >= 20
        }),
        { timeout: 10_000 }
      )
      assert.isBelow(sent, total, "the tunnel's send did not wait for the reader")
      assert.isAbove(sent, 0)
      agent.ws.resume()
      yield* within(20_000, "the sender to finish", Fiber.join(sender))
      for (let i = 0; i < total; i++) {
        const frame = yield* agent.nextBinary(10_000)
        assert.strictEqual(frame.length, MAX_BINARY_PAYLOAD_BYTES + 5)
        assert.strictEqual(frame[5], i & 0xff)
      }
    }).pipe(withTestClock))
})
