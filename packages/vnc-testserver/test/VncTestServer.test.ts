// The Effect face of the server: the scoped layer, its state, its log lines and its errors; and the
// RfbClient over a WebSocket byte stream (how agent and control-plane tests read sessions through tunnels).
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger } from "effect"
import * as net from "node:net"
import { createWebSocketStream, WebSocket } from "ws"
import { BACKGROUND } from "../src/internal/Desktop.ts"
import { RfbClient, VncTestServer } from "../src/index.ts"
import { startBridge } from "./bridge.ts"
import { connect, rawConnect, startServer } from "./helpers.ts"
import { waitFor, waitForPromise } from "@streamspace/testbed"

const captureLogs = () => {
  const lines: Array<{ level: string; message: string }> = []
  const logger = Logger.make((o) => {
    lines.push({ level: o.logLevel, message: [o.message].flat().map(String).join(" ") })
  })
  return { lines, layer: Logger.layer([logger]) }
}

const refused = (port: number) =>
  new Promise<boolean>((resolve) => {
    const s = net.connect(port, "127.0.0.1")
    s.on("connect", () => {
      s.destroy()
      resolve(false)
    })
    s.on("error", () => resolve(true))
  })

describe("VncTestServer.layer", () => {
  it.live("listens on 127.0.0.1 while its scope is open and exposes what the desktop saw", () => {
    const logs = captureLogs()
    return Effect.gen(function*() {
      const port = yield* Effect.gen(function*() {
        const server = yield* VncTestServer
        assert.strictEqual(server.host, "127.0.0.1")
        assert.isAbove(server.port, 0)
        const client = yield* Effect.acquireRelease(
          Effect.promise(() => connect(server)),
          (c) => Effect.sync(() => c.close())
        )
        assert.strictEqual(client.name, "layer desktop")
        assert.deepStrictEqual([client.width, client.height], [200, 120])
        client.type("abc")
        client.click(50, 60)
        const state = yield* waitFor("input on the server", Effect.map(server.state, (s) => s.typedText === "abc" && s.clicks.length === 1 && s))
        assert.deepStrictEqual(state.clicks, [{ x: 50, y: 60, button: 1 }])
        assert.strictEqual(state.connections, 1)
        yield* server.setServerCutText("hi")
        assert.strictEqual(yield* Effect.promise(() => client.waitForCutText()), "hi")
        // a bad viewer produces a warning through Effect's logger
        const raw = yield* Effect.promise(() => rawConnect(server))
        raw.socket.write("NOT RFB AT ALL")
        yield* Effect.promise(() => raw.waitClosed())
        yield* waitFor("the warning", Effect.sync(() => logs.lines.some((l) => l.level === "Warn" && /bad protocol version/.test(l.message))))
        return server.port
      }).pipe(Effect.provide(VncTestServer.layer({ width: 200, height: 120, name: "layer desktop" })), Effect.scoped)
      assert.isTrue(logs.lines.some((l) => l.level === "Info" && l.message === `listening on 127.0.0.1:${port}`))
      assert.isTrue(yield* Effect.promise(() => refused(port)), "the port is closed after the scope ends")
    }).pipe(Effect.provide(logs.layer))
  })

  it.live("fails with InvalidOptions for a bad size and ListenFailed for a taken port", () =>
    Effect.gen(function*() {
      const bad = yield* Effect.flip(Layer.build(VncTestServer.layer({ width: 0 })).pipe(Effect.scoped))
      assert.strictEqual(bad.reason, "InvalidOptions")
      const port = yield* Effect.gen(function*() {
        const first = yield* VncTestServer
        const taken = yield* Effect.flip(Layer.build(VncTestServer.layer({ port: first.port })).pipe(Effect.scoped))
        assert.strictEqual(taken.reason, "ListenFailed")
        return first.port
      }).pipe(Effect.provide(VncTestServer.layer()), Effect.scoped)
      assert.isAbove(port, 0)
    }).pipe(Effect.provide(captureLogs().layer)))
})

describe("RfbClient over a WebSocket", () => {
  it("reads the desktop through a WebSocket-to-TCP bridge", async () => {
    const server = await startServer({ password: "over-ws" })
    const bridge = await startBridge({ host: server.host, port: server.port, width: 320, height: 200 })
    try {
      const ws = new WebSocket(bridge.url.replace("http", "ws") + "/websockify")
      const client = await RfbClient.connect(createWebSocketStream(ws), { password: "over-ws" })
      await client.update(false)
      assert.deepStrictEqual(client.pixel(319, 199), [(BACKGROUND >> 16) & 255, (BACKGROUND >> 8) & 255, BACKGROUND & 255])
      client.type("ws")
      await waitForPromise("typed text", () => server.state().typedText === "ws")
      client.close()
      assert.isUndefined(await client.closed)
    } finally {
      await bridge.close()
      await server.close()
    }
  })
})
