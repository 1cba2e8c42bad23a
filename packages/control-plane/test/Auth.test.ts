import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import { exportJWK, generateKeyPair, SignJWT } from "jose"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { Auth } from "../src/Auth.ts"
import { makeVerifiedTokens } from "../src/internal/auth/verifiedTokens.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { sign, TEST_JWT_SECRET, unsecured } from "./support/jwt.ts"

const authWith = (env: Record<string, string>) =>
  Effect.map(Layer.build(Auth.layer.pipe(Layer.provide(ControlPlaneConfig.layerFromRecord(env)))), (ctx) => Context.get(ctx, Auth))
const reasonOf = <A>(e: Effect.Effect<A, { reason: string }>) => Effect.map(Effect.flip(e), (x) => x.reason)

describe("Auth with JWT_SECRET (HS256)", () => {
  it.live("groups come from OIDC_GROUPS_CLAIM; members of OIDC_ADMIN_GROUPS are admins; a groups claim that is not a list is refused", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET, OIDC_GROUPS_CLAIM: "roles", OIDC_ADMIN_GROUPS: "ops, platform" })
      const verify = (claims: Record<string, unknown>) => Effect.flatMap(Effect.promise(() => sign({ sub: "ann", ...claims })), auth.verify)
      assert.deepStrictEqual(yield* verify({ roles: ["dev", "platform"] }), { id: "ann" as never, role: "admin", groups: ["dev", "platform"] })
      assert.deepStrictEqual(yield* verify({ roles: ["dev"], groups: ["ops"] }), { id: "ann" as never, role: "user", groups: ["dev"] })
      assert.deepStrictEqual(yield* verify({}), { id: "ann" as never, role: "user", groups: [] })
      const bad = yield* Effect.flip(verify({ roles: "ops" }))
      assert.include(bad.message, 'token claim "roles" must be a list of group names')
    }))

  it.effect("exp and nbf are checked against the Effect clock, with JWT_CLOCK_TOLERANCE", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET, JWT_CLOCK_TOLERANCE: "30s" })
      yield* TestClock.setTime(1_000_000_000)
      const token = yield* Effect.promise(() => sign({ sub: "ann", nbf: 1_000_100 }, { nowSec: 1_000_000, expiresIn: 600 }))
      assert.strictEqual(yield* reasonOf(auth.verify(token)), "NotYetValid")
      yield* TestClock.adjust("71 seconds") // nbf - 29s: within the tolerance
      assert.deepStrictEqual(yield* auth.verify(token), { id: "ann" as never, role: "user", groups: [] })
      yield* TestClock.adjust("558 seconds") // exp + 29s: within the tolerance
      assert.strictEqual((yield* auth.verify(token)).id, "ann")
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual(yield* reasonOf(auth.verify(token)), "Expired")
    }))

  it.effect("the groups claim: an array of strings (team membership), [] without one; any other type is refused", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET })
      yield* TestClock.setTime(Date.now())
      const verify = (claims: Record<string, unknown>) => Effect.flatMap(Effect.promise(() => sign({ sub: "ann", ...claims })), auth.verify)
      assert.deepStrictEqual((yield* verify({ groups: ["physics", "staff"] })).groups, ["physics", "staff"])
      assert.deepStrictEqual((yield* verify({ groups: [] })).groups, [])
      assert.deepStrictEqual((yield* verify({})).groups, [])
      for (const groups of ["physics", [1], { a: 1 }, ["ok", null]]) {
        const e = yield* Effect.flip(verify({ groups }))
        assert.deepStrictEqual([e.reason, e.message], ["InvalidToken", `token claim "groups" must be a list of group names`])
      }
      // A minted token carries the user's groups.
      const minted = yield* auth.mint({ id: "bob" as never, role: "user", groups: ["physics"] }, "1 hour")
      assert.deepStrictEqual((yield* auth.verify(minted)).groups, ["physics"])
    }))

  it.effect("signature, algorithm, and claims", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET })
      const now = Math.floor(Date.now() / 1000)
      yield* TestClock.setTime(now * 1000)
      assert.deepStrictEqual(yield* auth.verify(yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))), { id: "root" as never, role: "admin", groups: [] })
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "ann" }, { secret: "x".repeat(40) })))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.verify(unsecured({ sub: "ann" }))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "ann" }, { alg: "HS384" })))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "has space" })))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.authenticate(undefined)), "MissingToken")
      assert.strictEqual(yield* reasonOf(auth.authenticate("Token abc")), "InvalidToken")
      assert.isUndefined(auth.devToken)
    }))

  it.effect("issuer and audience are enforced when configured", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET, JWT_ISSUER: "https://idp.example", JWT_AUDIENCE: "streamspace" })
      yield* TestClock.setTime(Date.now())
      const good = yield* Effect.promise(() => sign({ sub: "ann", iss: "https://idp.example", aud: "streamspace" }))
      assert.strictEqual((yield* auth.verify(good)).id, "ann")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "ann", iss: "https://evil.example", aud: "streamspace" })))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "ann", iss: "https://idp.example", aud: "other" })))), "InvalidToken")
      // What it mints carries the configured issuer and audience.
      assert.strictEqual((yield* auth.verify(yield* auth.mint({ id: "bob" as never, role: "user", groups: [] }, "1 hour"))).id, "bob")
    }))

  it.effect("DEV_MODE mints an admin token that verifies", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ DEV_MODE: "true" })
      assert.isString(auth.devToken)
      assert.deepStrictEqual(yield* auth.verify(auth.devToken!), { id: "admin" as never, role: "admin", groups: [] })
      yield* TestClock.adjust("25 hours")
      assert.strictEqual(yield* reasonOf(auth.verify(auth.devToken!)), "Expired")
    }))
})

