// The agent link's read side over a real WebSocket: binary frames take the fast path only while the read loop
// waits, so every frame is handled in the order the agent sent it; frames the fast path declines, text frames and
// anything behind them come from `pull`; the socket is paused while too much waits; a close ends `pull`.
import { assert, describe, it } from "@effect/vitest"
import { waitFor } from "@streamspace/testbed"
import { Effect, Fiber } from "effect"
import { WebSocket, WebSocketServer } from "ws"
import { type Frame, makeLinkReader } from "../src/internal/hub/linkReader.ts"

/** A connected pair: the server side (read by the reader under test) and the client side (the "agent"). */
const pair = Effect.acquireRelease(
  Effect.promise(() =>
    new Promise<{ server: WebSocket; client: WebSocket; wss: WebSocketServer }>((resolve) => {
      const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 }, () => {
        const { port } = wss.address() as { port: number }
        const client = new WebSocket(`ws://127.0.0.1:${port}/`)
        const server = new Promise<WebSocket>((r) => wss.once("connection", r))
        client.once("open", () => void server.then((s) => resolve({ server: s, client, wss })))
      })
    })
  ),
  ({ client, wss }) => Effect.sync(() => {
    client.terminate()
    wss.close()
  })
)

const label = (f: Frame) => (typeof f === "string" ? f : `bin:${Buffer.from(f).toString("utf8")}`)

describe("LinkReader", () => {
  it.live("frames are handled in the order sent, binary ones on the fast path while the loop waits", () =>
    Effect.scoped(Effect.gen(function*() {
      const { server, client } = yield* pair
      const reader = yield* makeLinkReader(server)
      const handled: Array<string> = []
      const fast: Array<string> = []
      reader.fastPath((f) => {
        const text = Buffer.from(f).toString("utf8")
        if (text === "declined") return false
        fast.push(text)
        handled.push(`bin:${text}`)
        return true
      })
      const loop = yield* Effect.forkChild(Effect.forever(Effect.map(reader.pull, (frames) => frames.forEach((f) => handled.push(label(f))))))
      const sent = ["bin:a", "hello", "bin:b", "bin:declined", "bin:c", "world", "bin:d"]
      for (const s of sent) client.send(s.startsWith("bin:") ? Buffer.from(s.slice(4)) : s)
      yield* waitFor("every frame handled", Effect.sync(() => handled.length === sent.length))
      assert.deepStrictEqual(handled, sent)
      // The first one arrived while the loop waited, with nothing ahead of it.
      assert.include(fast, "a")
      assert.notInclude(fast, "declined")
      yield* Fiber.interrupt(loop)
    })))

  it.live("a close ends pull once the frames before it are read", () =>
    Effect.scoped(Effect.gen(function*() {
      const { server, client } = yield* pair
      const reader = yield* makeLinkReader(server)
      client.send("last words")
      client.close(1000)
      yield* waitFor("the close", Effect.sync(() => server.readyState === server.CLOSED))
      assert.deepStrictEqual(yield* reader.pull, ["last words"])
      assert.strictEqual((yield* Effect.flip(reader.pull))._tag, "LinkClosed")
    })))

  it.live("the socket is paused while more than 1 MiB waits for the loop, and resumed when it is read", () =>
    Effect.scoped(Effect.gen(function*() {
      const { server, client } = yield* pair
      const reader = yield* makeLinkReader(server)
      const chunk = "x".repeat(256 * 1024)
      for (let i = 0; i < 5; i++) client.send(chunk)
      yield* waitFor("paused", Effect.sync(() => server.isPaused))
      const frames = yield* reader.pull
      assert.isAbove(frames.length, 4)
      assert.isFalse(server.isPaused)
    })))

  it.live("a defect on the fast path ends the loop with it and drops the socket, as a failing fiber would", () =>
    Effect.scoped(Effect.gen(function*() {
      const { server, client } = yield* pair
      const reader = yield* makeLinkReader(server)
      reader.fastPath(() => {
        throw new Error("sink bug")
      })
      const loop = yield* Effect.forkChild(Effect.forever(reader.pull))
      yield* Effect.yieldNow
      client.send(Buffer.from("boom"))
      const exit = yield* Fiber.await(loop)
      assert.isTrue(exit._tag === "Failure" && String(exit.cause).includes("sink bug"))
      yield* waitFor("the socket dropped", Effect.sync(() => server.readyState === server.CLOSED))
    })))
})
