import { assert, describe, it } from "@effect/vitest"
import type { AgentId, TemplateName, TunnelId, UserId } from "@streamspace/protocol"
import { BinaryKind, decodeBinary, MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { Context, Effect, Layer, References, Result } from "effect"
import { TestClock } from "effect/testing"
import { waitFor } from "@streamspace/testbed"
import { Auth, type User } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { VncProxy, ViewerClose } from "../src/VncProxy.ts"
import { type FakeDispatcher, fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { type FakeHub, fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { connectViewer, serveApp, type Viewer } from "./support/http.ts"
import { bearer, sign, TEST_JWT_SECRET } from "./support/jwt.ts"

const WINDOW = 65536
const PING = "20 seconds"
const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const bob: User = { id: "bob" as UserId, role: "user", groups: [] }

const env = {
  JWT_SECRET: TEST_JWT_SECRET,
  VNC_TUNNEL_WINDOW: String(WINDOW),
  VNC_TICKET_TTL: "60s",
  PING_INTERVAL: "20s",
  LOG_LEVEL: "error"
}

const setupWith = (extraEnv: Record<string, string>) => Effect.gen(function*() {
  const hub: FakeHub = yield* makeFakeHub
  const dispatcher: FakeDispatcher = yield* makeFakeDispatcher
  hub.addAgent("a")
  const agentWindow = { value: WINDOW }
  hub.tunnelResponder = () => ({ window: agentWindow.value })
  dispatcher.responder = (d) =>
    d.request.action === "create_session"
      ? { result: { action: "create_session", session: { session_id: d.request.args.session_id, phase: "running", observed_at: "2026-01-01T00:00:00Z" } } }
      : undefined
  const services = Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), ControlPlaneConfig.layerFromRecord({ ...env, ...extraEnv }), Layer.succeed(References.MinimumLogLevel, "Warn"))
  const app = VncProxy.layer.pipe(
    Layer.provideMerge(Sessions.layerMemory(makeMemoryRepo())),
    Layer.provideMerge(Auth.layer),
    Layer.provideMerge(services)
  )
  const served = yield* serveApp(app)
  const sessions = Context.get(served.ctx, Sessions)
  const proxy = Context.get(served.ctx, VncProxy)
  const annToken = yield* Effect.promise(() => sign({ sub: "ann" }))
  const running = yield* sessions.create(ann, { template: "demo" as TemplateName })
  yield* waitFor("session running", Effect.map(sessions.get(ann, running.id), (s) => s.state === "running"))
  const url = (id: string, query = "") => `${served.wsBase}/api/v1/sessions/${id}/vnc${query}`
  return { hub, dispatcher, sessions, proxy, annToken, running, url, base: served.base, agentWindow }
})
const setup = setupWith({})

const open = (v: Viewer) => Effect.promise(() => v.opened)
const closed = (v: Viewer) => Effect.promise(() => v.closed)
const until = (what: string, check: () => boolean) => waitFor(what, Effect.sync(check))
const refusedStatus = (v: Viewer) => Effect.promise(() => v.opened.then(() => 0, (e: { status?: number }) => e.status ?? -1))

const dataBytesTo = (hub: FakeHub, tunnelId: number) =>
  hub.binary.reduce((n, b) => {
    const f = decodeBinary(b.frame)
    return Result.isSuccess(f) && f.success.kind === "data" && f.success.tunnelId === tunnelId ? n + f.success.payload.length : n
  }, 0)
const windowFrames = (hub: FakeHub, tunnelId: number) =>
  hub.binary.flatMap((b) => {
    const f = decodeBinary(b.frame)
    return Result.isSuccess(f) && f.success.kind === "window" && f.success.tunnelId === tunnelId ? [f.success.credit] : []
  })
/** A viewer of Ann's running session, once its tunnel is open. */
const relayed = (t: Effect.Success<typeof setup>) =>
  Effect.gen(function*() {
    const v = connectViewer(t.url(t.running.id), bearer(t.annToken))
    yield* open(v)
    yield* until("the tunnel", () => lastTunnel(t.hub) !== 0)
    const tunnelId = lastTunnel(t.hub) as TunnelId
    yield* until("sink registered", () => t.hub.tunnels.has(`a/${tunnelId}`))
    return { v, tunnelId, sink: t.hub.tunnels.get(`a/${tunnelId}`)! }
  })

const lastTunnel = (hub: FakeHub) => hub.opens.at(-1)?.tunnelId ?? 0

describe("VncProxy", () => {
  it.live("closeViewersOf closes that user's viewers at once with 4403 and the reason, and their tunnels on the agent", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const { v, tunnelId } = yield* relayed(t)
      yield* t.proxy.closeViewersOf("bob", "not ann")
      yield* t.proxy.closeViewersOf("ann", "your account was disabled by an administrator")
      const end = yield* closed(v)
      assert.deepStrictEqual(end, { code: ViewerClose.accessRevoked, reason: "your account was disabled by an administrator" })
      yield* until("the tunnel closed on the agent", () => t.hub.closes.some((c) => c.tunnelId === tunnelId))
      yield* until("viewer count back to 0", () => Effect.runSync(t.proxy.viewers) === 0)
    }))

  it.live("relays bytes both ways with the user's JWT and the binary subprotocol", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const v = connectViewer(t.url(t.running.id), bearer(t.annToken))
      yield* open(v)
      assert.strictEqual(v.ws.protocol, "binary")
      yield* until("the tunnel", () => lastTunnel(t.hub) !== 0)
      const tunnelId = lastTunnel(t.hub)
      assert.deepStrictEqual(t.hub.opens[0], { agentId: "a" as AgentId, tunnelId, request: { sessionId: t.running.id, window: WINDOW } })
      yield* until("sink registered", () => t.hub.tunnels.has(`a/${tunnelId}`))
      // agent -> viewer
      t.hub.tunnels.get(`a/${tunnelId}`)!.onFrame({ kind: "data", tunnelId: tunnelId as TunnelId, payload: new TextEncoder().encode("RFB 003.008\n") })
      yield* until("viewer got the greeting", () => v.receivedBytes() === 12)
      assert.strictEqual(new TextDecoder().decode(v.received[0]), "RFB 003.008\n")
      // viewer -> agent
      v.ws.send(new TextEncoder().encode("RFB 003.008\n"))
      yield* until("agent got the reply", () => dataBytesTo(t.hub, tunnelId) === 12)
      const frame = t.hub.binary.find((b) => b.frame[0] === BinaryKind.data)!
      assert.strictEqual(new TextDecoder().decode(frame.frame.subarray(5)), "RFB 003.008\n")
      assert.strictEqual(yield* t.proxy.viewers, 1)
      v.ws.close()
      yield* until("the tunnel closed on the agent", () => t.hub.closes.length > 0)
      assert.deepStrictEqual(t.hub.closes, [{ agentId: "a", tunnelId }])
      yield* until("sink unregistered", () => !t.hub.tunnels.has(`a/${tunnelId}`))
      yield* until("viewer count back to 0", () => Effect.runSync(t.proxy.viewers) === 0)
    }))

  it.live("viewer -> agent stays within the credit the agent granted, and resumes on a window frame", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const { v, tunnelId, sink } = yield* relayed(t)
      const total = WINDOW * 3
      v.ws.send(new Uint8Array(total).fill(7))
      yield* until("first window spent", () => dataBytesTo(t.hub, tunnelId) === WINDOW)
      // No more without credit.
      yield* Effect.promise(() => new Promise((r) => setImmediate(r)))
      assert.strictEqual(dataBytesTo(t.hub, tunnelId), WINDOW)
      assert.isTrue(t.hub.binary.every((b) => b.frame.length <= 5 + MAX_BINARY_PAYLOAD_BYTES))
      sink.onFrame({ kind: "window", tunnelId, credit: 1000 })
      yield* until("1000 more", () => dataBytesTo(t.hub, tunnelId) === WINDOW + 1000)
      sink.onFrame({ kind: "window", tunnelId, credit: total })
      yield* until("the rest", () => dataBytesTo(t.hub, tunnelId) === total)
      v.ws.close()
    }))

  it.live("agent -> viewer credit is returned once the viewer's socket took the bytes; overrunning the window closes", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const { v, tunnelId, sink } = yield* relayed(t)
      // Below the threshold (a quarter window): no credit yet.
      sink.onFrame({ kind: "data", tunnelId, payload: new Uint8Array(10_000) })
      yield* until("viewer got 10000", () => v.receivedBytes() === 10_000)
      assert.deepStrictEqual(windowFrames(t.hub, tunnelId), [])
      sink.onFrame({ kind: "data", tunnelId, payload: new Uint8Array(10_000) })
      yield* until("credit returned", () => windowFrames(t.hub, tunnelId).length === 1)
      assert.deepStrictEqual(windowFrames(t.hub, tunnelId), [20_000])
      // More than a window in flight is a broken agent: the viewer is closed with 4502.
      v.ws.pause() // the viewer stops reading
      for (let i = 0; i < 40; i++) sink.onFrame({ kind: "data", tunnelId, payload: new Uint8Array(MAX_BINARY_PAYLOAD_BYTES) })
      v.ws.resume()
      const c = yield* closed(v)
      assert.strictEqual(c.code, 4502)
      assert.include(c.reason, "credit window")
    }))

  it.live("what a viewer that stops reading pins stays within its window, and is released once it reads", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const { v, tunnelId, sink } = yield* relayed(t)
      v.ws.pause()
      let most = 0
      for (let sent = 0; sent + MAX_BINARY_PAYLOAD_BYTES <= WINDOW; sent += MAX_BINARY_PAYLOAD_BYTES) {
        sink.onFrame({ kind: "data", tunnelId, payload: new Uint8Array(MAX_BINARY_PAYLOAD_BYTES) })
        most = Math.max(most, (yield* t.proxy.buffered).max)
      }
      assert.isAbove(most, 0)
      assert.isAtMost(most, WINDOW)
      v.ws.resume()
      yield* until("the viewer read everything", () => v.receivedBytes() === Math.floor(WINDOW / MAX_BINARY_PAYLOAD_BYTES) * MAX_BINARY_PAYLOAD_BYTES)
      yield* waitFor("nothing held", Effect.map(t.proxy.buffered, (b) => b.total === 0))
      v.ws.close()
      yield* closed(v)
    }))

  it.live("vnc_closed from the agent closes the viewer with the reason; the agent going away closes with 4503", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const v1 = connectViewer(t.url(t.running.id), bearer(t.annToken))
      yield* open(v1)
      yield* until("tunnel 1", () => lastTunnel(t.hub) !== 0)
      const t1 = lastTunnel(t.hub) as TunnelId
      const v2 = connectViewer(t.url(t.running.id), bearer(t.annToken))
      yield* open(v2)
      yield* until("tunnel 2", () => lastTunnel(t.hub) !== t1)
      const t2 = lastTunnel(t.hub)
      assert.notStrictEqual(t1, t2)
      yield* until("sinks", () => t.hub.tunnels.has(`a/${t1}`) && t.hub.tunnels.has(`a/${t2}`))
      yield* t.hub.agentClosed("a", t1, "pod_gone")
      const c1 = yield* closed(v1)
      assert.strictEqual(c1.code, 4410)
      assert.include(c1.reason, "pod_gone")
      assert.strictEqual(v2.ws.readyState, v2.ws.OPEN)
      yield* t.hub.agentGone("a")
      const c2 = yield* closed(v2)
      assert.strictEqual(c2.code, 4503)
      // The agent closed its side: neither tunnel is closed on it again.
      yield* until("both tunnels released", () => t.hub.tunnels.size === 0)
      assert.deepStrictEqual(t.hub.closes, [])
    }))

  it.effect("a viewer that answers pings stays; one that stops is dropped after the next PING_INTERVAL and its tunnel closed on the agent", () =>
    Effect.gen(function*() {
      // The test clock at the real time: a token issued "in the future" would be refused (JWT_MAX_TTL counts exp - now).
      yield* TestClock.setTime(Date.now())
      const t = yield* setup
      const { v, tunnelId } = yield* relayed(t)
      let pings = 0
      let lastPing = 0
      v.ws.on("ping", () => {
        pings++
        lastPing = Date.now()
      })
      // Answering: each interval sends a ping the client answers at once (its pong is read long before the
      // next interval is judged), and the viewer stays.
      for (let i = 1; i <= 3; i++) {
        yield* TestClock.adjust(PING)
        yield* waitFor(`ping ${i} answered`, Effect.sync(() => pings >= i && Date.now() - lastPing >= 200))
      }
      assert.strictEqual(v.ws.readyState, v.ws.OPEN)
      assert.deepStrictEqual(t.hub.closes, [])
      v.ws.pause() // reads nothing from now on, pongs included
      yield* TestClock.adjust(PING)
      yield* TestClock.adjust(PING)
      yield* until("the tunnel closed on the agent", () => t.hub.closes.some((c) => c.tunnelId === tunnelId))
      yield* until("sink unregistered", () => !t.hub.tunnels.has(`a/${tunnelId}`))
      v.ws.terminate()
    }))

  it.live("a viewer that leaves while its tunnel is opening gives the tunnel up (AgentHub closes it once the agent opens it)", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.tunnelResponder = () => undefined
      const v = connectViewer(t.url(t.running.id), bearer(t.annToken))
      yield* open(v)
      yield* until("the tunnel asked for", () => lastTunnel(t.hub) !== 0)
      v.ws.close()
      yield* closed(v)
      yield* until("viewer gone", () => Effect.runSync(t.proxy.viewers) === 0)
      yield* until("the tunnel given up", () => t.hub.tunnels.size === 0)
      assert.deepStrictEqual(t.hub.closes, [])
    }))

  it.live("a refused tunnel closes the viewer with the agent's reason: 4409 when the session is not running, else 4502", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.tunnelResponder = () => ({ error: { code: "tunnel_failed", message: "port-forward refused" } })
      const c = yield* closed(connectViewer(t.url(t.running.id), bearer(t.annToken)))
      assert.strictEqual(c.code, 4502)
      assert.include(c.reason, "port-forward refused")
      t.hub.tunnelResponder = () => ({ error: { code: "session_not_running", message: "pod is not ready" } })
      const c2 = yield* closed(connectViewer(t.url(t.running.id), bearer(t.annToken)))
      assert.strictEqual(c2.code, 4409)
      assert.include(c2.reason, "session_not_running")
      // Refused tunnels are not open on the agent: nothing to close there.
      assert.deepStrictEqual(t.hub.closes, [])
    }))

  it.live("an agent that is not connected closes the viewer with 4503", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.agents.set("a", { ...t.hub.agents.get("a")!, connected: false })
      const c = yield* closed(connectViewer(t.url(t.running.id), bearer(t.annToken)))
      assert.strictEqual(c.code, 4503)
      assert.deepStrictEqual(t.hub.opens, [])
    }))

  it.live("not running -> 4409, unknown or someone else's session -> 4404, no token -> 401, plain GET -> 426", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.dispatcher.responder = () => undefined
      t.hub.tunnelResponder = () => undefined
      const creating = yield* t.sessions.create(ann, { template: "demo" as TemplateName })
      const c1 = yield* closed(connectViewer(t.url(creating.id), bearer(t.annToken)))
      assert.deepStrictEqual(c1, { code: 4409, reason: "session is creating, not running" })
      const c2 = yield* closed(connectViewer(t.url("s-000000000000"), bearer(t.annToken)))
      assert.strictEqual(c2.code, 4404)
      const bobToken = yield* Effect.promise(() => sign({ sub: "bob" }))
      const c3 = yield* closed(connectViewer(t.url(t.running.id), bearer(bobToken)))
      assert.strictEqual(c3.code, 4404)
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(t.running.id))), 401)
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(t.running.id), bearer("garbage"))), 401)
      const plain = yield* Effect.promise(() => fetch(`${t.base}/api/v1/sessions/${t.running.id}/vnc`))
      assert.strictEqual(plain.status, 426)
      assert.deepStrictEqual(t.hub.opens, [])
    }))

  it.live("viewer limits: MAX_VIEWERS_PER_SESSION and MAX_VIEWERS_PER_USER refuse the ticket (LimitExceeded) and close an extra viewer with 4429 naming the limit; a slot frees when a viewer leaves; admins are not limited", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ MAX_VIEWERS_PER_SESSION: "2", MAX_VIEWERS_PER_USER: "3" })
      const second = yield* t.sessions.create(ann, { template: "demo" as TemplateName })
      yield* waitFor("second session running", Effect.map(t.sessions.get(ann, second.id), (s) => s.state === "running"))
      const open_: Array<Viewer> = []
      const viewer = (id: string, token = t.annToken) =>
        Effect.gen(function*() {
          const v = connectViewer(t.url(id), bearer(token))
          open_.push(v)
          yield* open(v)
          return v
        })
      const a1 = yield* viewer(t.running.id)
      yield* viewer(t.running.id)
      yield* until("two viewers counted", () => Effect.runSync(t.proxy.viewers) === 2)
      // The session is full: no ticket, and a viewer that connects anyway is closed naming the limit.
      const noTicket = yield* Effect.flip(t.proxy.issueTicket(ann, t.running.id))
      assert.strictEqual(noTicket.reason, "LimitExceeded")
      assert.include(noTicket.message, "MAX_VIEWERS_PER_SESSION=2")
      const third = yield* closed(connectViewer(t.url(t.running.id), bearer(t.annToken)))
      assert.strictEqual(third.code, 4429)
      assert.include(third.reason, "MAX_VIEWERS_PER_SESSION=2")
      // Ann's third viewer fits on her other session; her fourth is over the per-user limit.
      yield* viewer(second.id)
      yield* until("three viewers counted", () => Effect.runSync(t.proxy.viewers) === 3)
      const perUser = yield* Effect.flip(t.proxy.issueTicket(ann, second.id))
      assert.include(perUser.message, "MAX_VIEWERS_PER_USER=3")
      const fourth = yield* closed(connectViewer(t.url(second.id), bearer(t.annToken)))
      assert.deepStrictEqual([fourth.code, fourth.reason.includes("MAX_VIEWERS_PER_USER=3")], [4429, true])
      // An admin watching the full session is not limited.
      const rootToken = yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
      yield* viewer(t.running.id, rootToken)
      yield* until("four viewers counted", () => Effect.runSync(t.proxy.viewers) === 4)
      // A viewer leaving frees its slot.
      a1.ws.close()
      yield* until("a slot freed", () => Effect.runSync(t.proxy.viewers) === 3)
      yield* t.proxy.issueTicket(ann, t.running.id)
      yield* viewer(t.running.id)
      yield* until("back to four", () => Effect.runSync(t.proxy.viewers) === 4)
      // ...and only one.
      assert.strictEqual((yield* Effect.flip(t.proxy.issueTicket(ann, t.running.id))).reason, "LimitExceeded")
      for (const v of open_) v.ws.close()
      yield* until("every viewer gone", () => Effect.runSync(t.proxy.viewers) === 0)
    }))

  it.live("tickets are single use and bound to one session and user", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const other = yield* t.sessions.create(ann, { template: "demo" as TemplateName })
      const ticket = yield* t.proxy.issueTicket(ann, t.running.id)
      assert.strictEqual(ticket.sessionId, t.running.id)
      const v = connectViewer(t.url(t.running.id, `?ticket=${ticket.ticket}`))
      yield* open(v)
      v.ws.close()
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(t.running.id, `?ticket=${ticket.ticket}`))), 401)
      const t2 = yield* t.proxy.issueTicket(ann, t.running.id)
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(other.id, `?ticket=${t2.ticket}`))), 401)
      // ...and that attempt used it up.
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(t.running.id, `?ticket=${t2.ticket}`))), 401)
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(t.running.id, "?ticket=made-up"))), 401)
      // Bob cannot get a ticket for Ann's session.
      assert.strictEqual((yield* Effect.flip(t.proxy.issueTicket(bob, t.running.id))).reason, "NotFound")
    }))

  it.effect("tickets expire after VNC_TICKET_TTL", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const fresh = yield* t.proxy.issueTicket(ann, t.running.id)
      const stale = yield* t.proxy.issueTicket(ann, t.running.id)
      yield* TestClock.adjust("59 seconds")
      const v = connectViewer(t.url(t.running.id, `?ticket=${fresh.ticket}`))
      yield* open(v)
      v.ws.close()
      yield* closed(v)
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(yield* refusedStatus(connectViewer(t.url(t.running.id, `?ticket=${stale.ticket}`))), 401)
    }))

  it.live("without CLUSTER_SECRET (one replica) the replica-to-replica endpoint does not exist: 404, whatever the credential", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const v = connectViewer(`${t.url(t.running.id).replace("/api/v1/sessions/", "/internal/v1/peer/sessions/")}`, { ...bearer(t.annToken), "x-streamspace-peer-token": "x.y" })
      assert.strictEqual(yield* refusedStatus(v), 404)
      assert.strictEqual(t.hub.opens.length, 0)
    }))
})
