// Browser login sessions: an opaque random id in an HttpOnly, SameSite=Lax cookie (Secure when the control
// plane is reached over TLS), only its SHA-256 stored (Store `login_sessions`). A login ends after
// LOGIN_IDLE_TIMEOUT without requests (each request renews it, written at most every tenth of that), at
// LOGIN_MAX_LIFETIME in any case, at logout, when an admin signs the user out everywhere, and while the user is
// disabled. CSRF: a request other than GET/HEAD/OPTIONS authenticated by the cookie must carry the login's
// token in `X-CSRF-Token` (the UI reads it from GET /auth/me; another site cannot) and, when the browser
// sends `Origin`, come from this origin.
import type { UserId } from "@streamspace/protocol"
import { Clock, Duration, Effect } from "effect"
import { timingSafeEqual } from "node:crypto"
import type { Role, User } from "../../Auth.ts"
import type { ControlPlaneConfigShape } from "../../ControlPlaneConfig.ts"
import type { LoginSessionRecord, StoreShape } from "../../Store.ts"
import { hashToken, newCredential } from "../token.ts"
import { AuthError } from "./error.ts"

export const LOGIN_COOKIE = "streamspace_login"
export const CSRF_HEADER = "x-csrf-token"

/** What authentication reads from a request (effect/http's HttpServerRequest has all three). */
export interface RequestInfo {
  readonly method: string
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly cookies: Readonly<Record<string, string | undefined>>
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"])

const sameText = (a: string, b: string) => {
  const x = Buffer.from(a)
  const y = Buffer.from(b)
  return x.length === y.length && timingSafeEqual(x, y)
}

/** Whether the login cookie must be Secure: served over TLS, or published at an https:// PUBLIC_URL (a TLS proxy). */
export const secureCookies = (config: ControlPlaneConfigShape) => config.tlsCertFile !== undefined || (config.publicUrl?.startsWith("https:") ?? false)

export const makeLoginSessions = (store: StoreShape, config: ControlPlaneConfigShape) => {
  const idleMs = Duration.toMillis(config.login.idleTimeout)
  const maxMs = Duration.toMillis(config.login.maxLifetime)
  const secure = secureCookies(config)
  const unavailable = () => new AuthError({ reason: "Misconfigured", message: "the login store is unavailable" })
  const ended = new AuthError({ reason: "InvalidToken", message: "your login has ended (expired, signed out or revoked): log in again" })

  /** The login cookie's attributes (Max-Age: LOGIN_MAX_LIFETIME; the server ends it earlier when idle). */
  const cookieOptions = { path: "/", httpOnly: true, sameSite: "lax", secure, maxAge: config.login.maxLifetime } as const

  const create = Effect.fn("LoginSessions.create")(function*(user: { id: UserId; role: Role; groups: ReadonlyArray<string> }, idToken: string | undefined) {
    const now = yield* Clock.currentTimeMillis
    const cookie = newCredential()
    const csrfToken = newCredential()
    yield* store.logins.insert({
      idHash: hashToken(cookie),
      userId: user.id,
      role: user.role,
      groups: user.groups,
      csrfToken,
      idToken,
      createdAt: new Date(now),
      lastSeenAt: new Date(now),
      expiresAt: new Date(now + maxMs)
    })
    return { cookie, csrfToken }
  })

  /** The live login of a cookie, renewed, or undefined when it has ended (an ended one is deleted). */
  const live = Effect.fn("LoginSessions.live")(function*(cookie: string) {
    const now = yield* Clock.currentTimeMillis
    const idHash = hashToken(cookie)
    const login = yield* store.logins.get(idHash)
    if (login === undefined) return undefined
    if (now >= login.expiresAt.getTime() || now - login.lastSeenAt.getTime() >= idleMs) {
      yield* store.logins.remove(idHash)
      return undefined
    }
    if (now - login.lastSeenAt.getTime() >= idleMs / 10) {
      yield* store.logins.touch(idHash, new Date(now))
      yield* store.users.touch(login.userId)
    }
    return login
  })

  const toUser = (login: LoginSessionRecord): User => ({ id: login.userId, role: login.role, groups: login.groups })

  const check = (cookie: string, request: RequestInfo): Effect.Effect<User, AuthError> =>
    Effect.gen(function*() {
      const login = yield* live(cookie).pipe(Effect.mapError(unavailable))
      if (login === undefined) return yield* ended
      if (login.userDisabled) return yield* new AuthError({ reason: "Forbidden", message: "this user is disabled; ask an administrator" })
      if (!SAFE_METHODS.has(request.method.toUpperCase())) {
        const token = request.headers[CSRF_HEADER]
        if (token === undefined || !sameText(token, login.csrfToken)) {
          return yield* new AuthError({ reason: "Forbidden", message: `a browser request that changes something needs the ${CSRF_HEADER} header of the login (from GET /auth/me)` })
        }
        const origin = request.headers["origin"]
        if (origin !== undefined && !sameOrigin(origin, request.headers["host"], config.publicUrl)) {
          return yield* new AuthError({ reason: "Forbidden", message: `cross-origin request refused (Origin ${origin.slice(0, 100)})` })
        }
      }
      return toUser(login)
    })

  /** The login of a cookie with its CSRF token (for GET /auth/me), or undefined. */
  const current = (cookie: string) => Effect.mapError(live(cookie), unavailable)

  /** Ends one login; the ended record (its ID token serves the provider's logout). */
  const end = (cookie: string) => store.logins.remove(hashToken(cookie))

  /** Deletes ended logins and login attempts (run periodically). */
  const sweep = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    yield* store.logins.removeExpired(new Date(now), new Date(now - idleMs))
  })

  return { create, check, current, end, sweep, cookieOptions, toUser }
}

const sameOrigin = (origin: string, host: string | undefined, publicUrl: string | undefined) => {
  if (!URL.canParse(origin)) return false
  const o = new URL(origin)
  return o.host === host || (publicUrl !== undefined && URL.canParse(publicUrl) && new URL(publicUrl).origin === o.origin)
}

