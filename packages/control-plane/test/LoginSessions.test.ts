// Browser login sessions on a real (embedded) database under TestClock: sliding expiry (renewed while active,
// ended after LOGIN_IDLE_TIMEOUT without requests), the absolute LOGIN_MAX_LIFETIME, the sweep, and the
// login settings' validation.
import { assert, describe, it } from "@effect/vitest"
import type { UserId } from "@streamspace/protocol"
import { Context, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { makeLoginSessions } from "../src/internal/auth/loginSessions.ts"
import { Store } from "../src/Store.ts"
import { TEST_JWT_SECRET } from "./support/jwt.ts"

const read = { method: "GET", headers: {}, cookies: {} }

const setup = (env: Record<string, string>) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(Layer.merge(Store.layerMemory, ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, ...env })))
    const store = Context.get(ctx, Store)
    const logins = makeLoginSessions(store, Context.get(ctx, ControlPlaneConfig))
    yield* store.users.insert({ id: "ann" as UserId, name: "ann", role: "user" })
    return { store, logins }
  })

const reasonOf = <A>(e: Effect.Effect<A, { reason: string }>) => Effect.map(Effect.flip(e), (x) => x.reason)

describe("login sessions", () => {
  it.effect("renewed while active, ended after LOGIN_IDLE_TIMEOUT without requests", () =>
    Effect.gen(function*() {
      const { logins, store } = yield* setup({ LOGIN_IDLE_TIMEOUT: "30m", LOGIN_MAX_LIFETIME: "8h" })
      const { cookie } = yield* logins.create({ id: "ann" as UserId, role: "user", groups: ["staff"] }, undefined)
      for (let i = 0; i < 6; i++) {
        yield* TestClock.adjust("29 minutes")
        assert.deepStrictEqual(yield* logins.check(cookie, read), { id: "ann" as UserId, role: "user", groups: ["staff"] })
      }
      assert.isDefined((yield* store.users.get("ann")).lastSeenAt)
      yield* TestClock.adjust("30 minutes")
      assert.strictEqual(yield* reasonOf(logins.check(cookie, read)), "InvalidToken")
    }))

  it.effect("ends at LOGIN_MAX_LIFETIME however active", () =>
    Effect.gen(function*() {
      const { logins } = yield* setup({ LOGIN_IDLE_TIMEOUT: "30m", LOGIN_MAX_LIFETIME: "1h" })
      const { cookie } = yield* logins.create({ id: "ann" as UserId, role: "user", groups: [] }, undefined)
      yield* TestClock.adjust("25 minutes")
      yield* logins.check(cookie, read)
      yield* TestClock.adjust("25 minutes")
      yield* logins.check(cookie, read)
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(yield* reasonOf(logins.check(cookie, read)), "InvalidToken")
    }))

  it.effect("an unknown cookie is refused; only the cookie's hash is stored; the sweep deletes ended logins", () =>
    Effect.gen(function*() {
      const { logins, store } = yield* setup({ LOGIN_IDLE_TIMEOUT: "10m" })
      assert.strictEqual(yield* reasonOf(logins.check("made-up", read)), "InvalidToken")
      const { cookie } = yield* logins.create({ id: "ann" as UserId, role: "user", groups: [] }, "id-token")
      assert.isUndefined(yield* store.logins.get(cookie))
      yield* TestClock.adjust("11 minutes")
      yield* logins.sweep
      assert.strictEqual(yield* store.logins.removeUser("ann"), 0)
    }))

  it.effect("a disabled user's cookie is refused", () =>
    Effect.gen(function*() {
      const { logins, store } = yield* setup({})
      const { cookie } = yield* logins.create({ id: "ann" as UserId, role: "user", groups: [] }, undefined)
      yield* store.users.setDisabled("ann", true)
      assert.strictEqual(yield* reasonOf(logins.check(cookie, read)), "Forbidden")
    }))
})

describe("users recorded at login", () => {
  it.effect("a login records the profile and last seen; another provider account with the same username is refused; pages by id", () =>
    Effect.gen(function*() {
      const { store } = yield* setup({})
      const bob = { id: "bob" as UserId, role: "user" as const, displayName: "Bob", email: "bob@example.com", groups: ["staff"], subject: "https://idp bob-sub" }
      const first = yield* store.users.recordLogin(bob)
      assert.deepStrictEqual([first.displayName, first.email, first.groups, first.subject], ["Bob", "bob@example.com", ["staff"], "https://idp bob-sub"])
      assert.isDefined(first.lastSeenAt)
      const again = yield* store.users.recordLogin({ ...bob, role: "admin", groups: ["staff", "ops"] })
      assert.deepStrictEqual([again.role, again.groups], ["admin", ["staff", "ops"]])
      const other = yield* Effect.flip(store.users.recordLogin({ ...bob, subject: "https://idp someone-else" }))
      assert.include(other.message, "belongs to another identity-provider account")
      // A user first seen through a JWT (no subject yet) takes the account at their first login.
      const annLogin = yield* store.users.recordLogin({ ...bob, id: "ann" as UserId, subject: "https://idp ann-sub" })
      assert.strictEqual(annLogin.subject, "https://idp ann-sub")
      assert.deepStrictEqual((yield* store.users.page(1, undefined)).map((u) => u.id), ["ann"])
      assert.deepStrictEqual((yield* store.users.page(5, "ann")).map((u) => u.id), ["bob"])
    }))
})

describe("login settings", () => {
  const settingError = (env: Record<string, string>) =>
    Effect.map(Effect.flip(Layer.build(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, ...env }))), (e) => (e as { message: string }).message)

  it.effect("bad OIDC settings are refused at start, naming the variable", () =>
    Effect.gen(function*() {
      assert.include(yield* settingError({ OIDC_CLIENT_ID: "x" }), "OIDC_ISSUER_URL is not")
      assert.include(yield* settingError({ OIDC_ISSUER_URL: "https://idp.example.com" }), "OIDC_CLIENT_ID is required")
      assert.include(yield* settingError({ OIDC_ISSUER_URL: "http://idp.example.com", OIDC_CLIENT_ID: "x" }), "must be https://")
      assert.include(yield* settingError({ OIDC_ISSUER_URL: "not a url", OIDC_CLIENT_ID: "x" }), "OIDC_ISSUER_URL=\"not a url\" is invalid")
      assert.include(yield* settingError({ OIDC_ISSUER_URL: "https://idp.example.com", OIDC_CLIENT_ID: "x", OIDC_SCOPES: "profile" }), "must include openid")
      assert.include(yield* settingError({ LOGIN_IDLE_TIMEOUT: "2h", LOGIN_MAX_LIFETIME: "1h" }), "LOGIN_IDLE_TIMEOUT")
    }))

  it.effect("OIDC alone is enough to start (no JWT_SECRET), with its defaults", () =>
    Effect.gen(function*() {
      const ctx = yield* Layer.build(ControlPlaneConfig.layerFromRecord({ OIDC_ISSUER_URL: "https://idp.example.com/realms/main", OIDC_CLIENT_ID: "streamspace", OIDC_ADMIN_GROUPS: "ops, admins" }))
      const login = Context.get(ctx, ControlPlaneConfig).login
      assert.deepStrictEqual(login.oidc?.scopes, ["openid", "profile", "email"])
      assert.strictEqual(login.oidc?.usernameClaim, "preferred_username")
      assert.strictEqual(login.oidc?.providerName, "idp.example.com")
      assert.deepStrictEqual(login.adminGroups, ["ops", "admins"])
      assert.deepStrictEqual(login.oidc?.allowedGroups, [])
      assert.strictEqual(login.groupsClaim, "groups")
    }))
})
