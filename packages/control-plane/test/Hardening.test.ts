// Issue 14, "secrets, tokens, files": the audit log (persisted, admins only, paginated, with who did it),
// no-store on tickets, nosniff on JSON, HSTS over TLS, and METRICS_TOKEN on /metrics.
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer, References } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { get as httpsGet } from "node:https"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Api from "../src/Api.ts"
import { Audit } from "../src/Audit.ts"
import { Homes, makeMemoryRepo as makeHomesRepo } from "../src/Homes.ts"
import { Auth } from "../src/Auth.ts"
import { ControlPlane } from "../src/ControlPlane.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { Store } from "../src/Store.ts"
import { VncProxy } from "../src/VncProxy.ts"
import { fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { serveApp } from "./support/http.ts"
import { TEST_TLS_CERT, TEST_TLS_KEY } from "./support/httpTls.ts"
import { sign, TEST_JWT_SECRET } from "./support/jwt.ts"

const METRICS_TOKEN = "metrics-token-0123456789abcdef0123456789"

/** The API on a fake hub and dispatcher, with the audit log on a real (in-memory PGlite) Store. */
const setup = (extra: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const hub = yield* makeFakeHub
    const dispatcher = yield* makeFakeDispatcher
    const services = Layer.mergeAll(
      fakeHubLayer(hub),
      fakeDispatcherLayer(dispatcher),
      ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, LOG_LEVEL: "error", ...extra }),
      Layer.succeed(References.MinimumLogLevel, "Error")
    )
    const app = Api.layer.pipe(
      Layer.provideMerge(Layer.merge(VncProxy.layer, Homes.layerMemory(makeHomesRepo()))),
      Layer.provideMerge(Sessions.layerMemory(makeMemoryRepo())),
      Layer.provideMerge(Auth.layer),
      Layer.provideMerge(Audit.layer.pipe(Layer.provideMerge(Store.layerMemory))),
      Layer.provideMerge(services)
    )
    const served = yield* serveApp(app)
    const tokens = {
      ann: yield* Effect.promise(() => sign({ sub: "ann" })),
      admin: yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
    }
    const call = (method: string, path: string, options: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
      Effect.promise(async () => {
        const headers: Record<string, string> = { ...options.headers }
        if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
        if (options.body !== undefined) headers["content-type"] = "application/json"
        const res = await fetch(`${served.base}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }) })
        const text = await res.text()
        let json: any
        try {
          json = JSON.parse(text)
        } catch {}
        return { status: res.status, headers: res.headers, json, text }
      })
    return { hub, call, tokens, store: Context.get(served.ctx, Store) }
  })

describe("audit log", () => {
  it.live("approvals, revocations, drains, template and session changes are recorded with who did it, readable by admins only, newest first, paginated", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      t.hub.addAgent("a")
      t.hub.addAgent("p", { enrollment: "pending" })
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/p/approve", { token: t.tokens.admin })).status, 200)
      assert.strictEqual((yield* t.call("PATCH", "/api/v1/agents/a", { token: t.tokens.admin, body: { status: "offline" } })).status, 200)
      assert.strictEqual((yield* t.call("PATCH", "/api/v1/agents/a", { token: t.tokens.admin, body: { status: "online" } })).status, 200)
      assert.strictEqual((yield* t.call("POST", "/api/v1/templates", { token: t.tokens.admin, body: { name: "xfce", display_name: "XFCE", image: "img/xfce:1", vnc_port: 5900 } })).status, 201)
      const s = yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })
      assert.strictEqual(s.status, 201)
      assert.strictEqual((yield* t.call("DELETE", `/api/v1/sessions/${s.json.id}`, { token: t.tokens.ann })).status, 202)
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/a/revoke", { token: t.tokens.admin })).status, 200)
      // A refused action is not recorded.
      assert.strictEqual((yield* t.call("POST", "/api/v1/agents/a/approve", { token: t.tokens.ann })).status, 403)

      // Users may not read it.
      const denied = yield* t.call("GET", "/api/v1/audit", { token: t.tokens.ann })
      assert.strictEqual(denied.status, 403)
      assert.strictEqual((yield* t.call("GET", "/api/v1/audit")).status, 401)

      const all = yield* t.call("GET", "/api/v1/audit", { token: t.tokens.admin })
      assert.strictEqual(all.status, 200)
      const seen = all.json.events.map((e: any) => [e.action, e.actor, e.actor_role, e.target_type, e.target_id])
      assert.deepStrictEqual(seen, [
        ["agent.revoke", "root", "admin", "agent", "a"],
        ["session.delete", "ann", "user", "session", s.json.id],
        ["session.create", "ann", "user", "session", s.json.id],
        ["template.create", "root", "admin", "template", "xfce"],
        ["agent.undrain", "root", "admin", "agent", "a"],
        ["agent.drain", "root", "admin", "agent", "a"],
        ["agent.approve", "root", "admin", "agent", "p"]
      ])
      assert.strictEqual(all.json.next_cursor, null)
      assert.match(all.json.events[0].at, /^\d{4}-\d\d-\d\dT/)

      // Pages of 3 walk the same list with the cursor, without overlap.
      const pages: Array<string> = []
      let cursor: string | null = null
      do {
        const page: any = yield* t.call("GET", `/api/v1/audit?limit=3${cursor === null ? "" : `&cursor=${cursor}`}`, { token: t.tokens.admin })
        assert.strictEqual(page.status, 200)
        assert.isAtMost(page.json.events.length, 3)
        pages.push(...page.json.events.map((e: any) => e.action))
        cursor = page.json.next_cursor
      } while (cursor !== null)
      assert.deepStrictEqual(pages, seen.map((x: Array<string>) => x[0]))

      // Bad paging input names the parameter.
      const bad = yield* t.call("GET", "/api/v1/audit?limit=0", { token: t.tokens.admin })
      assert.strictEqual(bad.status, 400)
      assert.include(bad.json.error.message, "limit")
      const unknown = yield* t.call("GET", "/api/v1/audit?colour=red", { token: t.tokens.admin })
      assert.strictEqual(unknown.status, 400)

      // It lives in the database.
      const stored = yield* t.store.audit.page({ limit: 100 })
      assert.strictEqual(stored.events.length, 7)
    }), { timeout: 60_000 })
})

describe("response headers", () => {
  it.live("VNC tickets are no-store; JSON answers carry nosniff; plain HTTP sends no HSTS", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      t.hub.addAgent("a")
      const s = yield* t.call("POST", "/api/v1/sessions", { token: t.tokens.ann, body: { template: "demo" } })
      const ticket = yield* t.call("POST", `/api/v1/sessions/${s.json.id}/vnc-ticket`, { token: t.tokens.ann })
      assert.strictEqual(ticket.status, 201)
      assert.strictEqual(ticket.headers.get("cache-control"), "no-store")
      assert.strictEqual(ticket.headers.get("x-content-type-options"), "nosniff")
      for (const r of [s, yield* t.call("GET", "/api/v1/sessions", { token: t.tokens.ann }), yield* t.call("GET", "/api/v1/sessions")]) {
        assert.strictEqual(r.headers.get("x-content-type-options"), "nosniff")
        assert.isNull(r.headers.get("strict-transport-security"))
      }
    }), { timeout: 60_000 })

  it.live("over TLS every answer carries Strict-Transport-Security", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "cp-hsts-"))), (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true })))
      writeFileSync(join(dir, "tls.crt"), TEST_TLS_CERT)
      writeFileSync(join(dir, "tls.key"), TEST_TLS_KEY)
      const env = {
        DEV_MODE: "true", PORT: "0", HOST: "127.0.0.1", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn",
        TLS_CERT_FILE: join(dir, "tls.crt"), TLS_KEY_FILE: join(dir, "tls.key")
      }
      const ctx = yield* Layer.build(ControlPlane.layer.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))))
      const cp = Context.get(ctx, ControlPlane)
      for (const path of ["/api/v1/health", "/", "/api/v1/nope"]) {
        const headers = yield* Effect.promise(() =>
          new Promise<Record<string, unknown>>((resolve, reject) => {
            httpsGet(`${cp.url}${path}`, { ca: TEST_TLS_CERT }, (res) => {
              res.resume()
              res.on("end", () => resolve(res.headers))
            }).on("error", reject)
          })
        )
        assert.strictEqual(headers["strict-transport-security"], "max-age=31536000", path)
        assert.strictEqual(headers["x-content-type-options"], "nosniff", path)
      }
    }), { timeout: 60_000 })
})

describe("METRICS_TOKEN", () => {
  it.live("without it /metrics is open; with it a scrape needs the token as a bearer token", () =>
    Effect.gen(function*() {
      const open = yield* setup()
      assert.strictEqual((yield* open.call("GET", "/metrics")).status, 200)
      const t = yield* setup({ METRICS_TOKEN })
      const none = yield* t.call("GET", "/metrics")
      assert.strictEqual(none.status, 401)
      assert.include(none.json.error.message, "METRICS_TOKEN")
      assert.strictEqual((yield* t.call("GET", "/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}x` } })).status, 401)
      // A user's JWT is not the metrics token.
      assert.strictEqual((yield* t.call("GET", "/metrics", { token: t.tokens.admin })).status, 401)
      const ok = yield* t.call("GET", "/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}` } })
      assert.strictEqual(ok.status, 200)
      assert.include(ok.text, "streamspace_control_plane_")
    }), { timeout: 60_000 })
})
