// The sharing API (Sharing): shares, share links, presence and control of one session, and the public
// exchange of a share link's token for a viewer ticket. Errors have the API's JSON shape; bad input names the
// field. Strangers get 404 for everything about a session, as elsewhere.
import { UserId } from "@streamspace/protocol"
import { Duration, Effect, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Auth, type AuthError, type User } from "../../Auth.ts"
import { ControlPlaneConfig } from "../../ControlPlaneConfig.ts"
import { type ControlAction, MAX_LINK_TTL_SECONDS, Sharing, type SharingError } from "../../Sharing.ts"
import type { ShareLinkRecord, ShareRecord } from "../../Store.ts"
import { VncProxy, type VncProxyError } from "../../VncProxy.ts"
import { ApiError, decodeStrict, errorResponse, json, limitResponse, readBody } from "../api.ts"
import { answering } from "../httpError.ts"
import { noStore } from "../hardening.ts"

const Text = (what: string, max: number) =>
  Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: `${what} must not be empty` }), Schema.isMaxLength(max, { message: `${what} must be at most ${max} characters` })))
const Access = Schema.Literals(["view", "control"])

export const ShareBody = Schema.Struct({ user: UserId, access: Access })
export const LinkBody = Schema.Struct({
  access: Schema.optionalKey(Access),
  ttl_seconds: Schema.optionalKey(Schema.Int.pipe(Schema.check(
    Schema.isGreaterThanOrEqualTo(60, { message: "ttl_seconds must be at least 60" }),
    Schema.isLessThanOrEqualTo(MAX_LINK_TTL_SECONDS, { message: `ttl_seconds must be at most ${MAX_LINK_TTL_SECONDS} (7 days)` })
  ))),
  max_uses: Schema.optionalKey(Schema.Int.pipe(Schema.check(
    Schema.isGreaterThanOrEqualTo(1, { message: "max_uses must be at least 1" }),
    Schema.isLessThanOrEqualTo(1_000_000, { message: "max_uses must be at most 1000000" })
  ))),
  label: Schema.optionalKey(Text("label", 200))
})
export const RedeemBody = Schema.Struct({ token: Text("token", 200) })
export const ControlBody = Schema.Struct({ viewer: Schema.optionalKey(Text("viewer", 64)) })
export const ModeBody = Schema.Struct({ mode: Schema.Literals(["exclusive", "shared"]) })
const SessionPath = Schema.Struct({ id: Text("id", 128) })
const SharePath = Schema.Struct({ id: Text("id", 128), user: Text("user", 63) })
const LinkPath = Schema.Struct({ id: Text("id", 128), link: Text("link", 64) })
const ViewerPath = Schema.Struct({ id: Text("id", 128), viewer: Text("viewer", 64) })
const ActionPath = Schema.Struct({ id: Text("id", 128), action: Schema.Literals(["request", "grant", "take", "release"]) })

/** How long `GET .../presence?since=N` waits for a change before answering the unchanged state. */
export const PRESENCE_WAIT = Duration.seconds(25)

type Failure = ApiError | AuthError | SharingError | VncProxyError

const toResponse = (e: Failure): HttpServerResponse.HttpServerResponse => {
  switch (e._tag) {
    case "ApiError":
      return errorResponse(e.status, e.code, e.message)
    case "AuthError":
      return e.reason === "Forbidden" ? errorResponse(403, "forbidden", e.message) : errorResponse(401, "unauthorized", e.message)
    case "SharingError":
      switch (e.reason) {
        case "NotFound":
          return errorResponse(404, "not_found", e.message)
        case "Forbidden":
          return errorResponse(403, "forbidden", e.message)
        case "InvalidRequest":
          return errorResponse(400, "invalid_request", e.message)
        case "Gone":
          return errorResponse(410, "gone", e.message)
        case "Unavailable":
          return errorResponse(503, "unavailable", e.message)
      }
      break
    case "VncProxyError":
      return e.reason === "NotFound" ? errorResponse(404, "not_found", e.message) : e.reason === "LimitExceeded" ? limitResponse(e.message, undefined) : errorResponse(401, "unauthorized", e.message)
  }
  return errorResponse(500, "internal", "unexpected error")
}

const answer = answering(toResponse)

export const shareJson = (s: ShareRecord) => ({ user: s.userId, access: s.access, created_by: s.createdBy, created_at: s.createdAt.toISOString() })

