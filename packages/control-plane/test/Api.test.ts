import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, References } from "effect"
import fc from "fast-check"
import * as Api from "../src/Api.ts"
import { Audit } from "../src/Audit.ts"
import { Auth } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { Homes, makeMemoryRepo as makeHomesRepo } from "../src/Homes.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { VncProxy } from "../src/VncProxy.ts"
import { type FakeDispatcher, fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { type FakeHub, fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { waitFor } from "@streamspace/testbed"
import { connectViewer, serveApp } from "./support/http.ts"
import { sign, TEST_JWT_SECRET, unsecured } from "./support/jwt.ts"

const env = { JWT_SECRET: TEST_JWT_SECRET, MAX_BODY_BYTES: "4096", LOG_LEVEL: "error" }

const setupWith = (extraEnv: Record<string, string>) => Effect.gen(function*() {
  const hub: FakeHub = yield* makeFakeHub
  const dispatcher: FakeDispatcher = yield* makeFakeDispatcher
  const repo = makeMemoryRepo()
  const services = Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), ControlPlaneConfig.layerFromRecord({ ...env, ...extraEnv }), Layer.succeed(References.MinimumLogLevel, "Error"))
  const homeRepo = makeHomesRepo()
  const app = Api.layer.pipe(
    Layer.provideMerge(Layer.merge(VncProxy.layer, Homes.layerMemory(homeRepo))),
    Layer.provideMerge(Sessions.layerMemory(repo)),
    Layer.provideMerge(Auth.layer),
    Layer.provideMerge(Audit.layerMemory),
    Layer.provideMerge(services)
  )
  const served = yield* serveApp(app)
  const tokens = {
    ann: yield* Effect.promise(() => sign({ sub: "ann" })),
    bob: yield* Effect.promise(() => sign({ sub: "bob", role: "user" })),
    admin: yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
  }
  const call = (method: string, path: string, options: { token?: string | undefined; body?: unknown; raw?: string; headers?: Record<string, string> } = {}) =>
    Effect.promise(async () => {
      const headers: Record<string, string> = { ...options.headers }
      if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
      let body: string | undefined
      if (options.raw !== undefined) body = options.raw
      else if (options.body !== undefined) {
        body = JSON.stringify(options.body)
        headers["content-type"] ??= "application/json"
      }
      const res = await fetch(`${served.base}${path}`, { method, headers, ...(body === undefined ? {} : { body }) })
      const text = await res.text()
      let json: any = undefined
      try {
        json = JSON.parse(text)
      } catch {}
      return { status: res.status, json, text }
    })
  return { hub, dispatcher, repo, homeRepo, call, tokens, base: served.base, wsBase: served.wsBase, sessions: Context.get(served.ctx, Sessions), homes: Context.get(served.ctx, Homes) }
})
const setup = setupWith({})

const errorOf = (r: { status: number; json: any }) => ({ status: r.status, code: r.json?.error?.code as string, message: r.json?.error?.message as string })

describe("API auth", () => {
  it.live("health needs no token; everything else answers 401 without one", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const h = yield* t.call("GET", "/api/v1/health")
      assert.strictEqual(h.status, 200)
      assert.strictEqual(h.json.status, "ok")
      for (const [m, p] of [["GET", "/api/v1/agents"], ["GET", "/api/v1/sessions"], ["POST", "/api/v1/sessions"], ["GET", "/api/v1/templates"], ["GET", "/api/v1/commands/c-1"]] as const) {
        const r = errorOf(yield* t.call(m, p))
        assert.deepStrictEqual([r.status, r.code], [401, "unauthorized"], `${m} ${p}`)
        assert.include(r.message, "missing Authorization")
      }
    }))

  it.live("expired, not-yet-valid, wrong-signature, alg none, wrong-algorithm and malformed tokens are 401 with a reason", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const now = Math.floor(Date.now() / 1000)
      const cases: Array<[string, string, string]> = [
        ["expired", yield* Effect.promise(() => sign({ sub: "ann", exp: now - 3600 })), "expired"],
        ["nbf in the future", yield* Effect.promise(() => sign({ sub: "ann", nbf: now + 3600 })), "not valid yet"],
        ["wrong signature", yield* Effect.promise(() => sign({ sub: "ann" }, { secret: "another-secret-another-secret-another" })), "signature"],
        ["alg none", unsecured({ sub: "ann", role: "admin" }), "algorithm"],
        ["HS512", yield* Effect.promise(() => sign({ sub: "ann" }, { alg: "HS512" })), "algorithm"],
        ["RS256 without a JWKS", yield* Effect.promise(() => sign({ sub: "ann" }, { alg: "RS256" })), "algorithm"],
        ["not a JWT", "abc.def", "not"],
        ["no sub", yield* Effect.promise(() => sign({ role: "user" })), "sub"],
        ["bad role", yield* Effect.promise(() => sign({ sub: "ann", role: "root" })), "role"]
      ]
      for (const [name, token, words] of cases) {
        const r = errorOf(yield* t.call("GET", "/api/v1/sessions", { token }))
        assert.strictEqual(r.status, 401, name)
        assert.strictEqual(r.code, "unauthorized", name)
        assert.include(r.message, words, name)
      }
      const r = errorOf(yield* t.call("GET", "/api/v1/sessions", { headers: { authorization: `Basic ${t.tokens.ann}` } }))
      assert.strictEqual(r.status, 401)
    }))

  it.live("users get 403 on admin actions", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      for (const [m, p, body] of [
        ["PATCH", "/api/v1/agents/a", { status: "offline" }],
        ["POST", "/api/v1/agents/a/approve", undefined],
        ["POST", "/api/v1/agents/a/revoke", undefined],
        ["POST", "/api/v1/agents/a/enrollment-token", undefined],
        ["DELETE", "/api/v1/agents/a", undefined],
        ["POST", "/api/v1/templates", { name: "x", image: "y" }]
      ] as const) {
        const r = errorOf(yield* t.call(m, p, { token: t.tokens.ann, body }))
        assert.deepStrictEqual([r.status, r.code], [403, "forbidden"], `${m} ${p}`)
      }
      assert.isFalse(t.hub.agents.get("a")!.draining)
    }))
})