describe("Auth with JWT_JWKS_URL", () => {
  it.live("accepts RS256 tokens from the JWKS; refuses other keys, HS256 and key confusion", () =>
    Effect.gen(function*() {
      const { privateKey, publicKey } = yield* Effect.promise(() => generateKeyPair("RS256", { extractable: true }))
      const other = yield* Effect.promise(() => generateKeyPair("RS256"))
      const jwk = { ...(yield* Effect.promise(() => exportJWK(publicKey))), kid: "k1", alg: "RS256", use: "sig" }
      const server = createServer((_, res) => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ keys: [jwk] })))
      yield* Effect.acquireRelease(Effect.promise(() => new Promise<void>((r) => server.listen(0, "127.0.0.1", r))), () => Effect.sync(() => server.close()))
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
      const auth = yield* authWith({ JWT_JWKS_URL: url })
      const rs = (key: CryptoKey | Uint8Array, alg = "RS256") =>
        Effect.promise(() => new SignJWT({ role: "admin" }).setProtectedHeader({ alg, kid: "k1" }).setSubject("idp-user").setIssuedAt().setExpirationTime("1h").sign(key))
      assert.deepStrictEqual(yield* auth.verify(yield* rs(privateKey)), { id: "idp-user" as never, role: "admin", groups: [] })
      assert.strictEqual(yield* reasonOf(auth.verify(yield* rs(other.privateKey))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "ann" })))), "InvalidToken")
      // HS256 "signed" with the public key's bytes: no HMAC key source exists, so it is refused.
      const pubBytes = new TextEncoder().encode(JSON.stringify(jwk))
      assert.strictEqual(yield* reasonOf(auth.verify(yield* rs(pubBytes, "HS256"))), "InvalidToken")
      assert.strictEqual(yield* reasonOf(auth.mint({ id: "x" as never, role: "user", groups: [] }, "1 hour")), "Misconfigured")
    }))
})

