// UsersApi: the login routes (`/auth/*`: the OpenID Connect redirect and callback, logout, who am I) and the
// admin's user routes under /api/v1/users (list, one user, their sessions, disable, enable, sign out
// everywhere). Login failures in the browser get a short HTML page that says what went wrong; the JSON routes
// answer like the rest of the API.
import { Duration, Effect, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { answer } from "./Api.ts"
import { Auth, requireAdmin } from "./Auth.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { ApiError, decodeStrict, json, sessionJson } from "./internal/api.ts"
import { LOGIN_COOKIE } from "./internal/auth/loginSessions.ts"
import { encodeCursor, pageRequest } from "./internal/pagination.ts"
import type { UserRecord } from "./Store.ts"
import { ATTEMPT_COOKIE, Users, type UsersError } from "./Users.ts"

const IdPath = Schema.Struct({ id: Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: "id must not be empty" }), Schema.isMaxLength(128, { message: "id must be at most 128 characters" }))) })

export const userJson = (u: UserRecord) => ({
  id: u.id,
  display_name: u.displayName ?? null,
  email: u.email ?? null,
  role: u.role,
  groups: u.groups,
  disabled: u.disabledAt !== undefined,
  disabled_at: u.disabledAt?.toISOString() ?? null,
  last_seen_at: u.lastSeenAt?.toISOString() ?? null,
  created_at: u.createdAt.toISOString()
})

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** A login failure as a page a person reads (the browser arrived here by a redirect, not by fetch). */
const failurePage = (e: UsersError) => {
  const status = e.reason === "Forbidden" ? 403 : e.reason === "ProviderUnavailable" ? 503 : e.reason === "NotConfigured" ? 404 : e.reason === "Unavailable" ? 503 : 400
  return HttpServerResponse.html(
    `<!doctype html><meta charset="utf-8"><title>StreamSpace login failed</title>` +
      `<h1>Login failed</h1><p id="login-error">${escapeHtml(e.message)}</p><p><a href="/">Back to StreamSpace</a></p>`
  ).pipe(HttpServerResponse.setStatus(status))
}