describe("API agents", () => {
  it.live("list and get show the agent guide's fields plus enrollment", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("k8s-prod-us-east-1", {
        region: "us-east-1",
        activeSessions: 5,
        lastHeartbeat: new Date("2025-11-20T10:30:45Z"),
        capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 100 }
      })
      const list = yield* t.call("GET", "/api/v1/agents", { token: t.tokens.ann })
      assert.strictEqual(list.status, 200)
      assert.strictEqual(list.json.agents.length, 1)
      const one = yield* t.call("GET", "/api/v1/agents/k8s-prod-us-east-1", { token: t.tokens.ann })
      assert.strictEqual(one.status, 200)
      assert.deepInclude(one.json, {
        id: "k8s-prod-us-east-1",
        platform: "kubernetes",
        region: "us-east-1",
        status: "online",
        last_heartbeat: "2025-11-20T10:30:45.000Z",
        capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 100 },
        active_sessions: 5,
        enrollment: "approved"
      })
      assert.deepStrictEqual(one.json.unknown_sessions, [])
      assert.deepStrictEqual(errorOf(yield* t.call("GET", "/api/v1/agents/nope", { token: t.tokens.ann })).status, 404)
      const bad = errorOf(yield* t.call("GET", "/api/v1/agents/Not_A_Name", { token: t.tokens.ann }))
      assert.strictEqual(bad.status, 400)
      assert.include(bad.message, "id:")
    }))

  it.live("PATCH drains and undrains; approve/reject/rotate/revoke reach the hub", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      t.hub.addAgent("p", { enrollment: "pending" })
      const drained = yield* t.call("PATCH", "/api/v1/agents/a", { token: t.tokens.admin, body: { status: "offline" } })
      assert.strictEqual(drained.status, 200)
      assert.strictEqual(drained.json.draining, true)
      assert.strictEqual(drained.json.status, "draining")
      const undrained = yield* t.call("PATCH", "/api/v1/agents/a", { token: t.tokens.admin, body: { status: "online" } })
      assert.strictEqual(undrained.json.draining, false)
      const bad = errorOf(yield* t.call("PATCH", "/api/v1/agents/a", { token: t.tokens.admin, body: { status: "asleep" } }))
      assert.strictEqual(bad.status, 400)
      assert.include(bad.message, "status:")
      const extra = errorOf(yield* t.call("PATCH", "/api/v1/agents/a", { token: t.tokens.admin, body: { status: "online", colour: "red" } }))
      assert.strictEqual(extra.status, 400)
      assert.include(extra.message, "colour: unknown field")
      assert.strictEqual(errorOf(yield* t.call("PATCH", "/api/v1/agents/zz", { token: t.tokens.admin, body: { status: "online" } })).status, 404)
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/p/approve", { token: t.tokens.admin })).json.enrollment, "approved")
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/a/revoke", { token: t.tokens.admin })).json.enrollment, "revoked")
      t.hub.addAgent("q", { enrollment: "pending" })
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/q/reject", { token: t.tokens.admin })).json.enrollment, "rejected")
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/p/rotate", { token: t.tokens.admin })).status, 200)
    }))

  it.live("DELETE removes a rejected agent only; enrollment-token answers the token once, never cached, and checks its ttl", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      t.hub.addAgent("r", { enrollment: "rejected" })
      const refused = errorOf(yield* t.call("DELETE", "/api/v1/agents/a", { token: t.tokens.admin }))
      assert.deepStrictEqual([refused.status, refused.code], [409, "conflict"])
      assert.include(refused.message, "only rejected agents")
      const deleted = yield* t.call("DELETE", "/api/v1/agents/r", { token: t.tokens.admin })
      assert.strictEqual(deleted.status, 200)
      assert.deepStrictEqual(deleted.json, { id: "r", deleted: true })
      assert.strictEqual((yield* t.call("GET", "/api/v1/agents/r", { token: t.tokens.admin })).status, 404)

      const issued = yield* Effect.promise(() =>
        fetch(`${t.base}/api/v1/agents/edge-new/enrollment-token`, { method: "POST", headers: { authorization: `Bearer ${t.tokens.admin}` } })
      )
      assert.strictEqual(issued.status, 201)
      assert.strictEqual(issued.headers.get("cache-control"), "no-store")
      const body = yield* Effect.promise(() => issued.json() as Promise<any>)
      assert.strictEqual(body.agent_id, "edge-new")
      assert.isString(body.token)
      assert.isAbove(Date.parse(body.expires_at), Date.now() + 3500_000)
      const withTtl = yield* t.call("POST", "/api/v1/agents/edge-new/enrollment-token", { token: t.tokens.admin, body: { ttl_seconds: 600 } })
      assert.isBelow(Date.parse(withTtl.json.expires_at), Date.now() + 700_000)
      const tooShort = errorOf(yield* t.call("POST", "/api/v1/agents/edge-new/enrollment-token", { token: t.tokens.admin, body: { ttl_seconds: 5 } }))
      assert.deepStrictEqual([tooShort.status, tooShort.code], [400, "invalid_request"])
      assert.include(tooShort.message, "ttl_seconds")
    }))
})

