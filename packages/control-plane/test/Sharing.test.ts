// Issue 17, "sharing and control", through the HTTP API and the VNC proxy on real sockets: shares (owner,
// admin, shared user, stranger), the sessions list marking shared sessions, tickets and viewers for shared
// users, 404 / close 4404 for everyone else, share links (exchange, expiry, revocation, max uses), the
// proxy dropping a view-only viewer's input, control handoff, ending viewers, and the audit entries.
import { assert, describe, it } from "@effect/vitest"
import type { TemplateName, TunnelId, UserId } from "@streamspace/protocol"
import { decodeBinary } from "@streamspace/protocol"
import { waitFor } from "@streamspace/testbed"
import { Context, Effect, Fiber, Layer, References, Result } from "effect"
import { TestClock } from "effect/testing"
import * as Api from "../src/Api.ts"
import { Audit } from "../src/Audit.ts"
import { Auth, type User } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { Homes, makeMemoryRepo as makeHomesRepo } from "../src/Homes.ts"
import * as SharingRoutes from "../src/internal/sharing/routes.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { Sharing } from "../src/Sharing.ts"
import { VncProxy } from "../src/VncProxy.ts"
import { type FakeDispatcher, fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { type FakeHub, fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { connectViewer, serveApp, type Viewer } from "./support/http.ts"
import { sign, TEST_JWT_SECRET } from "./support/jwt.ts"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }

const setup = Effect.gen(function*() {
  const hub: FakeHub = yield* makeFakeHub
  const dispatcher: FakeDispatcher = yield* makeFakeDispatcher
  hub.addAgent("a")
  hub.tunnelResponder = () => ({ window: 65536 })
  dispatcher.responder = (d) =>
    d.request.action === "create_session"
      ? { result: { action: "create_session", session: { session_id: d.request.args.session_id, phase: "running", observed_at: "2026-01-01T00:00:00Z" } } }
      : undefined
  const services = Layer.mergeAll(
    fakeHubLayer(hub),
    fakeDispatcherLayer(dispatcher),
    ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, LOG_LEVEL: "error", VNC_TICKET_TTL: "60s", PUBLIC_URL: "https://ss.example" }),
    Layer.succeed(References.MinimumLogLevel, "Error")
  )
  const app = Layer.merge(Api.layer, SharingRoutes.routes).pipe(
    Layer.provideMerge(Layer.merge(VncProxy.layer, Homes.layerMemory(makeHomesRepo()))),
    Layer.provideMerge(Sharing.layerMemory),
    Layer.provideMerge(Sessions.layerMemory(makeMemoryRepo())),
    Layer.provideMerge(Auth.layer),
    Layer.provideMerge(Audit.layerMemory),
    Layer.provideMerge(services)
  )
  const served = yield* serveApp(app)
  const sessions = Context.get(served.ctx, Sessions)
  const tokens = {
    ann: yield* Effect.promise(() => sign({ sub: "ann" })),
    bob: yield* Effect.promise(() => sign({ sub: "bob" })),
    cat: yield* Effect.promise(() => sign({ sub: "cat" })),
    eve: yield* Effect.promise(() => sign({ sub: "eve" })),
    admin: yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
  }
  const call = (method: string, path: string, options: { token?: string | undefined; body?: unknown } = {}) =>
    Effect.promise(async () => {
      const headers: Record<string, string> = {}
      if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
      if (options.body !== undefined) headers["content-type"] = "application/json"
      const res = await fetch(`${served.base}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }) })
      const text = await res.text()
      let json: any = undefined
      try {
        json = JSON.parse(text)
      } catch {}
      return { status: res.status, json }
    })
  const running = yield* sessions.create(ann, { template: "demo" as TemplateName })
  yield* waitFor("session running", Effect.map(sessions.get(ann, running.id), (s) => s.state === "running"))
  const sid = running.id
  /** A viewer opened the way the web UI does: a ticket from the API, then the WebSocket. */
  const viewer = (token: string) =>
    Effect.gen(function*() {
      const t = yield* call("POST", `/api/v1/sessions/${sid}/vnc-ticket`, { token })
      assert.strictEqual(t.status, 201, JSON.stringify(t.json))
      const v = connectViewer(`${served.wsBase}${t.json.url}`)
      yield* Effect.promise(() => v.opened)
      return { v, id: t.json.viewer_id as string }
    })
  const linkViewer = (url: string) =>
    Effect.gen(function*() {
      const v = connectViewer(`${served.wsBase}${url}`)
      yield* Effect.promise(() => v.opened)
      return v
    })
  const audit = Effect.map(call("GET", "/api/v1/audit", { token: tokens.admin }), (r) => (r.json.events as Array<any>).map((e) => [e.action, e.actor, e.details]))
  return { hub, call, tokens, sid, viewer, linkViewer, audit, wsBase: served.wsBase }
})

const errorOf = (r: { status: number; json: any }) => [r.status, r.json?.error?.code, r.json?.error?.message ?? ""] as const
const closed = (v: Viewer) => Effect.promise(() => v.closed)

/** The RFB bytes the agent received through each tunnel. */
const toAgent = (hub: FakeHub, tunnelId: number) =>
  hub.binary.flatMap((b) => {
    const f = decodeBinary(b.frame)
    return Result.isSuccess(f) && f.success.kind === "data" && f.success.tunnelId === (tunnelId as TunnelId) ? [...f.success.payload] : []
  })

const be32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const HANDSHAKE = [...Buffer.from("RFB 003.008\n"), 1, 1]
const KEY = [4, 1, 0, 0, ...be32(0x61)]
const POINTER = [5, 1, 0, 10, 0, 20]
const UPDATE_REQUEST = [3, 1, 0, 0, 0, 0, 4, 0, 3, 0]

describe("sharing API", () => {
  it.live("the owner and admins manage shares; bad input is a 400 naming the field; the shared user lists the session, marked; strangers get 404", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const shares = `/api/v1/sessions/${t.sid}/shares`
      const bad: Array<[unknown, string]> = [
        [{ user: "bob" }, "access"],
        [{ user: "bob", access: "admin" }, "access"],
        [{ user: "", access: "view" }, "user"],
        [{ user: "bob", access: "view", extra: 1 }, "extra"]
      ]
      for (const [body, field] of bad) {
        const r = errorOf(yield* t.call("POST", shares, { token: t.tokens.ann, body }))
        assert.deepStrictEqual(r.slice(0, 2), [400, "invalid_request"], JSON.stringify(body))
        assert.include(r[2], field)
      }
      assert.include(errorOf(yield* t.call("POST", shares, { token: t.tokens.ann, body: { user: "ann", access: "view" } }))[2], "owns this session")

      const created = yield* t.call("POST", shares, { token: t.tokens.ann, body: { user: "bob", access: "view" } })
      assert.strictEqual(created.status, 201)
      assert.deepStrictEqual([created.json.user, created.json.access, created.json.created_by], ["bob", "view", "ann"])
      assert.strictEqual((yield* t.call("POST", shares, { token: t.tokens.admin, body: { user: "cat", access: "control" } })).status, 201)
      const listed = yield* t.call("GET", shares, { token: t.tokens.ann })
      assert.deepStrictEqual(listed.json.shares.map((s: any) => [s.user, s.access]), [["bob", "view"], ["cat", "control"]])

      // Bob sees it in his list, marked, and can read its presence; he cannot manage its shares.
      const bobs = yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.bob })
      assert.deepStrictEqual(bobs.json.sessions.map((s: any) => [s.id, s.shared]), [[t.sid, { access: "view", owner: "ann" }]])
      assert.strictEqual((yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.ann })).json.sessions[0].shared, undefined)
      assert.strictEqual((yield* t.call("GET", `/api/v1/sessions/${t.sid}/presence`, { token: t.tokens.bob })).status, 200)
      assert.deepStrictEqual(errorOf(yield* t.call("GET", shares, { token: t.tokens.bob })).slice(0, 2), [403, "forbidden"])
      assert.deepStrictEqual(errorOf(yield* t.call("POST", shares, { token: t.tokens.cat, body: { user: "eve", access: "view" } })).slice(0, 2), [403, "forbidden"])

      // Eve, a stranger: 404 everywhere, no ticket, and a viewer with her JWT is closed 4404.
      for (const [m, p] of [["GET", shares], ["POST", `${shares}`], ["GET", `/api/v1/sessions/${t.sid}/presence`], ["POST", `/api/v1/sessions/${t.sid}/vnc-ticket`], ["GET", `/api/v1/sessions/${t.sid}/share-links`]] as const) {
        const r = yield* t.call(m, p, { token: t.tokens.eve, ...(m === "POST" && p === shares ? { body: { user: "eve", access: "view" } } : {}) })
        assert.strictEqual(r.status, 404, `${m} ${p}`)
      }
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.eve })).json.sessions, [])
      const eve = connectViewer(`${t.wsBase}/api/v1/sessions/${t.sid}/vnc`, { authorization: `Bearer ${t.tokens.eve}` })
      assert.strictEqual((yield* closed(eve)).code, 4404)

      // Removing a share: Bob's list is empty again, his tickets are refused, a second removal is 404.
      assert.strictEqual((yield* t.call("DELETE", `${shares}/bob`, { token: t.tokens.ann })).status, 204)
      assert.strictEqual((yield* t.call("DELETE", `${shares}/bob`, { token: t.tokens.ann })).status, 404)
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.bob })).json.sessions, [])
      assert.strictEqual((yield* t.call("POST", `/api/v1/sessions/${t.sid}/vnc-ticket`, { token: t.tokens.bob })).status, 404)

      const audit = yield* t.audit
      assert.deepStrictEqual(audit.filter(([a]) => String(a).startsWith("share")).map(([a, actor, d]) => [a, actor, d.user, d.access ?? null]), [
        ["share.delete", "ann", "bob", null],
        ["share.create", "root", "cat", "control"],
        ["share.create", "ann", "bob", "view"]
      ])
    }))

  it.live("the proxy drops a view-only viewer's input and passes its protocol messages; control handoff moves who may type; owners end viewers", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const shares = `/api/v1/sessions/${t.sid}/shares`
      yield* t.call("POST", shares, { token: t.tokens.ann, body: { user: "bob", access: "view" } })
      yield* t.call("POST", shares, { token: t.tokens.ann, body: { user: "cat", access: "control" } })
      const owner = yield* t.viewer(t.tokens.ann)
      const bob = yield* t.viewer(t.tokens.bob)
      const cat = yield* t.viewer(t.tokens.cat)
      yield* waitFor("three tunnels", Effect.sync(() => t.hub.opens.length === 3))
      const [ownerTunnel, bobTunnel, catTunnel] = t.hub.opens.map((o) => o.tunnelId)
      const presence = yield* t.call("GET", `/api/v1/sessions/${t.sid}/presence`, { token: t.tokens.bob })
      assert.deepStrictEqual(presence.json.viewers.map((v: any) => [v.id, v.user, v.access, v.control]), [
        [owner.id, "ann", "owner", true],
        [bob.id, "bob", "view", false],
        [cat.id, "cat", "control", false]
      ])
      assert.deepStrictEqual(presence.json.controllers, [owner.id])

      const send = (v: Viewer, ...parts: Array<ReadonlyArray<number>>) => v.ws.send(new Uint8Array(parts.flat()))
      for (const v of [owner.v, bob.v, cat.v]) send(v, HANDSHAKE)
      send(bob.v, KEY, UPDATE_REQUEST, POINTER, UPDATE_REQUEST)
      send(owner.v, KEY)
      yield* waitFor("bob's update requests", Effect.sync(() => toAgent(t.hub, bobTunnel!).length === HANDSHAKE.length + 2 * UPDATE_REQUEST.length))
      yield* waitFor("ann's key", Effect.sync(() => toAgent(t.hub, ownerTunnel!).length === HANDSHAKE.length + KEY.length))
      assert.deepStrictEqual(toAgent(t.hub, bobTunnel!), [...HANDSHAKE, ...UPDATE_REQUEST, ...UPDATE_REQUEST])

      // Bob cannot ask for control (view-only); Cat asks, Ann grants: Cat types, Ann's keys are dropped.
      assert.deepStrictEqual(errorOf(yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/request`, { token: t.tokens.bob, body: { viewer: bob.id } })).slice(0, 2), [403, "forbidden"])
      assert.deepStrictEqual(errorOf(yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/request`, { token: t.tokens.cat, body: { viewer: owner.id } })).slice(0, 2), [403, "forbidden"])
      const requested = yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/request`, { token: t.tokens.cat, body: { viewer: cat.id } })
      assert.isTrue(requested.json.viewers.find((v: any) => v.id === cat.id).requested)
      assert.deepStrictEqual(errorOf(yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/grant`, { token: t.tokens.cat, body: { viewer: cat.id } })).slice(0, 2), [403, "forbidden"])
      assert.deepStrictEqual(errorOf(yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/grant`, { token: t.tokens.ann, body: { viewer: bob.id } })).slice(0, 2), [403, "forbidden"])
      const granted = yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/grant`, { token: t.tokens.ann, body: { viewer: cat.id } })
      assert.deepStrictEqual(granted.json.controllers, [cat.id])
      send(owner.v, POINTER, UPDATE_REQUEST)
      send(cat.v, KEY)
      yield* waitFor("cat's key", Effect.sync(() => toAgent(t.hub, catTunnel!).length === HANDSHAKE.length + KEY.length))
      yield* waitFor("ann's update request", Effect.sync(() => toAgent(t.hub, ownerTunnel!).length === HANDSHAKE.length + KEY.length + UPDATE_REQUEST.length))
      assert.deepStrictEqual(toAgent(t.hub, ownerTunnel!), [...HANDSHAKE, ...KEY, ...UPDATE_REQUEST])

      // The owner takes control back to her viewer; shared mode gives every viewer that may control it.
      const taken = yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/take`, { token: t.tokens.ann, body: { viewer: owner.id } })
      assert.deepStrictEqual(taken.json.controllers, [owner.id])
      assert.deepStrictEqual(errorOf(yield* t.call("PUT", `/api/v1/sessions/${t.sid}/control-mode`, { token: t.tokens.ann, body: { mode: "both" } })).slice(0, 2), [400, "invalid_request"])
      assert.strictEqual((yield* t.call("PUT", `/api/v1/sessions/${t.sid}/control-mode`, { token: t.tokens.cat, body: { mode: "shared" } })).status, 403)
      const shared = yield* t.call("PUT", `/api/v1/sessions/${t.sid}/control-mode`, { token: t.tokens.ann, body: { mode: "shared" } })
      assert.deepStrictEqual([shared.json.mode, shared.json.controllers], ["shared", [owner.id, cat.id]])
      const exclusive = yield* t.call("PUT", `/api/v1/sessions/${t.sid}/control-mode`, { token: t.tokens.ann, body: { mode: "exclusive" } })
      assert.deepStrictEqual(exclusive.json.controllers, [owner.id])

      // Downgrading Cat's share to view takes her control at once; the owner ends Bob's viewer (4403).
      yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/grant`, { token: t.tokens.ann, body: { viewer: cat.id } })
      yield* t.call("POST", shares, { token: t.tokens.ann, body: { user: "cat", access: "view" } })
      const after = yield* t.call("GET", `/api/v1/sessions/${t.sid}/presence`, { token: t.tokens.ann })
      assert.deepStrictEqual(after.json.controllers, [])
      assert.strictEqual(after.json.viewers.find((v: any) => v.id === cat.id).access, "view")
      assert.strictEqual((yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/request`, { token: t.tokens.cat, body: { viewer: cat.id } })).status, 403)
      // ...and upgrading it again lets her ask.
      yield* t.call("POST", shares, { token: t.tokens.ann, body: { user: "cat", access: "control" } })
      assert.strictEqual((yield* t.call("POST", `/api/v1/sessions/${t.sid}/control/request`, { token: t.tokens.cat, body: { viewer: cat.id } })).status, 200)
      assert.strictEqual((yield* t.call("DELETE", `/api/v1/sessions/${t.sid}/viewers/${bob.id}`, { token: t.tokens.cat })).status, 403)
      assert.strictEqual((yield* t.call("DELETE", `/api/v1/sessions/${t.sid}/viewers/${bob.id}`, { token: t.tokens.ann })).status, 204)
      const ended = yield* closed(bob.v)
      assert.deepStrictEqual([ended.code, ended.reason], [4403, "ended by ann"])
      // Removing Cat's share ends her viewer too.
      yield* t.call("DELETE", `${shares}/cat`, { token: t.tokens.ann })
      assert.strictEqual((yield* closed(cat.v)).code, 4403)
      yield* waitFor("one viewer left", Effect.map(t.call("GET", `/api/v1/sessions/${t.sid}/presence`, { token: t.tokens.ann }), (r) => r.json.viewers.length === 1))
      owner.v.ws.close()

      const actions = (yield* t.audit).map(([a]) => a)
      for (const a of ["control.grant", "control.take", "control.mode", "viewer.end"]) assert.include(actions, a)
    }))

  it.live("a long poll on presence answers at the next change", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const first = yield* t.call("GET", `/api/v1/sessions/${t.sid}/presence`, { token: t.tokens.ann })
      assert.deepStrictEqual([first.json.viewers, first.json.mode], [[], "exclusive"])
      const waiting = yield* Effect.forkChild(t.call("GET", `/api/v1/sessions/${t.sid}/presence?since=${first.json.version}`, { token: t.tokens.ann }))
      const owner = yield* t.viewer(t.tokens.ann)
      const changed = yield* Fiber.join(waiting)
      assert.deepStrictEqual(changed.json.viewers.map((v: any) => v.id), [owner.id])
      assert.isAbove(changed.json.version, first.json.version)
      assert.deepStrictEqual(errorOf(yield* t.call("GET", `/api/v1/sessions/${t.sid}/presence?since=x`, { token: t.tokens.ann })).slice(0, 2), [400, "invalid_request"])
      owner.v.ws.close()
    }))

  it.live("share links: view-only by default, exchanged without an account for a single-use ticket, listed without their token, revoked (ending their viewers), used up", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const links = `/api/v1/sessions/${t.sid}/share-links`
      assert.include(errorOf(yield* t.call("POST", links, { token: t.tokens.ann, body: { ttl_seconds: 10 } }))[2], "ttl_seconds must be at least 60")
      assert.include(errorOf(yield* t.call("POST", links, { token: t.tokens.ann, body: { access: "edit" } }))[2], "access")
      assert.strictEqual((yield* t.call("POST", links, { token: t.tokens.bob })).status, 404)
      const created = yield* t.call("POST", links, { token: t.tokens.ann })
      assert.strictEqual(created.status, 201)
      assert.strictEqual(created.json.access, "view")
      assert.strictEqual(created.json.url, `https://ss.example/#share=${created.json.token}`)
      const listed = yield* t.call("GET", links, { token: t.tokens.ann })
      assert.deepStrictEqual(listed.json.links.map((l: any) => [l.id, l.active, l.token]), [[created.json.id, true, undefined]])

      assert.deepStrictEqual(errorOf(yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: "nope" } })).slice(0, 2), [410, "gone"])
      const redeemed = yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: created.json.token } })
      assert.strictEqual(redeemed.status, 201)
      assert.deepStrictEqual([redeemed.json.session_id, redeemed.json.access, redeemed.json.link_id], [t.sid, "view", created.json.id])
      const v = yield* t.linkViewer(redeemed.json.url)
      const presence = yield* t.call("GET", `/api/v1/sessions/${t.sid}/presence`, { token: t.tokens.ann })
      assert.deepStrictEqual(presence.json.viewers.map((x: any) => [x.id, x.user, x.access, x.control]), [[redeemed.json.viewer_id, `link:${created.json.id}`, "view", false]])
      // The ticket was single use.
      const again = connectViewer(`${t.wsBase}${redeemed.json.url}`)
      assert.strictEqual(yield* Effect.promise(() => again.opened.then(() => 0, (e: { status?: number }) => e.status ?? -1)), 401)

      // Revoking ends the link's viewer and its exchanges.
      const second = yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: created.json.token } })
      assert.strictEqual((yield* t.call("DELETE", `${links}/${created.json.id}`, { token: t.tokens.ann })).json.active, false)
      assert.strictEqual((yield* closed(v)).code, 4403)
      assert.strictEqual((yield* closed(connectViewer(`${t.wsBase}${second.json.url}`))).code, 4404)
      assert.strictEqual((yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: created.json.token } })).status, 410)
      assert.strictEqual((yield* t.call("DELETE", `${links}/l-nope`, { token: t.tokens.ann })).status, 404)

      // max_uses: a control link good for one exchange.
      const once = yield* t.call("POST", links, { token: t.tokens.ann, body: { access: "control", max_uses: 1, label: "pairing" } })
      assert.strictEqual((yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: once.json.token } })).json.access, "control")
      assert.strictEqual((yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: once.json.token } })).status, 410)

      const actions = (yield* t.audit).map(([a]) => a)
      assert.deepStrictEqual(actions.filter((a) => String(a).startsWith("share_link")), [
        "share_link.redeem",
        "share_link.create",
        "share_link.revoke",
        "share_link.redeem",
        "share_link.redeem",
        "share_link.create"
      ])
    }))

  it.effect("share links expire after ttl_seconds", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(Date.now())
      const t = yield* setup
      const created = yield* t.call("POST", `/api/v1/sessions/${t.sid}/share-links`, { token: t.tokens.ann, body: { ttl_seconds: 120 } })
      yield* TestClock.adjust("119 seconds")
      const ok = yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: created.json.token } })
      assert.strictEqual(ok.status, 201)
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual((yield* t.call("POST", "/api/v1/share-links/redeem", { body: { token: created.json.token } })).status, 410)
      // A ticket taken before expiry no longer opens a viewer once the link has expired.
      assert.strictEqual((yield* closed(connectViewer(`${t.wsBase}${ok.json.url}`))).code, 4404)
      const listed = yield* t.call("GET", `/api/v1/sessions/${t.sid}/share-links`, { token: t.tokens.ann })
      assert.isFalse(listed.json.links[0].active)
    }))
})

// Keep the import of `ann` meaningful for readers: the session in every test is Ann's.
void ann
