// OpenID Connect login against a real provider (oidc-provider, in process): the code flow with PKCE through the
// provider's login and consent pages, users recorded, roles from groups, allowed groups, the login cookie with
// its CSRF check, logout at the provider, admin disable / enable / sign out everywhere, and bad configurations.
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Context, Effect, Layer } from "effect"
import { ControlPlane } from "../src/ControlPlane.ts"
import { sign, TEST_JWT_SECRET } from "./support/jwt.ts"
import { freePort, makeBrowser } from "./support/loginClient.ts"
import { startProvider, TEST_CLIENT_ID, TEST_CLIENT_SECRET, type TestAccount } from "./support/oidcProvider.ts"

const ACCOUNTS: Record<string, TestAccount> = {
  alice: { name: "Alice Admin", email: "alice@example.com", groups: ["staff", "streamspace-admins"] },
  bob: { name: "Bob Builder", email: "bob@example.com", groups: ["staff"] },
  carol: { name: "Carol Sales", email: "carol@example.com", groups: ["sales"] },
  weird: { name: "Weird", email: "w@example.com", groups: ["staff"], username: "not a valid id!" }
}

/** A provider and a control plane configured for it; `env` overrides the control plane's settings. */
const setup = (env: Record<string, string> = {}, options: { startProvider?: boolean } = {}) =>
  Effect.gen(function*() {
    const provider = yield* Effect.acquireRelease(Effect.promise(() => startProvider(ACCOUNTS)), (p) => Effect.promise(p.close))
    const port = yield* Effect.promise(freePort)
    const base = `http://127.0.0.1:${port}`
    if (options.startProvider !== false) provider.start({ redirectUri: `${base}/auth/callback`, postLogoutRedirectUri: `${base}/` })
    const ctx = yield* Layer.build(ControlPlane.layer.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
      env: {
        HOST: "127.0.0.1",
        PORT: String(port),
        PUBLIC_URL: base,
        DATABASE_IN_MEMORY: "true",
        LOG_LEVEL: "error",
        JWT_SECRET: TEST_JWT_SECRET,
        OIDC_ISSUER_URL: provider.issuer,
        OIDC_CLIENT_ID: TEST_CLIENT_ID,
        OIDC_CLIENT_SECRET: TEST_CLIENT_SECRET,
        OIDC_SCOPES: "openid profile email groups",
        OIDC_ADMIN_GROUPS: "streamspace-admins",
        OIDC_PROVIDER_NAME: "Test IdP",
        ...env
      }
    })))))
    const cp = Context.get(ctx, ControlPlane)
    const admin = yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
    const api = (method: string, path: string, options: { token?: string; headers?: Record<string, string>; body?: unknown } = {}) =>
      Effect.promise(async () => {
        const headers: Record<string, string> = { ...options.headers }
        if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
        if (options.body !== undefined) headers["content-type"] = "application/json"
        const r = await fetch(`${cp.url}${path}`, { method, headers, ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }) })
        const text = await r.text()
        let json: any
        try {
          json = JSON.parse(text)
        } catch {}
        return { status: r.status, json, text }
      })
    return { provider, base, cp, admin, api }
  })