/** Only a path on this site: anything else (another host, `//host`, a scheme) returns to the UI's start. */
const localPath = (s: string | null) => (s !== null && /^\/(?![/\\])/.test(s) ? s.slice(0, 1000) : "/")

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const users = yield* Users
  const auth = yield* Auth
  const config = yield* ControlPlaneConfig
  const request = HttpServerRequest.HttpServerRequest
  const query = Effect.map(request, (r) => new URL(r.url, "http://x").searchParams)
  const user = Effect.flatMap(request, (r) => auth.authenticateRequest(r))
  const admin = Effect.tap(user, requireAdmin)
  const path = Effect.flatMap(HttpRouter.params, (p) => decodeStrict(IdPath, p, "path"))
  const attemptCookie = { path: "/auth/callback", httpOnly: true, sameSite: "lax", secure: users.cookieOptions.secure } as const

  // What the UI shows on its login screen.
  yield* router.add("GET", "/auth/config", Effect.succeed(json({ oidc: users.providerName === undefined ? null : { provider_name: users.providerName, login_url: "/auth/login" }, dev_mode: config.devMode })))

  yield* router.add("GET", "/auth/login", Effect.gen(function*() {
    const returnTo = localPath((yield* query).get("return_to"))
    return yield* users.beginLogin(returnTo).pipe(
      Effect.map((start) =>
        HttpServerResponse.redirect(start.location, { status: 302 }).pipe(
          HttpServerResponse.setCookieUnsafe(ATTEMPT_COOKIE, start.attempt, { ...attemptCookie, maxAge: Duration.minutes(10) })
        )
      ),
      Effect.catch((e) => Effect.succeed(failurePage(e)))
    )
  }).pipe(Effect.withSpan("UsersApi.login")))

  yield* router.add("GET", "/auth/callback", Effect.gen(function*() {
    const r = yield* request
    const done = yield* Effect.result(users.completeLogin(new URL(r.url, "http://x"), r.cookies[ATTEMPT_COOKIE]))
    const response = done._tag === "Failure"
      ? failurePage(done.failure)
      : HttpServerResponse.redirect(done.success.returnTo, { status: 302 }).pipe(
        HttpServerResponse.setCookieUnsafe(LOGIN_COOKIE, done.success.cookie, users.cookieOptions)
      )
    if (done._tag === "Failure") yield* Effect.logWarning(`UsersApi: ${done.failure.message}`)
    return HttpServerResponse.expireCookieUnsafe(response, ATTEMPT_COOKIE, attemptCookie)
  }).pipe(Effect.withSpan("UsersApi.callback")))

  // Logout needs the login's CSRF token like any state change (a forged logout is a nuisance, not harmless).
  yield* router.add("POST", "/auth/logout", answer("UsersApi.logout", Effect.gen(function*() {
    const r = yield* request
    const cookie = r.cookies[LOGIN_COOKIE]
    if (cookie !== undefined) yield* auth.authenticateRequest(r).pipe(Effect.catchIf((e) => e.reason !== "Forbidden", () => Effect.void))
    const origin = config.publicUrl ?? `${r.headers["x-forwarded-proto"] === "https" || config.tlsCertFile !== undefined ? "https" : "http"}://${r.headers["host"] ?? "localhost"}`
    const location = yield* users.logout(cookie, `${origin.replace(/\/+$/, "")}/`)
    return json({ redirect: location }).pipe(HttpServerResponse.expireCookieUnsafe(LOGIN_COOKIE, users.cookieOptions))
  })))

  yield* router.add("GET", "/auth/me", answer("UsersApi.me", Effect.gen(function*() {
    const r = yield* request
    const u = yield* user
    const cookie = r.headers["authorization"] === undefined ? r.cookies[LOGIN_COOKIE] : undefined
    const login = cookie === undefined ? undefined : yield* users.currentLogin(cookie)
    const record = yield* users.get(u.id).pipe(Effect.option)
    return HttpServerResponse.setHeader(json({
      user: { id: u.id, role: u.role, groups: u.groups, display_name: record._tag === "Some" ? record.value.displayName ?? null : null, email: record._tag === "Some" ? record.value.email ?? null : null },
      /** For cookie logins: send it as X-CSRF-Token on every request that changes something. */
      csrf_token: login?.csrfToken ?? null,
      login_expires_at: login === undefined ? null : login.expiresAt.toISOString()
    }), "cache-control", "no-store")
  })))

  const p = "/api/v1/users"
  yield* router.add("GET", p, answer("UsersApi.list", Effect.gen(function*() {
    yield* admin
    const page = yield* pageRequest(p, 1)
    const rows = yield* users.page(page.limit + 1, page.after?.[0])
    const shown = rows.slice(0, page.limit)
    return json({ users: shown.map(userJson), next_cursor: rows.length > page.limit ? encodeCursor(p, [shown.at(-1)!.id]) : null })
  })))
  yield* router.add("GET", `${p}/:id`, answer("UsersApi.get", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path
    if (u.role !== "admin" && u.id !== id) return yield* new ApiError({ status: 403, code: "forbidden", message: "this action needs the admin role" })
    return json(userJson(yield* users.get(id)))
  })))
  yield* router.add("GET", `${p}/:id/sessions`, answer("UsersApi.sessions", Effect.gen(function*() {
    yield* admin
    const { id } = yield* path
    const list = `${p}/${id}/sessions`
    const page = yield* pageRequest(list, 2)
    const after = page.after === undefined ? undefined : { createdAt: new Date(page.after[0]!), id: page.after[1]! }
    if (after !== undefined && Number.isNaN(after.createdAt.getTime())) {
      return yield* new ApiError({ status: 400, code: "invalid_request", message: "cursor: not a cursor of this list" })
    }
    const rows = yield* users.sessionsOf(id, page.limit + 1, after)
    const shown = rows.slice(0, page.limit)
    const last = shown.at(-1)
    return json({ sessions: shown.map(sessionJson), next_cursor: rows.length > page.limit && last !== undefined ? encodeCursor(list, [last.createdAt.toISOString(), last.id]) : null })
  })))
  yield* router.add("POST", `${p}/:id/disable`, answer("UsersApi.disable", Effect.gen(function*() {
    const actor = yield* admin
    const { id } = yield* path
    return json(userJson(yield* users.disable(actor, id)))
  })))
  yield* router.add("POST", `${p}/:id/enable`, answer("UsersApi.enable", Effect.gen(function*() {
    const actor = yield* admin
    const { id } = yield* path
    return json(userJson(yield* users.enable(actor, id)))
  })))
  yield* router.add("POST", `${p}/:id/sign-out`, answer("UsersApi.signOut", Effect.gen(function*() {
    const actor = yield* admin
    const { id } = yield* path
    return json({ id, logins_ended: yield* users.signOut(actor, id) })
  })))
}))

export const layer = routes
