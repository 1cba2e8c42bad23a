// What the VNC proxy does for the viewer's features: a ticket for a session whose agent is offline is refused at
// once (AgentOffline, 409 in the API); a tunnel the agent does not open within VNC_CONNECT_TIMEOUT closes the
// viewer (4502, retryable) instead of leaving it silent for COMMAND_TIMEOUT; the template's clipboard upload
// switch is enforced on what the viewer sends (ClientCutText never reaches the agent), the rest passes.
import { assert, describe, it } from "@effect/vitest"
import type { TemplateName, TunnelId, UserId } from "@streamspace/protocol"
import { decodeBinary } from "@streamspace/protocol"
import { Context, Effect, Layer, References, Result } from "effect"
import { TestClock } from "effect/testing"
import { waitFor } from "@streamspace/testbed"
import { Auth, type User } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { VncProxy } from "../src/VncProxy.ts"
import { type FakeDispatcher, fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { type FakeHub, fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { connectViewer, serveApp } from "./support/http.ts"
import { bearer, sign, TEST_JWT_SECRET } from "./support/jwt.ts"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const env = { JWT_SECRET: TEST_JWT_SECRET, VNC_TICKET_TTL: "60s", VNC_CONNECT_TIMEOUT: "20s", PING_INTERVAL: "1h", LOG_LEVEL: "error" }

const setup = Effect.gen(function*() {
  const hub: FakeHub = yield* makeFakeHub
  const dispatcher: FakeDispatcher = yield* makeFakeDispatcher
  hub.addAgent("a")
  dispatcher.responder = (d) =>
    d.request.action === "create_session"
      ? { result: { action: "create_session", session: { session_id: d.request.args.session_id, phase: "running", observed_at: "2026-01-01T00:00:00Z" } } }
      : undefined
  const services = Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), ControlPlaneConfig.layerFromRecord(env), Layer.succeed(References.MinimumLogLevel, "Warn"))
  const served = yield* serveApp(VncProxy.layer.pipe(Layer.provideMerge(Sessions.layerMemory(makeMemoryRepo())), Layer.provideMerge(Auth.layer), Layer.provideMerge(services)))
  const sessions = Context.get(served.ctx, Sessions)
  const proxy = Context.get(served.ctx, VncProxy)
  const annToken = yield* Effect.promise(() => sign({ sub: "ann" }))
  const running = yield* sessions.create(ann, { template: "demo" as TemplateName })
  yield* waitFor("session running", Effect.map(sessions.get(ann, running.id), (s) => s.state === "running"))
  const url = `${served.wsBase}/api/v1/sessions/${running.id}/vnc`
  return { hub, sessions, proxy, annToken, running, url }
})

const until = (what: string, check: () => boolean) => waitFor(what, Effect.sync(check))
const dataTo = (hub: FakeHub, tunnelId: number) =>
  Uint8Array.from(hub.binary.flatMap((b) => {
    const f = decodeBinary(b.frame)
    return Result.isSuccess(f) && f.success.kind === "data" && f.success.tunnelId === tunnelId ? Array.from(f.success.payload) : []
  }))

const enc = (s: string) => new TextEncoder().encode(s)
const cat = (...parts: Array<ArrayLike<number>>) => Uint8Array.from(parts.flatMap((p) => Array.from(p)))
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const HANDSHAKE = cat(enc("RFB 003.008\n"), [1, 1])
const KEY_A = cat([4, 1, 0, 0], u32(0x61))
const cutText = (s: string) => cat([6, 0, 0, 0], u32(s.length), enc(s))