/** A logged-in browser: its requests carry the login cookie, and `csrf` from GET /auth/me. */
const loggedIn = (base: string, account: string) =>
  Effect.promise(async () => {
    const browser = makeBrowser()
    const landed = await browser.login(base, account)
    const me = await browser.go(`${base}/auth/me`)
    const json = me.status === 200 ? JSON.parse(me.text) : undefined
    const call = async (method: string, path: string, headers: Record<string, string> = {}, body?: unknown) => {
      const res = await browser.send(new URL(`${base}${path}`), {
        method,
        headers: { ...headers, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
      const text = await res.text()
      let parsed: any
      try {
        parsed = JSON.parse(text)
      } catch {}
      return { status: res.status, json: parsed, text }
    }
    return { browser, landed, me: json, csrf: json?.csrf_token as string, call }
  })

describe("OpenID Connect login", () => {
  it.live("logs in through the provider's pages, records the user, maps groups to roles, and logs out at the provider", () =>
    Effect.gen(function*() {
      const { base, api, admin } = yield* setup()
      const config = yield* api("GET", "/auth/config")
      assert.deepStrictEqual(config.json.oidc, { provider_name: "Test IdP", login_url: "/auth/login" })

      const alice = yield* loggedIn(base, "alice")
      assert.strictEqual(alice.landed.status, 200)
      assert.strictEqual(alice.landed.url.href, `${base}/`)
      assert.deepStrictEqual(alice.me.user, {
        id: "alice", role: "admin", groups: ["staff", "streamspace-admins"], display_name: "Alice Admin", email: "alice@example.com"
      })
      assert.match(alice.csrf, /^[\w-]{40,}$/)
      // The cookie is HttpOnly and SameSite=Lax (not Secure: plain HTTP here).
      const setCookie = yield* Effect.promise(async () => {
        const b = makeBrowser()
        const first = await b.go(`${base}/auth/login`)
        const consent = await b.submit(first, { prompt: "login", login: "bob", password: "x" })
        const action = /<form[^>]*action="([^"]+)"/.exec(consent.text)![1]!
        let res = await b.send(new URL(action, consent.url), { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded" }, body: "prompt=consent" })
        while (!new URL(res.headers.get("location")!, base).href.startsWith(`${base}/auth/callback`)) {
          res = await b.send(new URL(res.headers.get("location")!, new URL(action, consent.url)))
        }
        const callback = await b.send(new URL(res.headers.get("location")!))
        return callback.headers.getSetCookie().find((c) => c.startsWith("streamspace_login="))!
      })
      assert.match(setCookie, /HttpOnly/i)
      assert.match(setCookie, /SameSite=Lax/i)
      assert.notMatch(setCookie, /Secure/i)

      const bob = yield* loggedIn(base, "bob")
      assert.strictEqual(bob.me.user.role, "user")
      // Roles come from the groups: bob may not list users, alice may.
      assert.strictEqual((yield* Effect.promise(() => bob.call("GET", "/api/v1/users"))).status, 403)
      const listed = yield* Effect.promise(() => alice.call("GET", "/api/v1/users"))
      assert.strictEqual(listed.status, 200)
      const bobRecord = listed.json.users.find((u: any) => u.id === "bob")
      assert.strictEqual(bobRecord.display_name, "Bob Builder")
      assert.strictEqual(bobRecord.email, "bob@example.com")
      assert.deepStrictEqual(bobRecord.groups, ["staff"])
      assert.isString(bobRecord.last_seen_at)
      assert.strictEqual(bobRecord.disabled, false)
      // Paginated like the other lists.
      const page1 = yield* api("GET", "/api/v1/users?limit=1", { token: admin })
      assert.strictEqual(page1.json.users[0].id, "alice")
      const page2 = yield* api("GET", `/api/v1/users?limit=1&cursor=${page1.json.next_cursor}`, { token: admin })
      assert.strictEqual(page2.json.users[0].id, "bob")

      // Logout: the cookie's login ends, and the browser is sent to the provider's end-session endpoint.
      const out = yield* Effect.promise(() => alice.call("POST", "/auth/logout", { "x-csrf-token": alice.csrf }))
      assert.strictEqual(out.status, 200)
      assert.match(out.json.redirect, /\/session\/end\?/)
      assert.include(out.json.redirect, "id_token_hint=")
      assert.include(decodeURIComponent(out.json.redirect), `post_logout_redirect_uri=${base}/`)
      assert.strictEqual((yield* Effect.promise(() => alice.call("GET", "/api/v1/sessions"))).status, 401)
      // The provider's logout page is there (its confirmation form).
      const providerLogout = yield* Effect.promise(() => alice.browser.go(out.json.redirect))
      assert.strictEqual(providerLogout.status, 200)
      assert.include(providerLogout.text, "logout")
    }), { timeout: 120_000 })

  it.live("OIDC_ALLOWED_GROUPS: only members log in; others get a page saying why", () =>
    Effect.gen(function*() {
      const { base } = yield* setup({ OIDC_ALLOWED_GROUPS: "staff, streamspace-admins" })
      const carol = yield* loggedIn(base, "carol")
      assert.strictEqual(carol.landed.status, 403)
      assert.include(carol.landed.text, "carol may not use StreamSpace: not a member of any group allowed to log in (OIDC_ALLOWED_GROUPS)")
      assert.isUndefined(carol.me)
      const bob = yield* loggedIn(base, "bob")
      assert.strictEqual(bob.me.user.id, "bob")
    }), { timeout: 120_000 })

  it.live("a username claim that is not a usable user id is refused, naming the claim", () =>
    Effect.gen(function*() {
      const { base } = yield* setup()
      const weird = yield* loggedIn(base, "weird")
      assert.strictEqual(weird.landed.status, 400)
      assert.include(weird.landed.text, "preferred_username")
      assert.include(weird.landed.text, "OIDC_USERNAME_CLAIM")
    }), { timeout: 120_000 })

  it.live("CSRF: a cookie-authenticated change needs the login's X-CSRF-Token and a same-origin Origin; bearer tokens need neither", () =>
    Effect.gen(function*() {
      const { base, api } = yield* setup()
      const bob = yield* loggedIn(base, "bob")
      const create = (headers: Record<string, string>) => Effect.promise(() => bob.call("POST", "/api/v1/sessions", headers, { template: "demo" }))
      const missing = yield* create({})
      assert.strictEqual(missing.status, 403)
      assert.include(missing.json.error.message, "x-csrf-token")
      const wrong = yield* create({ "x-csrf-token": "x".repeat(43) })
      assert.strictEqual(wrong.status, 403)
      const crossSite = yield* create({ "x-csrf-token": bob.csrf, origin: "https://evil.example" })
      assert.strictEqual(crossSite.status, 403)
      assert.include(crossSite.json.error.message, "cross-origin")
      // With the token from its own origin the request is authenticated (no agent here: 503, not 401/403).
      const ok = yield* create({ "x-csrf-token": bob.csrf, origin: base })
      assert.strictEqual(ok.status, 503)
      assert.strictEqual(ok.json.error.code, "no_eligible_agent")
      // Reads need no token.
      assert.strictEqual((yield* Effect.promise(() => bob.call("GET", "/api/v1/sessions"))).status, 200)
      // Programs keep using bearer JWTs, with no CSRF token.
      const token = yield* Effect.promise(() => sign({ sub: "bob" }))
      assert.strictEqual((yield* api("POST", "/api/v1/sessions", { token, body: { template: "demo" } })).status, 503)
    }), { timeout: 120_000 })

  it.live("an admin disables a user: their cookie and bearer tokens stop at once, sessions are listed, enable restores access, all audited", () =>
    Effect.gen(function*() {
      const { base, api, admin } = yield* setup()
      const bob = yield* loggedIn(base, "bob")
      const bobToken = yield* Effect.promise(() => sign({ sub: "bob" }))
      assert.strictEqual((yield* api("GET", "/api/v1/sessions", { token: bobToken })).status, 200)
      assert.strictEqual((yield* api("GET", "/api/v1/users/bob/sessions", { token: admin })).json.sessions.length, 0)

      const disabled = yield* api("POST", "/api/v1/users/bob/disable", { token: admin })
      assert.strictEqual(disabled.status, 200)
      assert.strictEqual(disabled.json.disabled, true)
      // The next request of each credential is refused.
      assert.strictEqual((yield* Effect.promise(() => bob.call("GET", "/api/v1/sessions"))).status, 401)
      const byToken = yield* api("GET", "/api/v1/sessions", { token: bobToken })
      assert.strictEqual(byToken.status, 403)
      assert.include(byToken.json.error.message, "disabled")
      assert.strictEqual((yield* api("POST", "/api/v1/sessions/x/vnc-ticket", { token: bobToken })).status, 403)
      // Logging in again is refused while disabled.
      const again = yield* loggedIn(base, "bob")
      assert.strictEqual(again.landed.status, 403)
      assert.include(again.landed.text, "disabled")

      const enabled = yield* api("POST", "/api/v1/users/bob/enable", { token: admin })
      assert.strictEqual(enabled.json.disabled, false)
      assert.strictEqual((yield* api("GET", "/api/v1/sessions", { token: bobToken })).status, 200)
      const back = yield* loggedIn(base, "bob")
      assert.strictEqual(back.me.user.id, "bob")

      assert.strictEqual((yield* api("POST", "/api/v1/users/nobody/disable", { token: admin })).status, 404)
      assert.strictEqual((yield* api("POST", "/api/v1/users/bob/disable", { token: bobToken })).status, 403)
      const audit = yield* api("GET", "/api/v1/audit", { token: admin })
      const actions = audit.json.events.map((e: any) => `${e.action} ${e.target_id}`)
      assert.includeMembers(actions, ["user.disable bob", "user.enable bob"])
    }), { timeout: 120_000 })

  it.live("sign out everywhere ends every browser login of the user", () =>
    Effect.gen(function*() {
      const { base, api, admin } = yield* setup()
      const one = yield* loggedIn(base, "bob")
      const two = yield* loggedIn(base, "bob")
      const out = yield* api("POST", "/api/v1/users/bob/sign-out", { token: admin })
      assert.deepStrictEqual(out.json, { id: "bob", logins_ended: 2 })
      assert.strictEqual((yield* Effect.promise(() => one.call("GET", "/auth/me"))).status, 401)
      assert.strictEqual((yield* Effect.promise(() => two.call("GET", "/api/v1/sessions"))).status, 401)
      const audit = yield* api("GET", "/api/v1/audit", { token: admin })
      assert.include(audit.json.events.map((e: any) => e.action), "user.sign_out")
    }), { timeout: 120_000 })
})

describe("OpenID Connect misconfigurations give clear errors", () => {
  it.live("an unreachable issuer: the login page says discovery failed and names OIDC_ISSUER_URL", () =>
    Effect.gen(function*() {
      const { base } = yield* setup({ OIDC_ISSUER_URL: `http://127.0.0.1:${yield* Effect.promise(freePort)}` })
      const page = yield* Effect.promise(() => makeBrowser().go(`${base}/auth/login`))
      assert.strictEqual(page.status, 503)
      assert.include(page.text, "OIDC_ISSUER_URL")
      assert.include(page.text, "discovery failed")
    }), { timeout: 120_000 })

  it.live("a provider that starts late is discovered at the next login", () =>
    Effect.gen(function*() {
      const { base, provider } = yield* setup({}, { startProvider: false })
      assert.strictEqual((yield* Effect.promise(() => makeBrowser().go(`${base}/auth/login`))).status, 503)
      provider.start({ redirectUri: `${base}/auth/callback`, postLogoutRedirectUri: `${base}/` })
      assert.strictEqual((yield* loggedIn(base, "bob")).me.user.id, "bob")
    }), { timeout: 120_000 })

  it.live("a wrong client secret: the callback page names invalid_client and the settings to check", () =>
    Effect.gen(function*() {
      const { base } = yield* setup({ OIDC_CLIENT_SECRET: "not-the-secret-the-provider-knows-0123456789" })
      const bob = yield* loggedIn(base, "bob")
      assert.strictEqual(bob.landed.status, 400, bob.landed.text)
      assert.include(bob.landed.text, "invalid_client", bob.landed.text)
      assert.include(bob.landed.text, "check OIDC_CLIENT_ID and OIDC_CLIENT_SECRET")
    }), { timeout: 120_000 })

  it.live("an ID token for another client or from another issuer is refused, saying which", () =>
    Effect.gen(function*() {
      const { base, provider } = yield* setup()
      provider.rewriteIdTokens((claims) => ({ ...claims, aud: "another-client" }))
      const audience = yield* loggedIn(base, "bob")
      assert.strictEqual(audience.landed.status, 400)
      assert.include(audience.landed.text, "the ID token is for another client than OIDC_CLIENT_ID")
      provider.rewriteIdTokens((claims) => ({ ...claims, iss: "https://impostor.example.com" }))
      const issuer = yield* loggedIn(base, "bob")
      assert.strictEqual(issuer.landed.status, 400)
      assert.include(issuer.landed.text, "the ID token is from another issuer than OIDC_ISSUER_URL")
      // Untouched tokens log in.
      provider.rewriteIdTokens(undefined)
      assert.strictEqual((yield* loggedIn(base, "bob")).me.user.id, "bob")
    }), { timeout: 120_000 })

  it.live("an issuer URL that is not the provider's issuer identifier is refused at discovery", () =>
    Effect.gen(function*() {
      const { base, provider } = yield* setup({}, { startProvider: false })
      // The same provider reached under another name: its metadata names another issuer.
      provider.start({ redirectUri: `${base}/auth/callback`, postLogoutRedirectUri: `${base}/` })
      const other = yield* setup({ OIDC_ISSUER_URL: provider.issuer.replace("127.0.0.1", "localhost") })
      const page = yield* Effect.promise(() => makeBrowser().go(`${other.base}/auth/login`))
      assert.strictEqual(page.status, 503)
      assert.include(page.text, "issuer")
    }), { timeout: 120_000 })
})
