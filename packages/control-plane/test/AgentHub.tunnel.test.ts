// AgentHub binary frames: routed to the sink registered for (agent, tunnel), dropped and counted otherwise,
// sinks told when the agent goes away, and sendBinary held back while the agent does not read.
import { assert, layer } from "@effect/vitest"
import type { AgentId, BinaryFrame, TunnelId } from "@streamspace/protocol"
import { creditThreshold, decodeBinary, DEFAULT_LINK_WINDOW_BYTES, encodeData, encodeLinkWindow, encodeWindow, MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { Effect, Fiber, Scope } from "effect"
import type { TunnelSink } from "../src/AgentHub.ts"
import { Store } from "../src/Store.ts"
import { BOOTSTRAP, connectAndHello, connectApproved, eventually, startHub, withTestClock, within } from "./support/fakeAgent.ts"

const id = (s: string) => s as AgentId
const tid = (n: number) => n as TunnelId

const recordingSink = () => {
  const frames: Array<BinaryFrame> = []
  let gone = 0
  const sink: TunnelSink = {
    onFrame: (f) => Effect.sync(() => void frames.push(f.kind === "data" ? { ...f, payload: f.payload.slice() } : f)),
    onAgentGone: Effect.sync(() => void gone++)
  }
  return { sink, frames, gone: () => gone }
}

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("AgentHub tunnels", (it) => {
  it.effect("binary frames go to the sink of their tunnel; unknown tunnels are dropped and counted", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "tun-1")
      const a = recordingSink()
      const b = recordingSink()
      const scopeA = yield* Scope.make()
      yield* cp.hub.registerTunnel(id("tun-1"), tid(7), a.sink).pipe(Scope.provide(scopeA))
      yield* cp.hub.registerTunnel(id("tun-1"), tid(8), b.sink)
      yield* agent.sendRaw(encodeData(tid(7), new Uint8Array([1, 2, 3])))
      yield* agent.sendRaw(encodeWindow(tid(8), 4096))
      yield* agent.sendRaw(encodeData(tid(9), new Uint8Array([9])))
      yield* eventually("both frames", Effect.sync(() => a.frames.length === 1 && b.frames.length === 1))
      assert.deepStrictEqual(a.frames[0], { kind: "data", tunnelId: tid(7), payload: new Uint8Array([1, 2, 3]) })
      assert.deepStrictEqual(b.frames[0], { kind: "window", tunnelId: tid(8), credit: 4096 })
      yield* eventually("the dropped frame", Effect.map(cp.hub.droppedFrames, (n) => n === 1))

      // Once its scope closes the sink gets nothing more.
      yield* Scope.close(scopeA, undefined as never)
      yield* agent.sendRaw(encodeData(tid(7), new Uint8Array([4])))
      yield* eventually("the second dropped frame", Effect.map(cp.hub.droppedFrames, (n) => n === 2))
      assert.strictEqual(a.frames.length, 1)

      // Frames the other way.
      yield* cp.hub.sendBinary(id("tun-1"), encodeData(tid(8), new Uint8Array([5, 6])))
      assert.deepStrictEqual([...(yield* agent.nextBinary())], [...encodeData(tid(8), new Uint8Array([5, 6]))])

      // The agent leaves: the remaining sink hears about it, a closed one does not.
      yield* agent.close()
      yield* eventually("onAgentGone", Effect.sync(() => b.gone() === 1))
      assert.strictEqual(a.gone(), 0)
      assert.strictEqual((yield* Effect.flip(cp.hub.sendBinary(id("tun-1"), encodeData(tid(8), new Uint8Array([1]))))).reason, "NotConnected")
    }).pipe(withTestClock))

  it.effect("the hub credits the agent's link window as it reads data frames, delivered or dropped", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent, welcome } = yield* connectApproved(cp, "tun-link")
      assert.strictEqual(welcome.link_window, DEFAULT_LINK_WINDOW_BYTES)
      const a = recordingSink()
      yield* cp.hub.registerTunnel(id("tun-link"), tid(7), a.sink)
      // Just under a quarter window: no credit yet. Credit frames cost nothing.
      const threshold = creditThreshold(DEFAULT_LINK_WINDOW_BYTES)
      const chunk = MAX_BINARY_PAYLOAD_BYTES
      const frames = Math.ceil(threshold / chunk)
      for (let i = 0; i < frames - 1; i++) yield* agent.sendRaw(encodeData(tid(7), new Uint8Array(chunk)))
      yield* agent.sendRaw(encodeWindow(tid(7), 4096))
      // The last one goes to a tunnel nobody listens on: dropped, but off the socket all the same.
      yield* agent.sendRaw(encodeData(tid(9), new Uint8Array(chunk)))
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

  it.effect("frames from a pending agent reach no sink", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, "tun-2")
      const s = recordingSink()
      yield* cp.hub.registerTunnel(id("tun-2"), tid(1), s.sink)
      yield* agent.sendRaw(encodeData(tid(1), new Uint8Array([1])))
      yield* eventually("the dropped frame", Effect.map(cp.hub.droppedFrames, (n) => n === 1))
      assert.strictEqual(s.frames.length, 0)
      assert.strictEqual((yield* Effect.flip(cp.hub.sendBinary(id("tun-2"), encodeData(tid(1), new Uint8Array([1]))))).reason, "NotApproved")
    }).pipe(withTestClock))

  it.effect("sendBinary waits while the agent does not read, and delivers everything in order once it does", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "tun-3")
      const total = 256 // 16 MiB: well over the kernel buffers on loopback (about 4.5 MiB here) plus the hub's high-water mark
      const chunk = new Uint8Array(MAX_BINARY_PAYLOAD_BYTES)
      let sent = 0
      agent.ws.pause()
      const sender = yield* Effect.forkChild(
        Effect.gen(function*() {
          for (let i = 0; i < total; i++) {
            chunk[0] = i & 0xff
            yield* cp.hub.sendBinary(id("tun-3"), encodeData(tid(3), chunk))
            sent++
          }
        })
      )
      // Wait until the sender stalls: no progress over 20 consecutive polls.
      let last = -1
      let still = 0
      yield* eventually(
        "the sender to stall",
        Effect.sync(() => {
          still = sent === last ? still + 1 : 0
          last = sent
          return still >= 20
        }),
        10_000
      )
      assert.isBelow(sent, total, "sendBinary did not wait for the reader")
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