describe("API templates", () => {
  it.live("list, get, create (admin), duplicates and bad input", () =>
    Effect.gen(function*() {
      const t = yield* setup
      const list = yield* t.call("GET", "/api/v1/templates", { token: t.tokens.ann })
      assert.deepStrictEqual(list.json.templates.map((x: any) => x.name), ["demo"])
      const demo = yield* t.call("GET", "/api/v1/templates/demo", { token: t.tokens.ann })
      assert.deepInclude(demo.json, { name: "demo", vnc_port: 5900, persistent_home: false })
      assert.strictEqual(errorOf(yield* t.call("GET", "/api/v1/templates/nope", { token: t.tokens.ann })).status, 404)
      const created = yield* t.call("POST", "/api/v1/templates", {
        token: t.tokens.admin,
        body: { name: "firefox", display_name: "Firefox", image: "example/firefox:1", resources: { cpu: "1", memory: "1Gi" }, env: { LANG: "C" }, vnc_port: 5901, persistent_home: true }
      })
      assert.strictEqual(created.status, 201)
      assert.deepInclude(created.json, { name: "firefox", display_name: "Firefox", vnc_port: 5901, persistent_home: true })
      const dup = errorOf(yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "firefox", image: "x" } }))
      assert.deepStrictEqual([dup.status, dup.code], [409, "conflict"])
      const cases: Array<[unknown, string]> = [
        [{ name: "Bad Name", image: "x" }, "name:"],
        [{ name: "ok", image: "" }, "image:"],
        [{ name: "ok" }, "image: is required"],
        [{ name: "ok", image: "x", vnc_port: 70000 }, "vnc_port:"],
        [{ name: "ok", image: "x", resources: { cpu: "lots" } }, "resources.cpu:"],
        [{ name: "ok", image: "x", privileged: true }, "privileged: unknown field"]
      ]
      for (const [body, words] of cases) {
        const r = errorOf(yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body }))
        assert.strictEqual(r.status, 400, JSON.stringify(body))
        assert.include(r.message, words, JSON.stringify(body))
      }
    }))
})

describe("API template changes", () => {
  it.live("PATCH and DELETE (admin): validated as on create, 404 for an unknown name; sessions keep their spec", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "ff", image: "ff:1" } })
      const s = (yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "ff" } })).json
      assert.deepStrictEqual(errorOf(yield* t.call("PATCH", "/api/v1/templates/ff", { token: t.tokens.ann, body: { image: "ff:2" } })).status, 403)
      assert.deepStrictEqual(errorOf(yield* t.call("DELETE", "/api/v1/templates/ff", { token: t.tokens.ann })).status, 403)
      const patched = yield* t.call("PATCH", "/api/v1/templates/ff", { token: t.tokens.admin, body: { image: "ff:2", resources: { cpu: "1" } } })
      assert.strictEqual(patched.status, 200)
      assert.deepInclude(patched.json, { name: "ff", image: "ff:2" })
      assert.deepStrictEqual(patched.json.resources, { cpu: "1", memory: "512Mi" })
      assert.strictEqual((yield* t.call("GET", "/api/v1/templates/ff", { token: t.tokens.ann })).json.image, "ff:2")
      assert.strictEqual((yield* t.call("GET", `/api/v1/sessions/${s.id}`, { token: t.tokens.ann })).json.image, "ff:1")
      const cases: Array<[unknown, string]> = [
        [{ image: "" }, "image:"],
        [{ vnc_port: 0 }, "vnc_port:"],
        [{ resources: { memory: "much" } }, "resources.memory:"],
        [{ name: "other" }, "name: unknown field"],
        [{ warm_pool: -1 }, "warm_pool"],
        [{ warm_pool: 1, persistent_home: true }, "warm_pool: a template with persistent_home cannot have a warm pool"]
      ]
      for (const [body, words] of cases) {
        const r = errorOf(yield* t.call("PATCH", "/api/v1/templates/ff", { token: t.tokens.admin, body }))
        assert.strictEqual(r.status, 400, JSON.stringify(body))
        assert.include(r.message, words, JSON.stringify(body))
      }
      assert.strictEqual(errorOf(yield* t.call("PATCH", "/api/v1/templates/nope", { token: t.tokens.admin, body: { image: "x" } })).status, 404)
      const del = yield* t.call("DELETE", "/api/v1/templates/ff", { token: t.tokens.admin })
      assert.strictEqual(del.status, 204)
      assert.strictEqual(errorOf(yield* t.call("GET", "/api/v1/templates/ff", { token: t.tokens.ann })).status, 404)
      assert.strictEqual(errorOf(yield* t.call("DELETE", "/api/v1/templates/ff", { token: t.tokens.admin })).status, 404)
      assert.strictEqual(errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "ff" } })).status, 400)
      assert.strictEqual((yield* t.call("GET", `/api/v1/sessions/${s.id}`, { token: t.tokens.ann })).json.state, "creating")
    }))
})

