// `as any` here reads a Result/Option value a test already asserted to be present.
import { assert, describe, it } from "@effect/vitest"
import { CloseCode, encodeData, encodeLinkWindow, encodeWindow, helloFingerprint, MAX_FRAME_BYTES } from "@streamspace/protocol"
import type { TunnelId } from "@streamspace/protocol"
import { Context, Deferred, Effect, Fiber, Layer, Logger, Option, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import { type AddressInfo, createServer as createNetServer, type Server, type Socket } from "node:net"
import { Connection } from "../src/Connection.ts"
import { fakeHello, makeMemoryCredentialStore, status } from "./support/Fakes.ts"
import { waitFor } from "@streamspace/testbed"
import { awaitStatus, baseEnv, configLayer, TOKEN } from "./support/harness.ts"
import * as TestControlPlane from "./support/TestControlPlane.ts"

const setup = (url: string, env: Record<string, string> = {}, savedCredential?: string) =>
  Effect.gen(function*() {
    const creds = yield* makeMemoryCredentialStore(savedCredential)
    const ctx = yield* Layer.build(Connection.layerWith(fakeHello()).pipe(Layer.provide([configLayer(baseEnv(url, env)), creds.layer])))
    return { connection: Context.get(ctx, Connection), creds }
  })

/** Waits until `count()` stops changing across 25 polls 2 ms apart (a sender that stalled), and returns it. */
const settled = (count: () => number) => {
  let last = -1
  let stable = 0
  return waitFor("the sender to stall", Effect.sync(() => {
    const n = count()
    stable = n === last ? stable + 1 : 0
    last = n
    return stable >= 25
  }), { interval: 2 }).pipe(Effect.map(() => count()))
}

describe("Connection", () => {
  it.effect("handshake: hello carries identity, capacity and inventory; welcome connects", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const creds = yield* makeMemoryCredentialStore()
      const ctx = yield* Layer.build(Connection.layerWith(fakeHello([status("s-one")])).pipe(Layer.provide([configLayer(baseEnv(cp.url)), creds.layer])))
      const connection = Context.get(ctx, Connection)
      const conn = yield* cp.nextConnection
      assert.strictEqual(conn.authorization, `Bearer ${TOKEN}`)
      assert.strictEqual(conn.protocol, "streamspace.v1")
      const hello = yield* conn.next("hello")
      assert.strictEqual(hello.payload.agent_id, "test-agent")
      assert.strictEqual(hello.payload.platform, "kubernetes")
      assert.strictEqual(hello.payload.region, "eu-test-1")
      assert.strictEqual(hello.payload.version, "0.1.0")
      assert.deepStrictEqual(hello.payload.protocol_versions, ["v1"])
      assert.deepStrictEqual(hello.payload.capacity, { cpu: "8000m", memory: "16Gi", max_sessions: 100 })
      assert.deepStrictEqual(hello.payload.sessions.map((s) => s.session_id), ["s-one"])
      yield* awaitStatus(connection.status, true)
      assert.isTrue(yield* connection.isConnected)
      // frames after welcome reach `incoming`
      yield* conn.send("ping", { nonce: "n1" })
      const first = yield* Stream.runHead(connection.incoming)
      assert.strictEqual(first._tag, "Some")
      assert.deepStrictEqual((first as any).value.payload, { nonce: "n1" })
    }))

  it.effect("malformed frames get an error reply naming the problem and the link stays up", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)

      yield* conn.sendRaw("not json")
      const e1 = yield* conn.next("error")
      assert.strictEqual(e1.payload.code, "MalformedJson")

      yield* conn.sendRaw(JSON.stringify({ type: "reboot", id: "f-2", ts: new Date().toISOString(), payload: {} }))
      const e2 = yield* conn.next("error")
      assert.strictEqual(e2.payload.code, "UnknownType")
      assert.strictEqual(e2.payload.ref_id, "f-2")

      yield* conn.sendRaw(JSON.stringify({ type: "command", id: "f-3", ts: new Date().toISOString(), payload: { action: "create_session" } }))
      const e3 = yield* conn.next("error")
      assert.strictEqual(e3.payload.code, "InvalidPayload")
      assert.strictEqual(e3.payload.ref_id, "f-3")

      yield* conn.sendRaw(new Uint8Array([1, 0]))
      const e4 = yield* conn.next("error")
      assert.strictEqual(e4.payload.code, "TruncatedBinary")

      yield* conn.sendRaw(new Uint8Array([9, 0, 0, 0, 1]))
      const e5 = yield* conn.next("error")
      assert.strictEqual(e5.payload.code, "UnknownBinaryKind")

      // still up: a valid binary frame arrives decoded
      yield* conn.sendRaw(encodeWindow(7 as TunnelId, 4096))
      const frame = yield* Stream.runHead(connection.incoming)
      assert.deepStrictEqual((frame as any).value, { kind: "window", tunnelId: 7, credit: 4096 })
      assert.isTrue(yield* connection.isConnected)
    }))

  it.effect("a frame over the limit closes with 1009 and the agent reconnects", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* conn.sendRaw(new Uint8Array(MAX_FRAME_BYTES + 1))
      const closed = yield* Deferred.await(conn.closed)
      assert.strictEqual(closed.code, 1009)
      yield* awaitStatus(connection.status, false)
      yield* TestClock.adjust("5 seconds") // first reconnect delay is at most RECONNECT_DELAY
      const again = yield* cp.nextConnection
      yield* again.next("hello")
      yield* awaitStatus(connection.status, true)
    }))

  it.effect("enrolment: pending -> credential saved -> reconnect with it -> approved", () =>
    Effect.gen(function*() {
      const credential = "per-agent-credential-abcdef0123456789"
      const cp = yield* TestControlPlane.make({ approved: [credential], bootstrap: ["bootstrap-token-0123456789"] })
      const { connection, creds } = yield* setup(cp.url, { AGENT_TOKEN: "bootstrap-token-0123456789" })
      const first = yield* cp.nextConnection
      assert.strictEqual(first.authorization, "Bearer bootstrap-token-0123456789")
      yield* first.next("hello")
      // pending: stays connected but not "connected" for commands and heartbeats
      assert.isFalse(yield* connection.isConnected)
      assert.strictEqual(first.ws.readyState, 1)
      yield* first.send("credential", { token: credential })
      const second = yield* cp.nextConnection
      assert.strictEqual(second.authorization, `Bearer ${credential}`)
      assert.strictEqual(creds.state.saved, credential)
      yield* awaitStatus(connection.status, true)
      assert.strictEqual((yield* Deferred.await(first.closed)).code, 1000)
    }))

  it.effect("a rotated credential is saved and used for the next connection, without dropping this one", () =>
    Effect.gen(function*() {
      const rotated = "rotated-credential-0123456789"
      const cp = yield* TestControlPlane.make({ approved: [TOKEN, rotated] })
      const { connection, creds } = yield* setup(cp.url)
      const first = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* first.send("credential", { token: rotated })
      yield* waitFor("credential saved", Effect.sync(() => creds.state.saved === rotated))
      assert.strictEqual(first.ws.readyState, 1)
      assert.isTrue(yield* connection.isConnected)
      yield* first.terminate
      yield* TestClock.adjust("5 seconds")
      const second = yield* cp.nextConnection
      assert.strictEqual(second.authorization, `Bearer ${rotated}`)
    }))

  it.effect("an unreadable CONTROL_PLANE_CA_FILE stops the layer with a message naming it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(setup("wss://127.0.0.1:1", { CONTROL_PLANE_CA_FILE: "/nonexistent/ca.crt" }))
      assert.include(error.message, "CONTROL_PLANE_CA_FILE=/nonexistent/ca.crt")
    }))

  it.effect("a saved credential takes precedence over AGENT_TOKEN", () =>
    Effect.gen(function*() {
      const saved = "saved-credential-0123456789"
      const cp = yield* TestControlPlane.make({ approved: [saved] })
      const { connection } = yield* setup(cp.url, {}, saved)
      const conn = yield* cp.nextConnection
      assert.strictEqual(conn.authorization, `Bearer ${saved}`)
      yield* awaitStatus(connection.status, true)
    }))

  it.effect("401 on upgrade: keeps retrying with backoff until the token is accepted", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ approved: [] })
      const { connection } = yield* setup(cp.url)
      yield* waitFor("first attempt", Effect.sync(() => cp.attempts.length === 1))
      assert.strictEqual(cp.attempts[0]!.status, 401)
      yield* TestClock.adjust("5 seconds")
      yield* waitFor("second attempt", Effect.sync(() => cp.attempts.length === 2))
      assert.strictEqual(cp.attempts[1]!.status, 401)
      cp.approve(TOKEN)
      yield* TestClock.adjust("10 seconds")
      yield* awaitStatus(connection.status, true)
      assert.strictEqual(cp.attempts.at(-1)!.status, 101)
    }))

  it.effect("a blackholed link (no pongs) is dropped after PING_INTERVAL + PING_TIMEOUT and redialled", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ autoPong: false })
      const { connection } = yield* setup(cp.url, { PING_INTERVAL: "20s", PING_TIMEOUT: "10s" })
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      let pinged = false
      conn.ws.on("ping", () => {
        pinged = true
      })
      yield* TestClock.adjust("20 seconds")
      yield* waitFor("ping", Effect.sync(() => pinged))
      assert.strictEqual(conn.ws.readyState, 1)
      yield* TestClock.adjust("10 seconds")
      yield* Deferred.await(conn.closed)
      yield* awaitStatus(connection.status, false)
      yield* TestClock.adjust("5 seconds")
      const again = yield* cp.nextConnection
      yield* again.next("hello")
    }))

  it.effect("replaced by another connection with the same id (4001): redials soon (jittered 0.5-1.5 x RECONNECT_DELAY), not after MAX_RECONNECT_DELAY", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url, { RECONNECT_DELAY: "2s", MAX_RECONNECT_DELAY: "5m" })
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* conn.close(CloseCode.replaced, "replaced by a newer connection of the same agent")
      yield* awaitStatus(connection.status, false)
      const attempts = cp.attempts.length
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(cp.attempts.length, attempts, "no redial before 0.5 x RECONNECT_DELAY")
      yield* TestClock.adjust("2001 millis")
      const again = yield* cp.nextConnection
      yield* again.next("hello")
    }))

  it.effect("goaway (the control-plane replica is stopping): closes the link and redials at once, with no backoff, even after earlier losses", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url, { RECONNECT_DELAY: "30s", MAX_RECONNECT_DELAY: "5m" })
      let conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      for (let i = 0; i < 3; i++) {
        yield* conn.send("goaway", { reason: "control plane replica stopping" })
        // The agent closes this link itself (the control plane would close it too, right after).
        const closed = yield* Deferred.await(conn.closed)
        assert.strictEqual(closed.code, CloseCode.normal)
        // No TestClock adjustment: a redial that waited for any backoff would never come.
        conn = yield* cp.nextConnection
        yield* conn.next("hello")
        yield* awaitStatus(connection.status, true)
      }
    }))

  it.effect("a close with CloseCode.reconnect (4307, its goaway lost or not understood) also redials at once", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url, { RECONNECT_DELAY: "30s", MAX_RECONNECT_DELAY: "5m" })
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* conn.close(CloseCode.reconnect, "this replica is stopping")
      const again = yield* cp.nextConnection
      yield* again.next("hello")
    }))

  it.effect("refused because another connection with the same id is alive (AlreadyConnected, 4007): retries soon, again and again", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ autoWelcome: false })
      yield* setup(cp.url, { RECONNECT_DELAY: "2s", MAX_RECONNECT_DELAY: "5m" })
      let conn = yield* cp.nextConnection
      for (let i = 0; i < 6; i++) {
        const hello = yield* conn.next("hello")
        yield* conn.send("error", { code: "AlreadyConnected", message: "agent is already connected from another socket", ref_id: hello.id })
        yield* conn.close(CloseCode.alreadyConnected, "already connected")
        // Each retry within 1.5 x RECONNECT_DELAY (3 s), however many came before (no growth towards MAX_RECONNECT_DELAY).
        let advanced = 0
        conn = yield* waitFor(`retry ${i + 1}`, Effect.gen(function*() {
          const next = yield* Queue.poll(cp.connections)
          if (Option.isSome(next)) return next.value
          yield* TestClock.adjust("100 millis")
          advanced += 100
          return undefined
        }))
        assert.isAtMost(advanced, 3100)
      }
      yield* conn.next("hello")
    }))

  it.effect("an upgrade that is never answered is abandoned after PING_INTERVAL + PING_TIMEOUT and redialled", () =>
    Effect.gen(function*() {
      // A listener that accepts TCP and never answers: a blackholed link, or a control plane still starting.
      const sockets: Array<Socket> = []
      let dropped = 0
      const server = yield* Effect.acquireRelease(
        Effect.callback<Server>((resume) => {
          const s = createNetServer((socket) => {
            sockets.push(socket)
            socket.on("close", () => dropped++).resume() // reading, so the client's FIN is seen
          })
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) => Effect.sync(() => {
          for (const socket of sockets) socket.destroy()
          s.close()
        })
      )
      const port = (server.address() as AddressInfo).port
      yield* setup(`ws://127.0.0.1:${port}`, { PING_INTERVAL: "20s", PING_TIMEOUT: "10s", RECONNECT_DELAY: "1s", MAX_RECONNECT_DELAY: "1s" })
      yield* waitFor("first dial", Effect.sync(() => sockets.length === 1))
      yield* TestClock.adjust("29 seconds")
      assert.strictEqual(dropped, 0, "still waiting for the upgrade before PING_INTERVAL + PING_TIMEOUT")
      assert.strictEqual(sockets.length, 1)
      yield* TestClock.adjust("1 second")
      yield* waitFor("the hung dial dropped", Effect.sync(() => dropped === 1))
      yield* TestClock.adjust("1 second") // the backoff waits at most RECONNECT_DELAY
      yield* waitFor("second dial", Effect.sync(() => sockets.length === 2))
    }))

  it.effect("pongs keep the link up", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url, { PING_INTERVAL: "20s", PING_TIMEOUT: "10s" })
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      let pings = 0
      conn.ws.on("ping", () => {
        pings++
      })
      for (let i = 1; i <= 3; i++) {
        yield* TestClock.adjust("20 seconds")
        yield* waitFor(`ping ${i}`, Effect.sync(() => pings === i))
        yield* TestClock.adjust("10 seconds")
      }
      assert.strictEqual(conn.ws.readyState, 1)
      assert.isTrue(yield* connection.isConnected)
    }))

  it.effect("close sends goodbye and closes with 1001, without reconnecting", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* connection.close("maintenance")
      const bye = yield* conn.next("goodbye")
      assert.strictEqual(bye.payload.reason, "maintenance")
      assert.strictEqual((yield* Deferred.await(conn.closed)).code, 1001)
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(cp.attempts.length, 1)
      const sent = yield* Effect.flip(connection.send("pong", { nonce: "x" }))
      assert.strictEqual(sent.reason, "NotConnected")
    }))

  it.effect("sendBinary waits while the socket is backed up, then delivers everything in order", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      const raw = (conn.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket
      raw.pause() // the control plane stops reading: TCP buffers fill, then ws.bufferedAmount grows
      const total = 400
      let sent = 0
      const sender = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < total; i++) {
          const chunk = new Uint8Array(64 * 1024)
          chunk[0] = i & 0xff
          chunk[1] = i >> 8
          yield* connection.sendBinary(chunk)
          sent++
        }
      }))
      // wait until the sender stalls (no progress across several polls) well before the end
      assert.isBelow(yield* settled(() => sent), total)
      raw.resume()
      yield* Fiber.join(sender)
      for (let i = 0; i < total; i++) {
        const got = yield* Queue.take(conn.binary)
        assert.strictEqual(got[0]! | (got[1]! << 8), i)
      }
    }))

  const tid = (n: number) => n as TunnelId
  const data = (tunnel: number, size: number, tag: number) => {
    const payload = new Uint8Array(size)
    payload[0] = tag
    return encodeData(tid(tunnel), payload)
  }

  it.effect("with a link window, data bytes in flight stay within it until the control plane credits the link", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ linkWindow: 128 * 1024 })
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      let sent = 0
      const sender = yield* Effect.forkChild(Effect.gen(function*() {
        for (let i = 0; i < 6; i++) {
          yield* connection.sendBinary(data(1, 64 * 1024, i))
          sent++
        }
      }))
      // Two 64 KiB frames fill the 128 KiB window; credit frames (no data) never count against it.
      assert.strictEqual(yield* settled(() => sent), 2)
      yield* connection.sendBinary(encodeWindow(tid(1), 1000))
      yield* conn.sendRaw(encodeLinkWindow(64 * 1024))
      assert.strictEqual(yield* settled(() => sent), 3)
      // More credit than the window is capped at the window: two more frames, not three.
      yield* conn.sendRaw(encodeLinkWindow(10 * 1024 * 1024))
      assert.strictEqual(yield* settled(() => sent), 5)
      yield* conn.sendRaw(encodeLinkWindow(64 * 1024))
      yield* Fiber.join(sender)
      const tags: Array<number> = []
      for (let i = 0; i < 7; i++) {
        const f = yield* Queue.take(conn.binary)
        if (f[0] === 1) tags.push(f[5]!)
      }
      assert.deepStrictEqual(tags, [0, 1, 2, 3, 4, 5])
    }))

  it.effect("small frames overtake bulk frames waiting for the link; frames of one size keep their order", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ linkWindow: 64 * 1024 })
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* connection.sendBinary(data(1, 64 * 1024, 1)) // spends the whole window
      const bulk = yield* Effect.forkChild(connection.sendBinary(data(1, 64 * 1024, 2)))
      const bulk2 = yield* Effect.forkChild(connection.sendBinary(data(2, 64 * 1024, 3)))
      yield* settled(() => 0)
      const small = yield* Effect.forkChild(connection.sendBinary(data(3, 100, 4)))
      const small2 = yield* Effect.forkChild(connection.sendBinary(data(4, 100, 5)))
      yield* settled(() => 0)
      yield* conn.sendRaw(encodeLinkWindow(200))
      yield* Fiber.join(small)
      yield* Fiber.join(small2)
      yield* conn.sendRaw(encodeLinkWindow(64 * 1024))
      yield* Fiber.join(bulk)
      yield* conn.sendRaw(encodeLinkWindow(64 * 1024))
      yield* Fiber.join(bulk2)
      const tags: Array<number> = []
      for (let i = 0; i < 5; i++) tags.push((yield* Queue.take(conn.binary))[5]!)
      assert.deepStrictEqual(tags, [1, 4, 5, 2, 3])
    }))

  it.effect("frames waiting for the link fail with NotConnected when it drops", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ linkWindow: 64 * 1024 })
      const { connection } = yield* setup(cp.url)
      const conn = yield* cp.nextConnection
      yield* awaitStatus(connection.status, true)
      yield* connection.sendBinary(data(1, 64 * 1024, 1))
      const waiting = yield* Effect.forkChild(Effect.flip(connection.sendBinary(data(1, 64 * 1024, 2))))
      yield* settled(() => 0)
      yield* conn.terminate
      const e = yield* Fiber.join(waiting)
      assert.strictEqual(e.reason, "NotConnected")
    }))

  it.effect("a pending agent logs the fingerprint of its random hello id, the one the control plane shows the admin", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const capture = Logger.make((o) => {
        lines.push(JSON.stringify(o.message))
      })
      const cp = yield* TestControlPlane.make({ approved: [], bootstrap: [TOKEN] })
      const hellos: Array<string> = []
      yield* Effect.gen(function*() {
        yield* setup(cp.url)
        const conn = yield* cp.nextConnection
        hellos.push((yield* conn.next("hello")).id)
        yield* waitFor("the pending line", Effect.sync(() => lines.some((l) => l.includes("enrolment pending"))))
      }).pipe(Effect.provide(Logger.layer([capture])))
      const fingerprint = helloFingerprint(hellos[0]!)
      assert.match(fingerprint, /^[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$/)
      assert.isTrue(lines.some((l) => l.includes("enrolment pending") && l.includes(`fingerprint ${fingerprint}`)))
    }))

  it.effect("the token never appears in logs", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const capture = Logger.make((o) => {
        lines.push(JSON.stringify(o.message))
      })
      const cp = yield* TestControlPlane.make({ approved: [] })
      yield* Effect.gen(function*() {
        yield* setup(cp.url)
        yield* waitFor("first attempt", Effect.sync(() => cp.attempts.length === 1))
        yield* TestClock.adjust("5 seconds")
        yield* waitFor("second attempt", Effect.sync(() => cp.attempts.length === 2))
        yield* waitFor("401 logged", Effect.sync(() => lines.some((l) => l.includes("401"))))
      }).pipe(Effect.provide(Logger.layer([capture])))
      assert.isTrue(lines.length > 0)
      assert.isFalse(lines.some((l) => l.includes(TOKEN)))
    }))
})