export const linkJson = (l: ShareLinkRecord, now: number) => ({
  id: l.id,
  session_id: l.sessionId,
  access: l.access,
  label: l.label ?? null,
  created_by: l.createdBy,
  created_at: l.createdAt.toISOString(),
  expires_at: l.expiresAt.toISOString(),
  max_uses: l.maxUses ?? null,
  uses: l.uses,
  revoked_at: l.revokedAt?.toISOString() ?? null,
  active: l.revokedAt === undefined && l.expiresAt.getTime() > now && (l.maxUses === undefined || l.uses < l.maxUses)
})

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const config = yield* ControlPlaneConfig
  const auth = yield* Auth
  const sharing = yield* Sharing
  const proxy = yield* VncProxy
  const user: Effect.Effect<User, AuthError, HttpServerRequest.HttpServerRequest> = Effect.flatMap(
    HttpServerRequest.HttpServerRequest,
    (request) => auth.authenticateRequest(request)
  )
  const path = <S extends Schema.Decoder<unknown>>(schema: S) => Effect.flatMap(HttpRouter.params, (p) => decodeStrict(schema, p, "path"))
  const body = <S extends Schema.Decoder<unknown>>(schema: S) => readBody(schema, config.maxBodyBytes)
  const optionalBody = <S extends Schema.Decoder<unknown>>(schema: S) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      Number(request.headers["content-length"] ?? "0") > 0 ? body(schema) : decodeStrict(schema, {}, "request body"))
  const nowMs = Effect.clockWith((c) => c.currentTimeMillis)
  const s = "/api/v1/sessions/:id"

  // ---- shares (owner and admins)
  yield* router.add("GET", `${s}/shares`, answer("Sharing.listShares", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(SessionPath)
    return json({ session_id: id, shares: (yield* sharing.shares(u, id)).map(shareJson) })
  })))
  yield* router.add("POST", `${s}/shares`, answer("Sharing.share", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(SessionPath)
    const request = yield* body(ShareBody)
    return json(shareJson(yield* sharing.share(u, id, request.user, request.access)), 201)
  })))
  yield* router.add("DELETE", `${s}/shares/:user`, answer("Sharing.unshare", Effect.gen(function*() {
    const u = yield* user
    const p = yield* path(SharePath)
    yield* sharing.unshare(u, p.id, p.user)
    return HttpServerResponse.empty({ status: 204 })
  })))

  // ---- share links (owner and admins); the token is shown once, at creation
  yield* router.add("GET", `${s}/share-links`, answer("Sharing.listLinks", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(SessionPath)
    const now = yield* nowMs
    return json({ session_id: id, links: (yield* sharing.links(u, id)).map((l) => linkJson(l, now)) })
  })))
  yield* router.add("POST", `${s}/share-links`, answer("Sharing.createLink", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(SessionPath)
    const request = yield* optionalBody(LinkBody)
    const { link, token } = yield* sharing.createLink(u, id, { access: request.access, ttlSeconds: request.ttl_seconds, maxUses: request.max_uses, label: request.label })
    const base = config.publicUrl?.replace(/\/+$/, "") ?? ""
    return noStore(json({ ...linkJson(link, yield* nowMs), token, url: `${base}/#share=${token}` }, 201))
  })))
  yield* router.add("DELETE", `${s}/share-links/:link`, answer("Sharing.revokeLink", Effect.gen(function*() {
    const u = yield* user
    const p = yield* path(LinkPath)
    return json(linkJson(yield* sharing.revokeLink(u, p.id, p.link), yield* nowMs))
  })))
  // Public: whoever holds a link's token gets a single-use viewer ticket with the link's access.
  yield* router.add("POST", "/api/v1/share-links/redeem", answer("Sharing.redeemLink", Effect.gen(function*() {
    const { token } = yield* body(RedeemBody)
    const link = yield* sharing.redeemLink(token)
    const t = yield* proxy.issueLinkTicket(link.id, link.sessionId)
    return noStore(json({
      session_id: t.sessionId,
      link_id: link.id,
      access: link.access,
      link_expires_at: link.expiresAt.toISOString(),
      ticket: t.ticket,
      viewer_id: t.viewerId,
      expires_at: t.expiresAt.toISOString(),
      url: `/api/v1/sessions/${t.sessionId}/vnc?ticket=${t.ticket}`
    }, 201))
  })))

  // ---- presence and control (anyone the session is visible to)
  yield* router.add("GET", `${s}/presence`, answer("Sharing.presence", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(SessionPath)
    const request = yield* HttpServerRequest.HttpServerRequest
    const since = new URL(request.url, "http://x").searchParams.get("since")
    if (since === null) return noStore(json(yield* sharing.presence(u, id)))
    if (!/^\d{1,15}$/.test(since)) return yield* new ApiError({ status: 400, code: "invalid_request", message: "since: must be a version number from an earlier answer" })
    return noStore(json(yield* sharing.presenceAfter(u, id, Number(since), PRESENCE_WAIT)))
  })))
  yield* router.add("POST", `${s}/control/:action`, answer("Sharing.control", Effect.gen(function*() {
    const u = yield* user
    const p = yield* path(ActionPath)
    const { viewer } = yield* optionalBody(ControlBody)
    if (viewer === undefined && p.action !== "take") return yield* new ApiError({ status: 400, code: "invalid_request", message: "viewer: is required" })
    return json(yield* sharing.control(u, p.id, p.action as ControlAction, viewer))
  })))
  yield* router.add("PUT", `${s}/control-mode`, answer("Sharing.setMode", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(SessionPath)
    const { mode } = yield* body(ModeBody)
    return json(yield* sharing.setMode(u, id, mode))
  })))
  yield* router.add("DELETE", `${s}/viewers/:viewer`, answer("Sharing.endViewer", Effect.gen(function*() {
    const u = yield* user
    const p = yield* path(ViewerPath)
    yield* sharing.endViewer(u, p.id, p.viewer)
    return HttpServerResponse.empty({ status: 204 })
  })))
}))
