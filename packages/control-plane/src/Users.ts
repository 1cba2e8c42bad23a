// Users: the people behind the API. Owns the OpenID Connect login (internal/users/oidc.ts) that records a user
// at each login (display name, email, groups, last seen) and gives the browser a login cookie
// (internal/auth/loginSessions.ts), logout (here and, where the provider supports RP-initiated logout, at the
// provider), and the admin's view and controls: list users, see one's sessions, disable (their logins end,
// their tokens and cookies are refused from the next request, their viewers here are closed, their running
// sessions hibernated, or deleted when they have no persistent home), enable, and sign out everywhere.
import type { UserId } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer, Schedule } from "effect"
import { Audit } from "./Audit.ts"
import { Auth, type User } from "./Auth.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { makeLoginSessions } from "./internal/auth/loginSessions.ts"
import { hashToken, newCredential } from "./internal/token.ts"
import { UsersError } from "./internal/users/error.ts"
import { makeOidc } from "./internal/users/oidc.ts"
import { type SessionRecord, Sessions } from "./Sessions.ts"
import { type LoginSessionRecord, type SessionKey, Store, type StoreError, type UserRecord } from "./Store.ts"
import { VncProxy } from "./VncProxy.ts"

export { UsersError }

/** The cookie that ties an authorization request to the browser that started it. */
export const ATTEMPT_COOKIE = "streamspace_login_attempt"
/** How long a login may take at the provider. */
const ATTEMPT_TTL = Duration.minutes(10)
/** How often ended logins and attempts are deleted. */
const SWEEP_INTERVAL = Duration.minutes(5)

export interface LoginStart {
  readonly location: string
  /** The attempt cookie's value (HttpOnly, for the callback). */
  readonly attempt: string
}

export interface LoginDone {
  readonly returnTo: string
  readonly cookie: string
}

export interface UsersShape {
  /** The provider's name for the login button, or undefined when OIDC is not configured. */
  readonly providerName: string | undefined
  readonly beginLogin: (returnTo: string) => Effect.Effect<LoginStart, UsersError>
  readonly completeLogin: (callbackUrl: URL, attempt: string | undefined) => Effect.Effect<LoginDone, UsersError>
  /** Ends the cookie's login; where to send the browser next (the provider's logout, or `postLogout`). */
  readonly logout: (cookie: string | undefined, postLogout: string) => Effect.Effect<string, UsersError>
  /** The login of a cookie (with its CSRF token), or undefined. */
  readonly currentLogin: (cookie: string) => Effect.Effect<LoginSessionRecord | undefined, UsersError>
  readonly get: (id: string) => Effect.Effect<UserRecord, UsersError>
  readonly page: (limit: number, after: string | undefined) => Effect.Effect<ReadonlyArray<UserRecord>, UsersError>
  readonly sessionsOf: (id: string, limit: number, after: SessionKey | undefined) => Effect.Effect<ReadonlyArray<SessionRecord>, UsersError>
  readonly disable: (actor: User, id: string) => Effect.Effect<UserRecord, UsersError>
  readonly enable: (actor: User, id: string) => Effect.Effect<UserRecord, UsersError>
  /** Ends every browser login of the user; how many there were. */
  readonly signOut: (actor: User, id: string) => Effect.Effect<number, UsersError>
  /** The login cookie's attributes (HttpOnly, SameSite=Lax, Secure over TLS, Max-Age). */
  readonly cookieOptions: ReturnType<typeof makeLoginSessions>["cookieOptions"]
}

const fromStore = (e: StoreError) =>
  e.reason._tag === "NotFound"
    ? new UsersError({ reason: "NotFound", message: e.message })
    : e.reason._tag === "Conflict"
    ? new UsersError({ reason: "Forbidden", message: `login refused: ${e.message}` })
    : new UsersError({ reason: "Unavailable", message: "the user directory is unavailable" })

/** A user id as Sessions sees a plain user: their own sessions only. */
const asUser = (id: string): User => ({ id: id as UserId, role: "user", groups: [] })