describe("API homes", () => {
  it.live("GET /homes: own for users, all or ?user= for admins; DELETE: 409 while in use, 404 for another's, 204 once deleted", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      const created_at = "2026-01-01T00:00:00.000Z"
      t.dispatcher.responder = (d) =>
        d.request.action === "list_homes"
          ? {
            result: {
              action: "list_homes",
              homes: [
                { name: "home-ann", user_id: "ann" as never, size: "10Gi", created_at, in_use: false },
                { name: "home-bob", user_id: "bob" as never, size: "10Gi", created_at, in_use: true }
              ]
            }
          }
          : d.request.action === "delete_home"
          ? { result: { action: "delete_home", name: d.request.args.name } }
          : undefined
      yield* t.homes.refresh("a" as never)
      const mine = yield* t.call("GET", "/api/v1/homes", { token: t.tokens.ann })
      assert.strictEqual(mine.status, 200)
      assert.deepStrictEqual(mine.json.homes.map((h: any) => [h.name, h.user_id, h.size, h.in_use, h.last_used_at, h.expires_at]), [["home-ann", "ann", "10Gi", false, created_at, null]])
      assert.strictEqual((yield* t.call("GET", "/api/v1/homes", { token: t.tokens.admin })).json.homes.length, 2)
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/homes?user=bob", { token: t.tokens.admin })).json.homes.map((h: any) => h.name), ["home-bob"])
      assert.strictEqual(errorOf(yield* t.call("GET", "/api/v1/homes?user=bob", { token: t.tokens.ann })).status, 403)
      const annId = mine.json.homes[0].id
      const bobId = (yield* t.call("GET", "/api/v1/homes", { token: t.tokens.bob })).json.homes[0].id
      assert.strictEqual(errorOf(yield* t.call("DELETE", `/api/v1/homes/${annId}`, { token: t.tokens.bob })).status, 404)
      const busy = errorOf(yield* t.call("DELETE", `/api/v1/homes/${bobId}`, { token: t.tokens.admin }))
      assert.deepStrictEqual([busy.status, busy.code], [409, "conflict"])
      assert.strictEqual((yield* t.call("DELETE", `/api/v1/homes/${annId}`, { token: t.tokens.ann })).status, 204)
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/homes", { token: t.tokens.ann })).json.homes, [])
    }))
})

