// Auth: user authentication for the HTTP API and the VNC proxy. Verifies `Authorization: Bearer <JWT>` with
// jose: HS256 with JWT_SECRET and/or RS256/ES256 keys from JWT_JWKS_URL (an algorithm allow-list per key
// source, so `alg: none` and algorithm confusion are refused), exp/nbf checked against the Effect clock,
// issuer/audience when configured. The `sub` claim is the user id, the `role` claim `admin` or `user`.
// DEV_MODE mints a local admin token at start (with JWT_SECRET, or a random key that lives as long as the process).
// Every token must carry `exp`, and may live at most JWT_MAX_TTL (exp - iat, and exp - now): a stolen token
// stops working within that bound, whoever minted it. The OIDC_GROUPS_CLAIM claim (default `groups`) lists the
// user's groups; a member of one of OIDC_ADMIN_GROUPS is an admin. Browsers authenticate with a login cookie
// instead (internal/auth/loginSessions.ts, with its CSRF check). With the Store in context, a disabled user's
// tokens and cookies are refused on every request. A verified token is remembered (by hash) until its `exp`, so
// the signature of a token sent again is not checked again (internal/auth/verifiedTokens.ts).
import type { UserId } from "@streamspace/protocol"
import { UserId as UserIdSchema } from "@streamspace/protocol"
import { Clock, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { createRemoteJWKSet, errors as JoseErrors, type JWTPayload, jwtVerify, SignJWT } from "jose"
import { randomBytes } from "node:crypto"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { AuthError } from "./internal/auth/error.ts"
import { makeVerifiedTokens } from "./internal/auth/verifiedTokens.ts"
import { GROUP_COMMIT_MAX, makeGroupCommit } from "./internal/groupCommit.ts"
import { LOGIN_COOKIE, makeLoginSessions, type RequestInfo } from "./internal/auth/loginSessions.ts"
import { Store } from "./Store.ts"

export { AuthError }

export type Role = "admin" | "user"
export interface User {
  readonly id: UserId
  readonly role: Role
  /** The groups the identity provider says the user is in (the OIDC_GROUPS_CLAIM claim). */
  readonly groups: ReadonlyArray<string>
}

export interface AuthShape {
  /** Authenticates the value of an Authorization header. */
  readonly authenticate: (authorization: string | undefined) => Effect.Effect<User, AuthError>
  /**
   * Authenticates a request: its bearer JWT (programs), else its login cookie (browsers; state-changing
   * methods need the login's CSRF token in `X-CSRF-Token` and a same-origin `Origin` when one is sent).
   */
  readonly authenticateRequest: (request: RequestInfo) => Effect.Effect<User, AuthError>
  /** Fails with Forbidden when the user is disabled (for credentials checked elsewhere, such as VNC tickets). */
  readonly checkEnabled: (user: User) => Effect.Effect<void, AuthError>
  /** Verifies a bare JWT. */
  readonly verify: (token: string) => Effect.Effect<User, AuthError>
  /** Signs a token with the local HS256 key (JWT_SECRET or the dev key); fails when there is none. */
  readonly mint: (user: User, ttl: Duration.Input) => Effect.Effect<string, AuthError>
  /** The admin token minted in DEV_MODE. */
  readonly devToken: string | undefined
}

/** The only algorithms accepted from each key source. */
export const HMAC_ALGORITHMS = ["HS256"]
export const JWKS_ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]

const isUserId = Schema.is(UserIdSchema)

const fromJoseError = (e: unknown): AuthError => {
  if (e instanceof JoseErrors.JWTExpired) return new AuthError({ reason: "Expired", message: "token has expired" })
  if (e instanceof JoseErrors.JWTClaimValidationFailed) {
    if (e.claim === "nbf") return new AuthError({ reason: "NotYetValid", message: "token is not valid yet (nbf is in the future)" })
    return new AuthError({ reason: "InvalidToken", message: `token claim "${e.claim}" is invalid: ${e.message}` })
  }
  if (e instanceof JoseErrors.JOSEAlgNotAllowed) return new AuthError({ reason: "InvalidToken", message: "token algorithm is not allowed" })
  if (e instanceof JoseErrors.JWSSignatureVerificationFailed) return new AuthError({ reason: "InvalidToken", message: "token signature is invalid" })
  if (e instanceof JoseErrors.JWKSNoMatchingKey) return new AuthError({ reason: "InvalidToken", message: "no key matches the token" })
  if (e instanceof JoseErrors.JOSEError) return new AuthError({ reason: "InvalidToken", message: `token is invalid (${e.code})` })
  return new AuthError({ reason: "InvalidToken", message: "token could not be verified" })
}