export const make = Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  const store = yield* Store
  const sessions = yield* Sessions
  const proxy = yield* VncProxy
  const audit = yield* Audit
  yield* Auth // cookies and tokens are checked there; this service makes and ends them
  const logins = makeLoginSessions(store, config)
  const oidcSettings = config.login.oidc
  const base = config.publicUrl ?? `http://${config.host === "0.0.0.0" ? "localhost" : config.host}:${config.port}`
  const redirectUrl = oidcSettings?.redirectUrl ?? `${base.replace(/\/+$/, "")}/auth/callback`
  const oidc = oidcSettings === undefined ? undefined : makeOidc(oidcSettings, config.login.groupsClaim, redirectUrl)
  const notConfigured = new UsersError({ reason: "NotConfigured", message: "OpenID Connect login is not configured (set OIDC_ISSUER_URL and OIDC_CLIENT_ID)" })

  if (oidc !== undefined) {
    // Discover now so a wrong OIDC_ISSUER_URL shows in the log at start; logins retry it.
    yield* oidc.configuration.pipe(
      Effect.tap(() => Effect.logInfo(`OpenID Connect: using ${oidcSettings!.issuerUrl}; callback ${redirectUrl}`)),
      Effect.catch((e) => Effect.logError(`OpenID Connect: ${e.message}; logins will retry`))
    )
  }
  yield* logins.sweep.pipe(
    Effect.catch((e) => Effect.logWarning("Users: could not delete ended logins", e)),
    Effect.repeat(Schedule.spaced(SWEEP_INTERVAL)),
    Effect.forkScoped
  )

  const beginLogin = Effect.fn("Users.beginLogin")(function*(returnTo: string) {
    if (oidc === undefined) return yield* notConfigured
    const request = yield* oidc.begin()
    const attempt = newCredential()
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    yield* store.logins.insertAttempt({
      idHash: hashToken(attempt),
      state: request.state,
      nonce: request.nonce,
      codeVerifier: request.codeVerifier,
      returnTo,
      expiresAt: new Date(now + Duration.toMillis(ATTEMPT_TTL))
    }).pipe(Effect.mapError(fromStore))
    return { location: request.url.href, attempt }
  })

  const completeLogin = Effect.fn("Users.completeLogin")(function*(callbackUrl: URL, attemptCookie: string | undefined) {
    if (oidc === undefined || oidcSettings === undefined) return yield* notConfigured
    const providerError = callbackUrl.searchParams.get("error")
    if (providerError !== null) {
      const description = callbackUrl.searchParams.get("error_description")
      return yield* new UsersError({ reason: "LoginFailed", message: `the provider refused the login: ${providerError}${description === null ? "" : `: ${description}`}`.slice(0, 300) })
    }
    const expired = new UsersError({ reason: "LoginFailed", message: "this login was not started in this browser or took too long: start again" })
    if (attemptCookie === undefined) return yield* expired
    const attempt = yield* store.logins.takeAttempt(hashToken(attemptCookie)).pipe(Effect.mapError(fromStore))
    const now = yield* Effect.clockWith((c) => c.currentTimeMillis)
    if (attempt === undefined || attempt.expiresAt.getTime() <= now) return yield* expired
    // The callback URL as the provider redirected to it (the redirect_uri plus the query), whatever Host the proxy passed.
    const callback = new URL(redirectUrl)
    callback.search = callbackUrl.search
    const identity = yield* oidc.finish(callback, attempt)
    const { allowedGroups } = oidcSettings
    const adminGroups = config.login.adminGroups
    if (allowedGroups.length > 0 && !identity.groups.some((g) => allowedGroups.includes(g))) {
      return yield* new UsersError({
        reason: "Forbidden",
        message: `${identity.username} may not use StreamSpace: not a member of any group allowed to log in (OIDC_ALLOWED_GROUPS)`
      })
    }
    const role = identity.groups.some((g) => adminGroups.includes(g)) ? "admin" as const : "user" as const
    const user = yield* store.users.recordLogin({
      id: identity.username as UserId,
      subject: identity.subject,
      role,
      displayName: identity.displayName,
      email: identity.email,
      groups: identity.groups
    }).pipe(Effect.mapError(fromStore))
    if (user.disabledAt !== undefined) return yield* new UsersError({ reason: "Forbidden", message: `${user.id} is disabled; ask an administrator` })
    const { cookie } = yield* logins.create({ id: user.id, role, groups: identity.groups }, identity.idToken).pipe(Effect.mapError(fromStore))
    yield* Effect.logInfo("Users: logged in").pipe(Effect.annotateLogs({ user: user.id, role }))
    return { returnTo: attempt.returnTo, cookie }
  })

  const logout = Effect.fn("Users.logout")(function*(cookie: string | undefined, postLogout: string) {
    const ended = cookie === undefined ? undefined : yield* logins.end(cookie).pipe(Effect.mapError(fromStore))
    if (oidc === undefined || ended === undefined) return postLogout
    return (yield* oidc.endSessionUrl(ended.idToken, postLogout))?.href ?? postLogout
  })

  const get = (id: string) => store.users.get(id).pipe(Effect.mapError(fromStore))

  /** Live sessions stop: running ones with a persistent home are hibernated (home kept), the rest deleted. */
  const stopSessions = Effect.fn("Users.stopSessions")(function*(actor: User, id: string) {
    const all = yield* sessions.page(asUser(id), undefined, undefined).pipe(Effect.orElseSucceed(() => []))
    let stopped = 0
    for (const s of all) {
      if (s.state === "terminated" || s.state === "failed" || s.state === "terminating" || s.state === "hibernated" || s.state === "hibernating") continue
      const stop = s.state === "running" && s.spec.persistent_home === true ? sessions.hibernate(actor, s.id) : sessions.remove(actor, s.id)
      yield* stop.pipe(
        Effect.tap(() => Effect.sync(() => void stopped++)),
        Effect.catch((e) => Effect.logWarning(`Users: could not stop session ${s.id} of disabled user ${id}: ${e.message}`))
      )
    }
    return stopped
  })

  const disable = Effect.fn("Users.disable")(function*(actor: User, id: string) {
    if (actor.id === id) return yield* new UsersError({ reason: "Forbidden", message: "you cannot disable yourself" })
    const user = yield* store.users.setDisabled(id, true).pipe(Effect.mapError(fromStore))
    const signedOut = yield* store.logins.removeUser(id).pipe(Effect.mapError(fromStore))
    yield* proxy.closeViewersOf(id, "your account was disabled by an administrator")
    const stopped = yield* stopSessions(actor, id)
    yield* audit.record(actor, "user.disable", { type: "user", id }, { logins_ended: signedOut, sessions_stopped: stopped })
    return user
  })

  const enable = Effect.fn("Users.enable")(function*(actor: User, id: string) {
    const user = yield* store.users.setDisabled(id, false).pipe(Effect.mapError(fromStore))
    yield* audit.record(actor, "user.enable", { type: "user", id })
    return user
  })

  const signOut = Effect.fn("Users.signOut")(function*(actor: User, id: string) {
    yield* get(id)
    const n = yield* store.logins.removeUser(id).pipe(Effect.mapError(fromStore))
    yield* audit.record(actor, "user.sign_out", { type: "user", id }, { logins_ended: n })
    return n
  })

  return Users.of({
    providerName: oidcSettings?.providerName,
    beginLogin,
    completeLogin,
    logout,
    currentLogin: (cookie) => Effect.mapError(logins.current(cookie), () => new UsersError({ reason: "Unavailable", message: "the login store is unavailable" })),
    get,
    page: (limit, after) => store.users.page(limit, after).pipe(Effect.mapError(fromStore)),
    sessionsOf: (id, limit, after) =>
      Effect.andThen(get(id), sessions.page(asUser(id), limit, after)).pipe(
        Effect.mapError((e) => e._tag === "UsersError" ? e : new UsersError({ reason: "Unavailable", message: e.message }))
      ),
    disable,
    enable,
    signOut,
    cookieOptions: logins.cookieOptions
  })
})

export class Users extends Context.Service<Users, UsersShape>()("control-plane/Users") {
  /** Needs Store, Auth, Sessions, VncProxy, Audit and config. */
  static readonly layer = Layer.effect(Users, make)
}
