// Issue 18: logging in with OpenID Connect in Chromium. A real provider in this process (oidc-provider with its
// development login and consent pages), the control plane configured for it, a real agent on kube-testserver
// with a vnc-testserver desktop. A user clicks "Log in with <provider>", signs in and consents at the
// provider, lands in the UI (a cookie login: nothing in localStorage), views a running session; an admin
// disables them: the viewer is closed, the session hibernated, and the page's next request goes to the login
// page. An admin (by group) enables them again on the Users page, and logs out, at the provider too. And dev
// mode is marked as such.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { startProvider, TEST_CLIENT_ID, TEST_CLIENT_SECRET, type TestProvider } from "@streamspace/control-plane/test-support"
import { waitForPromise } from "@streamspace/testbed"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core"
import * as S from "./support/stack.ts"

const WAIT = 20_000

describe("OpenID Connect login in Chromium", () => {
  let scope: Scope.Closeable
  let provider: TestProvider
  let cp: S.ControlPlaneHandle
  let browser: Browser

  const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Scope.provide(scope)(effect))

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    provider = await startProvider({
      alice: { name: "Alice Admin", email: "alice@example.com", groups: ["streamspace-admins"] },
      bob: { name: "Bob Builder", email: "bob@example.com", groups: ["staff"] }
    })
    const port = await Effect.runPromise(S.freePort)
    const url = `http://127.0.0.1:${port}`
    provider.start({ redirectUri: `${url}/auth/callback`, postLogoutRedirectUri: `${url}/` })
    cp = await run(S.startControlPlane({
      PORT: String(port),
      PUBLIC_URL: url,
      OIDC_ISSUER_URL: provider.issuer,
      OIDC_CLIENT_ID: TEST_CLIENT_ID,
      OIDC_CLIENT_SECRET: TEST_CLIENT_SECRET,
      OIDC_SCOPES: "openid profile email groups",
      OIDC_ADMIN_GROUPS: "streamspace-admins",
      OIDC_PROVIDER_NAME: "Test IdP"
    }))
    const cluster = await run(S.makeCluster())
    await run(S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-oidc")))
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--disable-sync", "--no-first-run"]
    })
  }, 180_000)

  afterAll(async () => {
    await browser?.close()
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
    await provider?.close()
  })

  /** A fresh browser profile; requests off this machine (the provider pages' web fonts) are refused at once. */
  const newPage = async (): Promise<{ context: BrowserContext; page: Page }> => {
    const context = await browser.newContext()
    await context.route((u) => !["127.0.0.1", "localhost"].includes(u.hostname), (route) => route.abort())
    return { context, page: await context.newPage() }
  }

  /** Through the UI's button, the provider's login page and its consent page, back into the UI. */
  const logIn = async (page: Page, account: string) => {
    await page.goto(cp.url)
    await page.locator("[data-testid=oidc-login]").filter({ hasText: "Log in with Test IdP" }).click({ timeout: WAIT })
    await page.locator("input[name=login]").fill(account, { timeout: WAIT })
    await page.locator("input[name=password]").fill("any password")
    await page.locator("button[type=submit]").click()
    await page.locator("button", { hasText: "Continue" }).click({ timeout: WAIT })
    await page.locator("#who").filter({ hasText: account }).waitFor({ timeout: WAIT })
  }

  it("logs in at the provider, lands in the UI with a cookie login, and an admin's disable cuts the user off mid-session", async () => {
    const { context, page } = await newPage()
    await logIn(page, "bob")
    assert.strictEqual(await page.locator("#who").textContent(), "bob")
    assert.isTrue(await page.locator("#nav a[data-page=users]").isHidden(), "the Users page is for admins")
    assert.isNull(await page.evaluate(() => localStorage.getItem("streamspace.token")), "no token in localStorage")
    const cookie = (await context.cookies()).find((c) => c.name === "streamspace_login")!
    assert.isTrue(cookie.httpOnly)
    assert.strictEqual(cookie.sameSite, "Lax")

    // Bob starts a session from the UI (a POST with the login's CSRF token) and views it.
    await page.locator("[data-testid=create-session]:not([disabled])").click({ timeout: WAIT })
    const bobToken = S.userToken("bob")
    const bobApi = S.api(cp.url, bobToken)
    const id = await waitForPromise("bob's session", async () => {
      const r = await Effect.runPromise(bobApi.get("/sessions"))
      return r.body.sessions?.[0]?.id as string | undefined
    }, { timeout: WAIT })
    await Effect.runPromise(S.waitForSession(bobApi, id, ["running"], WAIT))
    await page.goto(`${cp.url}/#/sessions/${id}/view`)
    await page.locator("[data-testid=viewer-status]").filter({ hasText: "Connected" }).waitFor({ timeout: WAIT })

    // An admin disables bob: the viewer is closed at once and the session stops.
    const disabled = await Effect.runPromise(cp.admin.post("/users/bob/disable"))
    assert.strictEqual(disabled.status, 200)
    await page.locator("[data-testid=viewer-status]").filter({ hasText: /lost|Disconnected|viewer was ended/ }).waitFor({ timeout: WAIT })
    const stopped = await Effect.runPromise(S.waitForSession(cp.admin, id, ["hibernated", "terminated"], WAIT))
    assert.include(["hibernated", "terminated"], stopped.state)
    // His next request is refused and the UI shows the login page; his bearer token is refused too.
    await page.goto(`${cp.url}/#/sessions`)
    await page.locator("[data-testid=oidc-login]").waitFor({ timeout: WAIT })
    assert.strictEqual((await Effect.runPromise(bobApi.get("/sessions"))).status, 403)
    await context.close()
  }, 180_000)

  it("an admin's groups make them admin; logout ends the login here and at the provider", async () => {
    const { context, page } = await newPage()
    await logIn(page, "alice")
    assert.strictEqual(await page.locator("#who").textContent(), "alice (admin)")
    await page.locator("#nav a[data-page=agents]").click()
    await page.locator("[data-agent=agent-oidc]").waitFor({ timeout: WAIT })

    // The Users page (admins only): bob, disabled by the previous test, is enabled again from the UI.
    await page.locator("#nav a[data-page=users]").click()
    const bobRow = page.locator("[data-user=bob]")
    await bobRow.locator("[data-testid=user-status]").filter({ hasText: "disabled" }).waitFor({ timeout: WAIT })
    assert.include(await bobRow.textContent(), "Bob Builder")
    await bobRow.locator("button[data-act=enable]").click()
    await bobRow.locator("[data-testid=user-status]").filter({ hasText: "active" }).waitFor({ timeout: WAIT })
    assert.strictEqual((await Effect.runPromise(S.api(cp.url, S.userToken("bob")).get("/sessions"))).status, 200)

    await page.locator("#logout").click()
    // The provider asks to confirm its own logout, then sends the browser back.
    await page.locator("button", { hasText: /sign me out/i }).click({ timeout: WAIT })
    await page.waitForURL((u) => u.href.startsWith(cp.url), { timeout: WAIT })
    await page.locator("[data-testid=oidc-login]").waitFor({ timeout: WAIT })
    assert.isUndefined((await context.cookies()).find((c) => c.name === "streamspace_login"))
    // Logging in again needs the provider's login page again (its session ended too).
    await page.locator("[data-testid=oidc-login]").click()
    await page.locator("input[name=login]").waitFor({ timeout: WAIT })
    await context.close()
  }, 180_000)
})

describe("dev mode in Chromium", () => {
  let scope: Scope.Closeable
  let browser: Browser
  let url: string

  beforeAll(async () => {
    scope = await Effect.runPromise(Scope.make())
    const ctx = await Effect.runPromise(Layer.buildWithScope(
      ControlPlane.layerNoDeps.pipe(Layer.provide(ControlPlaneConfig.layerFromRecord({ HOST: "127.0.0.1", PORT: "0", DEV_MODE: "true", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "error" }))),
      scope
    ))
    const cp = Context.get(ctx, ControlPlane)
    url = `${cp.url}/#token=${cp.devToken}`
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu"] })
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    if (scope !== undefined) await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  it("the one-click local login works and the UI says it is dev mode", async () => {
    const page = await browser.newPage()
    await page.goto(url)
    await page.locator("#who").filter({ hasText: "admin (admin)" }).waitFor({ timeout: WAIT })
    await page.locator("#dev-mode").filter({ hasText: "dev mode" }).waitFor({ state: "visible", timeout: WAIT })
    await page.locator("#logout").click()
    await page.locator("[data-testid=dev-mode-notice]").filter({ hasText: "Dev mode." }).waitFor({ timeout: WAIT })
  }, 120_000)
})
