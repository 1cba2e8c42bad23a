// Issue 18: the admin usage page (#/usage) shows per team and per user the sessions, CPU, memory and quotas the
// API reports. A control plane in this process (embedded PGlite), a fake agent over a real WebSocket, users'
// tokens carrying a `groups` claim, Debian's chromium driven by playwright-core.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import type { AgentId } from "@streamspace/protocol"
import { AgentHub, ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { connectAndHello } from "@streamspace/control-plane/test-support"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { createHmac } from "node:crypto"
import { type Browser, chromium } from "playwright-core"

const JWT_SECRET = "browser-usage-test-secret-0123456789abcdef"
const BOOTSTRAP = "browser-usage-bootstrap-0123456789abcdef"
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
const jwt = (sub: string, role: "admin" | "user", groups: ReadonlyArray<string> = []) => {
  const now = Math.floor(Date.now() / 1000)
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, role, groups, iat: now, exp: now + 3600 })}`
  return `${head}.${createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`
}

describe("the admin usage page in Chromium", () => {
  let scope: Scope.Closeable
  let url: string
  let browser: Browser
  const admin = jwt("root", "admin")
  const call = async (method: string, path: string, token: string, body: unknown) => {
    const r = await fetch(`${url}/api/v1${path}`, { method, headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    if (r.status !== 201) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`)
  }

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    const ctx = await Effect.runPromise(Layer.buildWithScope(
      ControlPlane.layerNoDeps.pipe(Layer.provide(ControlPlaneConfig.layerFromRecord({
        HOST: "127.0.0.1", PORT: "0", JWT_SECRET, DATABASE_IN_MEMORY: "true", LOG_LEVEL: "error", AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP, PING_INTERVAL: "1h"
      }))),
      scope
    ))
    url = Context.get(ctx, ControlPlane).url
    const hub = Context.get(ctx, AgentHub)
    const ws = `${url.replace(/^http/, "ws")}/api/v1/agent/connect`
    // Enrol one agent (bootstrap, approve, reconnect with its credential); it stays connected for the test.
    await Effect.runPromise(Effect.gen(function*() {
      const { agent } = yield* connectAndHello(ws, BOOTSTRAP, "agent-1")
      yield* hub.approve("agent-1" as AgentId)
      const credential = (yield* agent.next("credential")).payload.token
      yield* agent.closed()
      yield* connectAndHello(ws, credential, "agent-1", { capacity: { cpu: "32", memory: "64Gi", max_sessions: 50 } })
    }).pipe(Scope.provide(scope)))
    await call("POST", "/teams", admin, { name: "physics", group: "g-physics", quota: { max_sessions: 10, cpu: "8", memory: "16Gi" } })
    await call("POST", "/sessions", jwt("ann", "user", ["g-physics"]), { template: "demo", resources: { cpu: "1500m", memory: "2Gi" } })
    await call("POST", "/sessions", jwt("ann", "user", ["g-physics"]), { template: "demo", resources: { cpu: "500m", memory: "1Gi" } })
    await call("POST", "/sessions", jwt("bob", "user"), { template: "demo", resources: { cpu: "250m", memory: "512Mi" } })
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--disable-sync", "--no-first-run"]
    })
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  it("shows each team's sessions, CPU and memory against its quota, and each user's figures; only admins see the page", async () => {
    const page = await browser.newPage()
    await page.goto(`${url}/#token=${admin}`)
    await page.locator("#nav a[data-page=usage]").click()
    const team = (name: string, col: string) => page.locator(`[data-testid=usage-teams] tr[data-team="${name}"] td[data-col=${col}]`)
    const user = (name: string, col: string) => page.locator(`[data-testid=usage-users] tr[data-user="${name}"] td[data-col=${col}]`)
    await team("physics", "sessions").waitFor({ timeout: 20_000 })
    assert.strictEqual(await team("physics", "sessions").textContent(), "2 / 10")
    assert.strictEqual(await team("physics", "cpu").textContent(), "2 / 8")
    assert.strictEqual(await team("physics", "memory").textContent(), "3Gi / 16Gi")
    assert.strictEqual(await team("none", "sessions").textContent(), "1")
    assert.strictEqual(await team("none", "cpu").textContent(), "0.25")
    assert.strictEqual(await user("ann", "memory").textContent(), "3Gi")
    assert.strictEqual(await user("bob", "memory").textContent(), "512Mi")
    assert.strictEqual(await user("bob", "sessions").textContent(), "1")

    // A user has no Usage link, and #/usage shows them their sessions instead.
    const mine = await browser.newPage()
    await mine.goto(`${url}/#token=${jwt("bob", "user")}`)
    await mine.locator("#who").filter({ hasText: "bob" }).waitFor({ timeout: 20_000 })
    assert.isFalse(await mine.locator("#nav a[data-page=usage]").isVisible())
    await mine.goto(`${url}/#/usage`)
    await mine.locator("h1").filter({ hasText: "Sessions" }).first().waitFor({ timeout: 20_000 })
    assert.strictEqual(await mine.locator("[data-testid=usage-teams]").count(), 0)
  }, 120_000)
})