describe("API sessions", () => {
  it.live("create, get, list, delete, and the command behind it", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a", { region: "eu" })
      const created = yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo", region: "eu", resources: { cpu: "250m" }, env: { GREETING: "hi" }, persistent_home: true } })
      assert.strictEqual(created.status, 201)
      const s = created.json
      assert.deepInclude(s, { user_id: "ann", template: "demo", agent_id: "a", region: "eu", state: "creating", persistent_home: true })
      assert.deepStrictEqual(s.resources, { cpu: "250m", memory: "512Mi" })
      assert.deepStrictEqual(s.env, { GREETING: "hi" })
      const got = yield* t.call("GET", `/api/v1/sessions/${s.id}`, { token: t.tokens.ann })
      assert.strictEqual(got.json.id, s.id)
      const cmd = yield* t.call("GET", `/api/v1/commands/${s.create_command_id}`, { token: t.tokens.ann })
      assert.deepInclude(cmd.json, { id: s.create_command_id, action: "create_session", agent_id: "a", state: "sent" })
      assert.strictEqual(errorOf(yield* t.call("GET", `/api/v1/commands/${s.create_command_id}`, { token: t.tokens.bob })).status, 404)
      assert.strictEqual((yield* t.call("GET", `/api/v1/commands/${s.create_command_id}`, { token: t.tokens.admin })).status, 200)
      const ticket = yield* t.call("POST", `/api/v1/sessions/${s.id}/vnc-ticket`, { token: t.tokens.ann })
      assert.strictEqual(ticket.status, 201)
      assert.match(ticket.json.ticket, /^[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{43}$/) // signed claims . HMAC-SHA256, URL-safe
      assert.strictEqual(ticket.json.url, `/api/v1/sessions/${s.id}/vnc?ticket=${ticket.json.ticket}`)
      const del = yield* t.call("DELETE", `/api/v1/sessions/${s.id}`, { token: t.tokens.ann })
      assert.strictEqual(del.status, 202)
      assert.strictEqual(del.json.state, "terminating")
      const history = yield* t.call("GET", `/api/v1/sessions/${s.id}/history`, { token: t.tokens.ann })
      assert.strictEqual(history.status, 200)
      assert.strictEqual(history.json.session_id, s.id)
      assert.deepStrictEqual(history.json.history.map((e: any) => [e.state, e.by, e.reason]), [
        ["pending", { kind: "user", id: "ann" }, null],
        ["creating", { kind: "user", id: "ann" }, null],
        ["terminating", { kind: "user", id: "ann" }, null]
      ])
      assert.match(history.json.history[0].at, /^\d{4}-\d\d-\d\dT/)
      assert.strictEqual((yield* t.call("GET", `/api/v1/sessions/${s.id}/history`, { token: t.tokens.admin })).status, 200)
      assert.deepStrictEqual(errorOf(yield* t.call("GET", `/api/v1/sessions/${s.id}/history`, { token: t.tokens.bob })).status, 404)
      const list = yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.ann })
      assert.deepStrictEqual(list.json.sessions.map((x: any) => x.id), [s.id])
    }))

  it.live("users are isolated from each other's sessions; admins see all", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      const annS = (yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })).json
      const bobS = (yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.bob, body: { template: "demo" } })).json
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.bob })).json.sessions.map((x: any) => x.id), [bobS.id])
      for (const [m, p] of [["GET", `/api/v1/sessions/${annS.id}`], ["DELETE", `/api/v1/sessions/${annS.id}`], ["POST", `/api/v1/sessions/${annS.id}/vnc-ticket`]] as const) {
        const r = errorOf(yield* t.call(m, p, { token: t.tokens.bob }))
        assert.deepStrictEqual([r.status, r.code], [404, "not_found"], `${m} ${p}`)
      }
      assert.strictEqual(t.dispatcher.commands.filter((c) => c.request.action === "delete_session").length, 0)
      assert.strictEqual((yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.admin })).json.sessions.length, 2)
      assert.strictEqual((yield* t.call("GET", `/api/v1/sessions/${annS.id}`, { token: t.tokens.admin })).json.user_id, "ann")
    }))

  it.live("no eligible agent: 503 naming why, and nothing half-created", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a", { draining: true, status: "draining" })
      const r = errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } }))
      assert.deepStrictEqual([r.status, r.code], [503, "no_eligible_agent"])
      assert.include(r.message, "a: draining")
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.admin })).json.sessions, [])
      assert.strictEqual(t.repo.sessions.size, 0)
      assert.strictEqual(t.dispatcher.commands.length, 0)
    }))

  it.live("bad input is 400 naming the field", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      const cases: Array<[unknown, string]> = [
        [{ template: "nope" }, "template:"],
        [{ template: "Demo!" }, "template:"],
        [{}, "template: is required"],
        [{ template: "demo", gpu: 1 }, "gpu: unknown field"],
        [{ template: "demo", persistent_home: "yes" }, "persistent_home:"],
        [{ template: "demo", resources: { cpu: 2 } }, "resources.cpu:"],
        [{ template: "demo", resources: { disk: "1Gi" } }, "resources.disk: unknown field"],
        [{ template: "demo", env: { "1BAD": "x" } }, "env.1BAD:"],
        [{ template: "demo", env: { GOOD: 1 } }, "env.GOOD:"],
        [{ template: "demo", region: "" }, "region:"],
        [[1, 2], "request body"]
      ]
      for (const [body, words] of cases) {
        const r = errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body }))
        assert.deepStrictEqual([r.status, r.code], [400, "invalid_request"], JSON.stringify(body))
        assert.include(r.message, words, JSON.stringify(body))
      }
      const notJson = errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, raw: "{template:", headers: { "content-type": "application/json" } }))
      assert.deepStrictEqual([notJson.status, notJson.code], [400, "invalid_request"])
      const big = errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo", env: { X: "y".repeat(5000) } } }))
      assert.deepStrictEqual([big.status, big.code], [413, "body_too_large"])
      const text = errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, raw: "template=demo", headers: { "content-type": "text/plain" } }))
      assert.strictEqual(text.status, 415)
      assert.strictEqual(t.dispatcher.commands.length, 0)
      assert.strictEqual(t.repo.sessions.size, 0)
    }))

  it.live("unknown endpoints are JSON 404s; /metrics speaks Prometheus", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })
      const r = errorOf(yield* t.call("GET", "/api/v1/nothing", { token: t.tokens.ann }))
      assert.deepStrictEqual([r.status, r.code], [404, "not_found"])
      const m = yield* t.call("GET", "/metrics")
      assert.strictEqual(m.status, 200)
      assert.match(m.text, /streamspace_control_plane_sessions\{state="creating"\} 1/)
      assert.match(m.text, /streamspace_control_plane_agents\{status="online"\} 1/)
      assert.match(m.text, /streamspace_control_plane_session_transitions_total/)
    }))
})

