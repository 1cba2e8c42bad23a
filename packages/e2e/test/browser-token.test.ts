// Issue 14: opening the web UI at `/#token=...` while another token is stored asks before replacing it, naming
// who the new token is (sub and role) and who is logged in now. A control plane in this process, Debian's
// chromium driven by playwright-core.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { createHmac } from "node:crypto"
import { type Browser, chromium, type Page } from "playwright-core"

const JWT_SECRET = "browser-token-test-secret-0123456789abcdef"
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
const jwt = (sub: string, role: "admin" | "user") => {
  const now = Math.floor(Date.now() / 1000)
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, role, iat: now, exp: now + 3600 })}`
  return `${head}.${createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`
}

describe("a #token= link in Chromium", () => {
  let scope: Scope.Closeable
  let url: string
  let browser: Browser
  let page: Page
  const stored = () => page.evaluate(() => localStorage.getItem("streamspace.token"))
  const who = () => page.locator("#who")

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    const ctx = await Effect.runPromise(Layer.buildWithScope(
      ControlPlane.layerNoDeps.pipe(Layer.provide(ControlPlaneConfig.layerFromRecord({
        HOST: "127.0.0.1", PORT: "0", JWT_SECRET, DATABASE_IN_MEMORY: "true", LOG_LEVEL: "error"
      }))),
      scope
    ))
    url = Context.get(ctx, ControlPlane).url
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--disable-sync", "--no-first-run"]
    })
    page = await browser.newPage()
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  it("logs in at once when nothing is stored; asks, naming both accounts, before replacing a stored token", async () => {
    const admin = jwt("root", "admin")
    const other = jwt("mallory", "user")

    await page.goto(`${url}/#token=${admin}`)
    await who().filter({ hasText: "root (admin)" }).waitFor({ timeout: 20_000 })
    assert.strictEqual(await stored(), admin)

    // Someone sends the logged-in admin a link with another account's token.
    await page.goto(`${url}/#token=${other}`)
    const card = page.locator("[data-testid=switch-account]")
    await card.waitFor({ timeout: 20_000 })
    assert.strictEqual(await page.locator("[data-testid=offered-who]").textContent(), "mallory (user)")
    assert.strictEqual(await page.locator("[data-testid=current-who]").textContent(), "root (admin)")
    assert.strictEqual(await stored(), admin, "nothing is replaced before the user chooses")
    assert.notInclude(page.url(), "token=", "the offered token leaves the address bar")

    // Keeping the current account leaves everything as it was.
    await page.locator("[data-testid=switch-keep]").click()
    await who().filter({ hasText: "root (admin)" }).waitFor({ timeout: 20_000 })
    assert.strictEqual(await stored(), admin)

    // Accepting switches.
    await page.goto(`${url}/#token=${other}`)
    await page.locator("[data-testid=switch-accept]").click()
    await who().filter({ hasText: "mallory" }).waitFor({ timeout: 20_000 })
    assert.strictEqual(await stored(), other)

    // The same token again needs no question.
    await page.goto(`${url}/#token=${other}`)
    await who().filter({ hasText: "mallory" }).waitFor({ timeout: 20_000 })
    assert.strictEqual(await card.count(), 0)
  }, 120_000)
})