describe("VncProxy viewer features", () => {
  it.live("a ticket for a session whose agent is offline is refused at once (AgentOffline)", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.agents.set("a", { ...t.hub.agents.get("a")!, connected: false, status: "offline" })
      const refused = yield* Effect.flip(t.proxy.issueTicket(ann, t.running.id))
      assert.strictEqual(refused.reason, "AgentOffline")
      assert.include(refused.message, "offline")
      t.hub.agents.set("a", { ...t.hub.agents.get("a")!, connected: true, status: "online" })
      assert.isString((yield* t.proxy.issueTicket(ann, t.running.id)).ticket)
    }))

  it.effect("a tunnel the agent does not open within VNC_CONNECT_TIMEOUT closes the viewer with 4502", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const t = yield* setup
      t.hub.tunnelResponder = () => undefined
      const v = connectViewer(t.url, bearer(t.annToken))
      yield* Effect.promise(() => v.opened)
      yield* until("vnc_connect sent", () => t.hub.opens.length === 1)
      yield* TestClock.adjust("19 seconds")
      assert.strictEqual(v.ws.readyState, v.ws.OPEN)
      yield* TestClock.adjust("1 second")
      const c = yield* Effect.promise(() => v.closed)
      assert.strictEqual(c.code, 4502)
      assert.include(c.reason, "did not open the tunnel within 20s")
    }))

  it.live("with the template's clipboard upload off, ClientCutText never reaches the agent; keys and the handshake do", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const patched = yield* t.sessions.updateTemplate("demo", { clipboard: { upload: false } })
      assert.deepStrictEqual(patched.clipboard, { upload: false, download: true })
      const v = connectViewer(t.url, bearer(t.annToken))
      yield* Effect.promise(() => v.opened)
      yield* until("the tunnel", () => t.hub.tunnels.size === 1)
      const tunnelId = t.hub.opens[0]!.tunnelId as TunnelId
      const stream = cat(HANDSHAKE, KEY_A, cutText("the secret"), KEY_A)
      // In odd pieces, so messages straddle WebSocket messages.
      for (let i = 0; i < stream.length; i += 5) v.ws.send(stream.subarray(i, i + 5))
      const expected = cat(HANDSHAKE, KEY_A, KEY_A)
      yield* until("the kept bytes", () => dataTo(t.hub, tunnelId).length === expected.length)
      assert.deepStrictEqual(dataTo(t.hub, tunnelId), expected)
      // Allowed again: sessions' new viewers pass cut text.
      yield* t.sessions.updateTemplate("demo", { clipboard: { upload: true } })
      const v2 = connectViewer(t.url, bearer(t.annToken))
      yield* Effect.promise(() => v2.opened)
      yield* until("the second tunnel", () => t.hub.opens.length === 2)
      const second = t.hub.opens[1]!.tunnelId
      yield* until("its sink", () => t.hub.tunnels.has(`a/${second}`))
      v2.ws.send(cat(HANDSHAKE, cutText("ok")))
      yield* until("cut text passed", () => dataTo(t.hub, second).length === HANDSHAKE.length + 10)
      v.ws.close()
      v2.ws.close()
    }))

  it.live("a session whose template was deleted gets the clipboard blocked (its switches cannot be read)", () =>
    Effect.gen(function*() {
      const t = yield* setup
      yield* t.sessions.createTemplate({ name: "brief" as TemplateName, image: "x/y:1" })
      const s = yield* t.sessions.create(ann, { template: "brief" as TemplateName })
      yield* waitFor("running", Effect.map(t.sessions.get(ann, s.id), (x) => x.state === "running"))
      yield* t.sessions.deleteTemplate("brief")
      const v = connectViewer(t.url.replace(t.running.id, s.id), bearer(t.annToken))
      yield* Effect.promise(() => v.opened)
      yield* until("the tunnel", () => t.hub.tunnels.size === 1)
      const tunnelId = t.hub.opens[0]!.tunnelId as TunnelId
      v.ws.send(cat(HANDSHAKE, cutText("nope"), KEY_A))
      yield* until("the key", () => dataTo(t.hub, tunnelId).length === HANDSHAKE.length + KEY_A.length)
      assert.deepStrictEqual(dataTo(t.hub, tunnelId), cat(HANDSHAKE, KEY_A))
      v.ws.close()
    }))

  it.live("a viewer sending a message type the clipboard filter cannot parse is closed with 1008", () =>
    Effect.gen(function*() {
      const t = yield* setup
      yield* t.sessions.updateTemplate("demo", { clipboard: { download: false } })
      const v = connectViewer(t.url, bearer(t.annToken))
      yield* Effect.promise(() => v.opened)
      yield* until("the tunnel", () => t.hub.tunnels.size === 1)
      v.ws.send(cat(HANDSHAKE, [77, 0, 0, 0]))
      const c = yield* Effect.promise(() => v.closed)
      assert.strictEqual(c.code, 1008)
      assert.include(c.reason, "clipboard policy")
    }))
})