describe("API: one user must not deny service to all (issue 14)", () => {
  it.live("list endpoints are paginated: limit and an opaque cursor, next_cursor until the last page; a bad limit or cursor is 400 naming it", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ MAX_SESSIONS_PER_USER: "0", SESSION_CREATES_PER_MINUTE: "0" })
      for (const id of ["a1", "a2", "a3"]) t.hub.addAgent(id)
      const ids: Array<string> = []
      for (let i = 0; i < 5; i++) ids.push((yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })).json.id)
      yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.bob, body: { template: "demo" } })
      const walk = (path: string, key: string, token: string) =>
        Effect.gen(function*() {
          const seen: Array<any> = []
          const pages: Array<number> = []
          let cursor: string | null = null
          do {
            const sep = path.includes("?") ? "&" : "?"
            const r: { status: number; json: any } = yield* t.call("GET", `${path}${cursor === null ? "" : `${sep}cursor=${encodeURIComponent(cursor)}`}`, { token })
            assert.strictEqual(r.status, 200, JSON.stringify(r.json))
            seen.push(...r.json[key])
            pages.push(r.json[key].length)
            cursor = r.json.next_cursor
          } while (cursor !== null)
          return { seen, pages }
        })
      const mine = yield* walk("/api/v1/sessions?limit=2", "sessions", t.tokens.ann)
      assert.deepStrictEqual(mine.pages, [2, 2, 1])
      assert.sameMembers(mine.seen.map((s) => s.id), ids)
      assert.strictEqual(new Set(mine.seen.map((s) => s.id)).size, 5)
      const everything = yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.admin })
      assert.deepStrictEqual([everything.json.sessions.length, everything.json.next_cursor], [6, null])
      assert.deepStrictEqual((yield* walk("/api/v1/agents?limit=2", "agents", t.tokens.ann)).seen.map((a) => a.id), ["a1", "a2", "a3"])
      yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "zeta", image: "z:1" } })
      assert.deepStrictEqual((yield* walk("/api/v1/templates?limit=1", "templates", t.tokens.ann)).pages, [1, 1])
      for (const [query, words] of [
        ["limit=0", "limit: \"0\" is invalid"],
        ["limit=501", "limit: \"501\" is invalid: expected a whole number from 1 to 500"],
        ["limit=abc", "limit:"],
        ["cursor=not-a-cursor", "cursor: not a cursor of this list"],
        [`cursor=${(yield* t.call("GET", "/api/v1/agents?limit=1", { token: t.tokens.ann })).json.next_cursor}`, "cursor: not a cursor of this list"]
      ] as const) {
        const r = errorOf(yield* t.call("GET", `/api/v1/sessions?${query}`, { token: t.tokens.ann }))
        assert.deepStrictEqual([r.status, r.code], [400, "invalid_request"], query)
        assert.include(r.message, words, query)
      }
    }))

  it.live("env is capped (count, name length, value size, total) and user env may not set STREAMSPACE_* or VNC_*: 400 naming the problem", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ MAX_BODY_BYTES: String(1024 * 1024) })
      t.hub.addAgent("a")
      const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`V${i}`, "x"]))
      const total = Object.fromEntries(Array.from({ length: 3 }, (_, i) => [`BIG${i}`, "y".repeat(30 * 1024)]))
      const cases: Array<[unknown, string]> = [
        [{ template: "demo", env: many }, "env has 65 variables; at most 64"],
        [{ template: "demo", env: { ["N".repeat(257)]: "x" } }, "at most 256 are allowed"],
        [{ template: "demo", env: { HUGE: "z".repeat(900 * 1024) } }, "env.HUGE: value is 921600 bytes; at most 32768"],
        [{ template: "demo", env: total }, "at most 65536 are allowed"],
        [{ template: "demo", env: { STREAMSPACE_USER: "root" } }, "env.STREAMSPACE_USER: \"STREAMSPACE_USER\" is reserved"],
        [{ template: "demo", env: { VNC_PORT: "1" } }, "\"VNC_PORT\" is reserved"],
        [{ template: "demo", env: { vnc_password: "x" } }, "\"vnc_password\" is reserved"]
      ]
      for (const [body, words] of cases) {
        const r = errorOf(yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body }))
        assert.deepStrictEqual([r.status, r.code], [400, "invalid_request"], words)
        assert.include(r.message, words)
      }
      assert.strictEqual(t.dispatcher.commands.length, 0)
      // Within the caps, and a template (admin) may still set VNC_* variables such as VNC_GEOMETRY.
      const ok = yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo", env: { GREETING: "hi", ...Object.fromEntries(Array.from({ length: 63 }, (_, i) => [`V${i}`, "x"])) } } })
      assert.strictEqual(ok.status, 201, ok.text)
      const tpl = yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "geo", image: "x:1", env: { VNC_GEOMETRY: "800x600" } } })
      assert.strictEqual(tpl.status, 201, tpl.text)
      const tplBig = errorOf(yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "big", image: "x:1", env: many } }))
      assert.deepStrictEqual([tplBig.status, tplBig.code], [400, "invalid_request"])
    }))

  it.live("resources: zero is refused, and requests outside the template's bounds (else SESSION_MIN_/MAX_*) are 400 naming the bound", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ SESSION_MAX_CPU: "4", SESSION_MAX_MEMORY: "8Gi" })
      t.hub.addAgent("a")
      const session = (resources: unknown, template = "demo") => Effect.map(t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template, resources } }), errorOf)
      for (const [resources, words] of [
        [{ cpu: "0" }, "resources.cpu: must be greater than zero"],
        [{ memory: "0" }, "resources.memory: must be greater than zero"],
        [{ memory: "0Mi" }, "resources.memory: must be greater than zero"],
        [{ cpu: "0.0" }, "resources.cpu: must be greater than zero"],
        [{ cpu: "50m" }, "resources.cpu: 50m is below the minimum 100m (SESSION_MIN_CPU)"],
        [{ cpu: "5" }, "resources.cpu: 5 is above the maximum 4 (SESSION_MAX_CPU)"],
        [{ memory: "16Gi" }, "resources.memory: 16Gi is above the maximum 8Gi (SESSION_MAX_MEMORY)"]
      ] as const) {
        const r = yield* session(resources)
        assert.deepStrictEqual([r.status, r.code], [400, "invalid_request"], words)
        assert.include(r.message, words)
      }
      // A template narrows (or widens) the bounds for its sessions; its own defaults must fit them.
      const badTpl = errorOf(yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "tiny", image: "x:1", resources: { memory: "2Gi" }, resource_bounds: { max: { memory: "1Gi" } } } }))
      assert.deepStrictEqual([badTpl.status, badTpl.code], [400, "invalid_request"])
      assert.include(badTpl.message, "resources.memory: 2Gi is above the maximum 1Gi (template \"tiny\")")
      const inverted = errorOf(yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "inv", image: "x:1", resource_bounds: { min: { cpu: "2" }, max: { cpu: "1" } } } }))
      assert.include(inverted.message, "min cpu 2 is above max cpu 1")
      const zeroTpl = errorOf(yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "zero", image: "x:1", resources: { memory: "0" } } }))
      assert.include(zeroTpl.message, "resources.memory: must be greater than zero")
      const tpl = yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "big", image: "x:1", resources: { cpu: "1", memory: "1Gi" }, resource_bounds: { min: { memory: "1Gi" }, max: { cpu: "8", memory: "32Gi" } } } })
      assert.strictEqual(tpl.status, 201, tpl.text)
      assert.deepStrictEqual(tpl.json.resource_bounds, { min: { memory: "1Gi" }, max: { cpu: "8", memory: "32Gi" } })
      const low = yield* session({ memory: "512Mi" }, "big")
      assert.include(low.message, "resources.memory: 512Mi is below the minimum 1Gi (template \"big\")")
      const fine = yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "big", resources: { cpu: "6", memory: "12Gi" } } })
      assert.strictEqual(fine.status, 201, fine.text)
      assert.strictEqual(t.dispatcher.commands.length, 1)
    }))

  it.live("MAX_SESSIONS_PER_USER: a user over the limit gets 429 limit_exceeded naming it; others and admins are unaffected; deleting one frees a slot", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ MAX_SESSIONS_PER_USER: "2", SESSION_CREATES_PER_MINUTE: "0" })
      t.hub.addAgent("a")
      const create = (token: string) => t.call("POST", "/api/v1/sessions", { token, body: { template: "demo" } })
      const first = yield* create(t.tokens.ann)
      assert.strictEqual((yield* create(t.tokens.ann)).status, 201)
      const over = yield* create(t.tokens.ann)
      assert.deepStrictEqual([over.status, over.json.error.code], [429, "limit_exceeded"])
      assert.include(over.json.error.message, "MAX_SESSIONS_PER_USER=2")
      assert.strictEqual((yield* create(t.tokens.bob)).status, 201)
      for (let i = 0; i < 3; i++) assert.strictEqual((yield* create(t.tokens.admin)).status, 201)
      // A deleted session no longer counts once it has ended.
      yield* t.call("DELETE", `/api/v1/sessions/${first.json.id}`, { token: t.tokens.ann })
      const del = t.dispatcher.commands.find((c) => c.request.action === "delete_session")!
      yield* t.dispatcher.complete(del.record.id, { action: "delete_session", session_id: first.json.id })
      yield* waitFor("the delete to land", Effect.map(t.call("GET", `/api/v1/sessions/${first.json.id}`, { token: t.tokens.ann }), (r) => r.json.state === "terminated"))
      assert.strictEqual((yield* create(t.tokens.ann)).status, 201)
    }))

  it.live("SESSION_CREATES_PER_MINUTE: the create over the rate is 429 limit_exceeded with Retry-After", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ SESSION_CREATES_PER_MINUTE: "3", MAX_SESSIONS_PER_USER: "0" })
      t.hub.addAgent("a")
      for (let i = 0; i < 3; i++) assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })).status, 201)
      const res = yield* Effect.promise(() =>
        fetch(`${t.base}/api/v1/sessions`, { method: "POST", headers: { authorization: `Bearer ${t.tokens.ann}`, "content-type": "application/json" }, body: JSON.stringify({ template: "demo" }) })
      )
      const body: any = yield* Effect.promise(() => res.json())
      assert.deepStrictEqual([res.status, body.error.code], [429, "limit_exceeded"])
      assert.include(body.error.message, "SESSION_CREATES_PER_MINUTE")
      const retry = Number(res.headers.get("retry-after"))
      assert.isTrue(retry >= 1 && retry <= 60, `Retry-After ${retry}`)
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.bob, body: { template: "demo" } })).status, 201)
    }))

  it.live("the VNC ticket of a session at MAX_VIEWERS_PER_SESSION is 429 limit_exceeded", () =>
    Effect.gen(function*() {
      const t = yield* setupWith({ MAX_VIEWERS_PER_SESSION: "1" })
      t.hub.addAgent("a")
      t.dispatcher.responder = (d) =>
        d.request.action === "create_session"
          ? { result: { action: "create_session", session: { session_id: d.request.args.session_id, phase: "running", observed_at: "2026-01-01T00:00:00Z" } } }
          : undefined
      t.hub.tunnelResponder = () => ({ window: 65536 })
      const s = yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })
      yield* waitFor("running", Effect.map(t.call("GET", `/api/v1/sessions/${s.json.id}`, { token: t.tokens.ann }), (r) => r.json.state === "running"))
      const ticket = yield* t.call("POST", `/api/v1/sessions/${s.json.id}/vnc-ticket`, { token: t.tokens.ann })
      assert.strictEqual(ticket.status, 201)
      const v = connectViewer(`${t.wsBase}${ticket.json.url}`)
      yield* Effect.promise(() => v.opened)
      yield* waitFor("the viewer counted", Effect.map(t.call("POST", `/api/v1/sessions/${s.json.id}/vnc-ticket`, { token: t.tokens.ann }), (r) => r.status === 429))
      const refused = errorOf(yield* t.call("POST", `/api/v1/sessions/${s.json.id}/vnc-ticket`, { token: t.tokens.ann }))
      assert.deepStrictEqual([refused.status, refused.code], [429, "limit_exceeded"])
      assert.include(refused.message, "MAX_VIEWERS_PER_SESSION=1")
      v.ws.close()
      yield* Effect.promise(() => v.closed)
    }))
})