const userFromClaims = (payload: JWTPayload, groupsClaim: string, adminGroups: ReadonlyArray<string>): Effect.Effect<User, AuthError> => {
  const sub = payload.sub
  if (sub === undefined || !isUserId(sub)) {
    return Effect.fail(new AuthError({ reason: "InvalidToken", message: "token has no usable sub claim (the user id: letters, digits, '-', '_', '.', at most 63)" }))
  }
  const role = payload.role ?? "user"
  if (role !== "admin" && role !== "user") {
    return Effect.fail(new AuthError({ reason: "InvalidToken", message: `token role claim must be "admin" or "user"` }))
  }
  const raw = payload[groupsClaim] ?? []
  if (!Array.isArray(raw) || !raw.every((g) => typeof g === "string")) {
    return Effect.fail(new AuthError({ reason: "InvalidToken", message: `token claim "${groupsClaim}" must be a list of group names` }))
  }
  const groups: ReadonlyArray<string> = raw
  return Effect.succeed({ id: sub, role: role === "admin" || groups.some((g) => adminGroups.includes(g)) ? "admin" : "user", groups })
}

export const make = Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  const secret: Uint8Array | undefined = Option.isSome(config.jwtSecret)
    ? new TextEncoder().encode(Redacted.value(config.jwtSecret.value))
    : config.devMode
    ? new Uint8Array(randomBytes(32))
    : undefined
  const jwks = config.jwtJwksUrl === undefined ? undefined : createRemoteJWKSet(new URL(config.jwtJwksUrl))
  const maxTtlSec = Duration.toSeconds(config.jwtMaxTtl)
  const toleranceSec = Duration.toSeconds(config.jwtClockTolerance)
  const maxTtlText = Duration.format(config.jwtMaxTtl)
  /** `exp` is required, and neither exp - iat nor exp - now may exceed JWT_MAX_TTL (now with the clock tolerance). */
  const checkLifetime = (payload: JWTPayload, nowSec: number): Effect.Effect<void, AuthError> => {
    const exp = payload.exp
    if (typeof exp !== "number") return Effect.fail(new AuthError({ reason: "InvalidToken", message: "token has no exp claim: every token must expire" }))
    const declared = typeof payload.iat === "number" ? exp - payload.iat : exp - nowSec
    if (declared > maxTtlSec || exp - nowSec > maxTtlSec + toleranceSec) {
      return Effect.fail(new AuthError({ reason: "InvalidToken", message: `token lifetime is longer than JWT_MAX_TTL (${maxTtlText}): ask for a shorter-lived token` }))
    }
    return Effect.void
  }
  const claimOptions = {
    clockTolerance: Duration.toSeconds(config.jwtClockTolerance),
    ...(config.jwtIssuer === undefined ? {} : { issuer: config.jwtIssuer }),
    ...(config.jwtAudience === undefined ? {} : { audience: config.jwtAudience })
  }

  const verified = makeVerifiedTokens<User>()
  const verify = Effect.fn("Auth.verify")(function*(token: string) {
    const now = new Date(yield* Clock.currentTimeMillis)
    const known = verified.get(token, now.getTime() / 1000)
    if (known !== undefined) return known
    const header = yield* Effect.try({
      try: () => JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8")) as { alg?: unknown },
      catch: () => new AuthError({ reason: "InvalidToken", message: "token is not a JWT" })
    })
    const alg = typeof header?.alg === "string" ? header.alg : ""
    // The header picks the key source; each source has its own allow-list, so an HS256 token can never be
    // checked against a public key and `none` matches no source.
    const result = yield* Effect.tryPromise({
      try: () => {
        if (secret !== undefined && HMAC_ALGORITHMS.includes(alg)) {
          return jwtVerify(token, secret, { ...claimOptions, algorithms: HMAC_ALGORITHMS, currentDate: now })
        }
        if (jwks !== undefined && JWKS_ALGORITHMS.includes(alg)) {
          return jwtVerify(token, jwks, { ...claimOptions, algorithms: JWKS_ALGORITHMS, currentDate: now })
        }
        return Promise.reject(new JoseErrors.JOSEAlgNotAllowed(`"${alg.slice(0, 16)}" is not allowed`))
      },
      catch: fromJoseError
    })
    yield* checkLifetime(result.payload, now.getTime() / 1000)
    const user = yield* userFromClaims(result.payload, config.login.groupsClaim, config.login.adminGroups)
    verified.set(token, result.payload.exp!, user)
    return user
  })

  // The Store is absent only where a test builds Auth alone; the control plane always has it.
  const store = Option.getOrUndefined(yield* Effect.serviceOption(Store))
  const disabled = new AuthError({ reason: "Forbidden", message: "this user is disabled; ask an administrator" })
  // Checked on every request: requests checked while a check is in flight are checked together, in one lookup.
  const isDisabled = store === undefined ? undefined : yield* makeGroupCommit({
    one: store.users.isDisabled,
    many: (ids) => Effect.map(store.users.disabledAmong(ids), (off) => ids.map((id) => off.has(id))),
    max: GROUP_COMMIT_MAX
  })
  const checkEnabled = Effect.fn("Auth.checkEnabled")(function*(user: User) {
    if (isDisabled === undefined) return
    const off = yield* isDisabled(user.id).pipe(
      Effect.mapError(() => new AuthError({ reason: "Misconfigured", message: "the user directory is unavailable" }))
    )
    if (off) return yield* disabled
  })
  const logins = store === undefined ? undefined : makeLoginSessions(store, config)

  const authenticate = Effect.fn("Auth.authenticate")(function*(authorization: string | undefined) {
    if (authorization === undefined || authorization.trim() === "") {
      return yield* new AuthError({ reason: "MissingToken", message: "missing Authorization: Bearer <token> header" })
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
    if (m === null) return yield* new AuthError({ reason: "InvalidToken", message: "Authorization header must be \"Bearer <token>\"" })
    const user = yield* verify(m[1]!)
    yield* checkEnabled(user)
    return user
  })

  const authenticateRequest = Effect.fn("Auth.authenticateRequest")(function*(request: RequestInfo) {
    const cookie = request.cookies[LOGIN_COOKIE]
    if (request.headers["authorization"] !== undefined || cookie === undefined || logins === undefined) {
      return yield* authenticate(request.headers["authorization"])
    }
    return yield* logins.check(cookie, request)
  })

  const mint = Effect.fn("Auth.mint")(function*(user: User, ttl: Duration.Input) {
    if (secret === undefined) return yield* new AuthError({ reason: "Misconfigured", message: "no local signing key (set JWT_SECRET or DEV_MODE)" })
    const nowSec = Math.floor((yield* Clock.currentTimeMillis) / 1000)
    const jwt = new SignJWT(user.groups.length === 0 ? { role: user.role } : { role: user.role, groups: [...user.groups] })
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setSubject(user.id)
      .setIssuedAt(nowSec)
      .setExpirationTime(nowSec + Math.ceil(Duration.toSeconds(Duration.fromInputUnsafe(ttl))))
    if (config.jwtIssuer !== undefined) jwt.setIssuer(config.jwtIssuer)
    if (config.jwtAudience !== undefined) jwt.setAudience(config.jwtAudience)
    return yield* Effect.promise(() => jwt.sign(secret))
  })

  const devToken = config.devMode
    ? yield* mint({ id: "admin" as UserId, role: "admin", groups: [] }, config.devTokenTtl).pipe(Effect.orDie)
    : undefined

  return Auth.of({ authenticate, authenticateRequest, checkEnabled, verify, mint, devToken })
})

/** Fails with Forbidden unless the user is an admin. */
export const requireAdmin = (user: User): Effect.Effect<void, AuthError> =>
  user.role === "admin" ? Effect.void : Effect.fail(new AuthError({ reason: "Forbidden", message: "this action needs the admin role" }))

export class Auth extends Context.Service<Auth, AuthShape>()("control-plane/Auth") {
  static readonly layer = Layer.effect(Auth, make)
}