describe("secrets and token lifetime (issue 14)", () => {
  const readConfig = (env: Record<string, string>) =>
    Effect.flip(Layer.build(ControlPlaneConfig.layerFromRecord(env)))

  it.effect("shared secrets under 32 bytes are refused at start, naming the variable and never the value", () =>
    Effect.gen(function*() {
      for (const [name, env] of [
        ["JWT_SECRET", { JWT_SECRET: "abc" }],
        ["AGENT_BOOTSTRAP_TOKEN", { JWT_SECRET: TEST_JWT_SECRET, AGENT_BOOTSTRAP_TOKEN: "x" }],
        ["METRICS_TOKEN", { JWT_SECRET: TEST_JWT_SECRET, METRICS_TOKEN: "m".repeat(31) }]
      ] as const) {
        const e = yield* readConfig(env)
        assert.strictEqual(e._tag, "SettingError")
        assert.strictEqual((e as { variable: string }).variable, name)
        assert.include(e.message, `${name} is too short`)
        assert.include(e.message, "at least 32 bytes")
        assert.notInclude(e.message, "abc")
      }
      // 32 bytes is enough.
      yield* Layer.build(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: "s".repeat(32), AGENT_BOOTSTRAP_TOKEN: "b".repeat(32), METRICS_TOKEN: "m".repeat(32) }))
    }))

  it.effect("a token without exp is refused", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET })
      yield* TestClock.setTime(Date.now())
      const noExp = yield* Effect.promise(() =>
        new SignJWT({ role: "admin" }).setProtectedHeader({ alg: "HS256" }).setSubject("ann").setIssuedAt().sign(new TextEncoder().encode(TEST_JWT_SECRET))
      )
      const e = yield* Effect.flip(auth.verify(noExp))
      assert.strictEqual(e.reason, "InvalidToken")
      assert.include(e.message, "no exp claim")
    }))

  it.effect("a token living longer than JWT_MAX_TTL is refused, by exp - iat and by exp - now", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET, JWT_MAX_TTL: "24h" })
      const now = 1_800_000_000
      yield* TestClock.setTime(now * 1000)
      const hundredYears = yield* Effect.promise(() => sign({ sub: "ann" }, { nowSec: now, expiresIn: 100 * 365 * 86400 }))
      const e = yield* Effect.flip(auth.verify(hundredYears))
      assert.strictEqual(e.reason, "InvalidToken")
      assert.include(e.message, "JWT_MAX_TTL (1d)")
      // Exactly the maximum is fine; one second more is not.
      assert.strictEqual((yield* auth.verify(yield* Effect.promise(() => sign({ sub: "ann" }, { nowSec: now, expiresIn: 86400 })))).id, "ann")
      assert.strictEqual(yield* reasonOf(auth.verify(yield* Effect.promise(() => sign({ sub: "ann" }, { nowSec: now, expiresIn: 86401 })))), "InvalidToken")
      // A forged-looking iat in the future does not stretch the window: exp - now is capped too.
      const lateIat = yield* Effect.promise(() => sign({ sub: "ann", exp: now + 30 * 86400 }, { nowSec: now + 29 * 86400 }))
      assert.strictEqual(yield* reasonOf(auth.verify(lateIat)), "InvalidToken")
      // Without iat, exp - now counts.
      const noIat = yield* Effect.promise(() =>
        new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setSubject("ann").setExpirationTime(now + 2 * 86400).sign(new TextEncoder().encode(TEST_JWT_SECRET))
      )
      assert.strictEqual(yield* reasonOf(auth.verify(noIat)), "InvalidToken")
    }))

  it.effect("the DEV_MODE token is short-lived by default (8h) and DEV_TOKEN_TTL may not exceed JWT_MAX_TTL", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ DEV_MODE: "true" })
      assert.strictEqual((yield* auth.verify(auth.devToken!)).id, "admin")
      yield* TestClock.adjust("8 hours")
      yield* TestClock.adjust("31 seconds")
      assert.strictEqual(yield* reasonOf(auth.verify(auth.devToken!)), "Expired")
      const e = yield* readConfig({ DEV_MODE: "true", DEV_TOKEN_TTL: "48h" })
      assert.strictEqual((e as { variable: string }).variable, "DEV_TOKEN_TTL")
    }))
})

describe("verified tokens (internal/auth/verifiedTokens.ts)", () => {
  it("remembers a token until its exp, by hash, and drops the oldest when full", () => {
    const tokens = makeVerifiedTokens<string>(2)
    tokens.set("a.b.c", 100, "ann")
    assert.strictEqual(tokens.get("a.b.c", 99.9), "ann")
    assert.strictEqual(tokens.get("a.b.C", 50), undefined) // another token (one character differs)
    assert.strictEqual(tokens.get("a.b.c", 100), undefined) // at exp: verified again
    assert.strictEqual(tokens.get("a.b.c", 50), undefined) // and forgotten
    tokens.set("t1", 100, "1")
    tokens.set("t2", 100, "2")
    tokens.set("t3", 100, "3")
    assert.deepStrictEqual(["t1", "t2", "t3"].map((t) => tokens.get(t, 0)), [undefined, "2", "3"])
  })

  it.effect("a remembered token is refused once it expires; a tampered copy is checked on its own", () =>
    Effect.gen(function*() {
      const auth = yield* authWith({ JWT_SECRET: TEST_JWT_SECRET, JWT_CLOCK_TOLERANCE: "0s" })
      yield* TestClock.setTime(1_000_000_000)
      const token = yield* Effect.promise(() => sign({ sub: "ann" }, { nowSec: 1_000_000, expiresIn: 60 }))
      assert.strictEqual((yield* auth.verify(token)).id, "ann")
      assert.strictEqual((yield* auth.verify(token)).id, "ann") // from memory
      const tampered = `${token.slice(0, -2)}${token.endsWith("AA") ? "BB" : "AA"}`
      assert.strictEqual(yield* reasonOf(auth.verify(tampered)), "InvalidToken")
      yield* TestClock.adjust("60 seconds")
      assert.strictEqual(yield* reasonOf(auth.verify(token)), "Expired")
    }))
})