describe("API paths the router cannot decode", () => {
  it.live("malformed percent-encoding is a JSON 400 naming the problem; an over-long id a JSON 404", () =>
    Effect.gen(function*() {
      const t = yield* setup
      // %ff is not UTF-8, a lone % and %zz are no escapes at all, %c3%28 is a broken two-byte sequence
      for (const path of ["/api/v1/sessions/%ff", "/api/v1/agents/%", "/api/v1/templates/%zz", "/api/v1/%c3%28", "/api/v1/sessions/a%e2%82/vnc-ticket"]) {
        for (const method of ["GET", "DELETE", "POST"]) {
          const r = yield* t.call(method, path, { token: t.tokens.ann })
          const e = errorOf(r)
          assert.deepStrictEqual([e.status, e.code], [400, "invalid_request"], `${method} ${path}: ${r.text}`)
          assert.include(e.message, "malformed percent-encoding")
          assert.include(e.message, path)
          assert.match(r.text, /^\{"error":/)
        }
      }
      // the router's own limit on a path parameter's length: JSON 404, not an empty one
      const long = errorOf(yield* t.call("GET", `/api/v1/sessions/${"x".repeat(300)}`, { token: t.tokens.ann }))
      assert.strictEqual(long.status, 404)
      assert.isString(long.code)
      // valid escapes still reach the routes (an unknown session, in the JSON shape)
      const valid = errorOf(yield* t.call("GET", "/api/v1/sessions/caf%C3%A9", { token: t.tokens.ann }))
      assert.deepStrictEqual([valid.status, valid.code], [404, "not_found"])
      // outside /api/v1 (the web UI's paths) a path that matches nothing is a JSON 404 however it is spelled;
      // so is GET /health, whose message names the API's health check
      const ui = errorOf(yield* t.call("GET", "/ui/%ff"))
      assert.deepStrictEqual([ui.status, ui.code], [404, "not_found"])
      const health = errorOf(yield* t.call("GET", "/health"))
      assert.deepStrictEqual([health.status, health.code], [404, "not_found"])
      assert.include(health.message, "/api/v1/health")
    }))

  it.live("fast-check: random methods, path segments (with stray and broken % escapes) and query strings never get a 5xx, and every error is JSON with a code", () =>
    Effect.gen(function*() {
      const t = yield* setup
      t.hub.addAgent("a")
      const hex = fc.constantFrom(..."0123456789abcdefABCDEFgz%")
      const piece = fc.oneof(
        fc.string({ unit: fc.constantFrom(..."abcXYZ019-_~!$&'()*+,;=:@"), maxLength: 8 }),
        fc.tuple(hex, hex).map(([a, b]) => `%${a}${b}`), // valid, invalid or half escapes
        fc.constantFrom("%", "%f", "%ff", "%c3%28", "%e2%82", "%ed%a0%80", "%00", "%2F", "%25", "%C3%A9", "x".repeat(150))
      )
      const segment = fc.array(piece, { minLength: 1, maxLength: 4 }).map((ps) => ps.join("")).map((s) => (s === "." || s === ".." ? "x" : s))
      const path = fc.tuple(
        fc.constantFrom("", "/sessions", "/agents", "/templates", "/commands", "/health"),
        fc.array(segment, { maxLength: 3 })
      ).map(([base, segs]) => `/api/v1${base}${segs.map((s) => `/${s}`).join("")}`)
      const query = fc.array(fc.tuple(fc.array(piece, { maxLength: 3 }), fc.array(piece, { maxLength: 3 })), { maxLength: 3 })
        .map((kv) => (kv.length === 0 ? "" : `?${kv.map(([k, v]) => `${k.join("")}=${v.join("")}`).join("&")}`))
      const method = fc.constantFrom("GET", "POST", "DELETE", "PATCH", "PUT")
      yield* Effect.promise(() =>
        fc.assert(
          fc.asyncProperty(method, path, query, async (m, p, q) => {
            const r = await Effect.runPromise(t.call(m, `${p}${q}`, { token: t.tokens.ann, ...(m === "GET" || m === "DELETE" ? {} : { body: {} }) }))
            const what = `${m} ${p}${q}: HTTP ${r.status} ${r.text.slice(0, 200)}`
            assert.isBelow(r.status, 500, what)
            if (r.status >= 400) {
              assert.isString(r.json?.error?.code, what)
              assert.isString(r.json?.error?.message, what)
            }
          }),
          { numRuns: 300 }
        )
      )
      assert.strictEqual((yield* t.call("GET", "/api/v1/health")).status, 200)
    }), 60_000)
})
