// Api: the JSON HTTP API under /api/v1 (health, agents, templates, sessions, commands, VNC tickets) and
// GET /metrics. Every route but health and metrics needs a user JWT (Auth); changing agents and templates
// needs the admin role; users see and touch only their own sessions. Bodies are read within MAX_BODY_BYTES and
// decoded strictly (unknown fields are errors); every error is `{"error": {"code", "message"}}` with the
// status that fits, and bad input names the field. Admin actions and session creates/deletes are recorded in
// the audit log (Audit) with the acting user's sub; GET /api/v1/audit reads it (admins). Browsers authenticate
// with their login cookie instead of a JWT (Auth.authenticateRequest, with its CSRF check).
import { AgentId, CommandId, TemplateName } from "@streamspace/protocol"
import { Duration, Effect, Metric, Option, Schema } from "effect"
import { HttpEffect, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { AgentHub, type AgentHubError, type AgentView } from "./AgentHub.ts"
import { Audit, type AuditError } from "./Audit.ts"
import { Auth, type AuthError, requireAdmin, type User } from "./Auth.ts"
import { CommandDispatcher, type CommandDispatcherError } from "./CommandDispatcher.ts"
import { Homes, type HomesError } from "./Homes.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { agentJson, ApiError, commandJson, decodeStrict, errorResponse, homeJson, json, jsonRouterErrors, limitResponse, readBody, sessionEventJson, sessionJson, templateJson } from "./internal/api.ts"
import { answering } from "./internal/httpError.ts"
import { AuditQuery, auditJson, hardeningHeaders, metricsAuthorized, noStore } from "./internal/hardening.ts"
import { encodeCursor, pageOf, pageRequest } from "./internal/pagination.ts"
import { agentsGauge, metricsHandler, registerMetrics, sessionsGauge, setGaugeFamily, vncBufferedBytes, vncBufferedBytesMax } from "./Observability.ts"
import { CreateSessionRequest, CreateTemplateRequest, PatchTemplateRequest, SESSION_STATES, type SessionRecord, Sessions, type SessionsError } from "./Sessions.ts"
import { Sharing } from "./Sharing.ts"
import { makeTeamGauges } from "./internal/teams/metrics.ts"
import { Teams } from "./Teams.ts"
import type { UsersError } from "./Users.ts"
import { VncProxy, type VncProxyError } from "./VncProxy.ts"

export const PatchAgentBody = Schema.Struct({ status: Schema.Literals(["online", "offline"]) })

const AgentPath = Schema.Struct({ id: AgentId })
/** POST /agents/:id/enrollment-token: how long the token is valid, 1 minute to 7 days (default 1 hour). */
export const EnrollmentTokenBody = Schema.Struct({
  ttl_seconds: Schema.optionalKey(Schema.Int.pipe(Schema.check(
    Schema.isGreaterThanOrEqualTo(60, { message: "ttl_seconds must be at least 60" }),
    Schema.isLessThanOrEqualTo(604800, { message: "ttl_seconds must be at most 604800 (7 days)" })
  )))
})
const NamePath = Schema.Struct({ name: TemplateName })
const IdPath = Schema.Struct({ id: Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: "id must not be empty" }), Schema.isMaxLength(128, { message: "id must be at most 128 characters" }))) })
const CommandPath = Schema.Struct({ id: CommandId })

type Failure = ApiError | AuthError | SessionsError | AgentHubError | CommandDispatcherError | VncProxyError | AuditError | HomesError | UsersError

export const toResponse = (e: Failure): HttpServerResponse.HttpServerResponse => {
  switch (e._tag) {
    case "ApiError":
      return errorResponse(e.status, e.code, e.message)
    case "AuthError":
      return e.reason === "Forbidden"
        ? errorResponse(403, "forbidden", e.message)
        : e.reason === "Misconfigured"
        ? errorResponse(500, "internal", e.message)
        : errorResponse(401, "unauthorized", e.message)
    case "SessionsError":
      switch (e.reason) {
        case "NotFound":
          return errorResponse(404, "not_found", e.message)
        case "TemplateNotFound":
        case "InvalidRequest":
          return errorResponse(400, "invalid_request", e.message)
        case "TemplateExists":
        case "Conflict":
          return errorResponse(409, "conflict", e.message)
        case "NoEligibleAgent":
          return errorResponse(503, "no_eligible_agent", e.message)
        case "LimitExceeded":
          return limitResponse(e.message, e.retryAfterSeconds)
        case "QuotaExceeded":
          return errorResponse(429, "quota_exceeded", e.message, { team: e.team ?? null, quota: e.quota ?? null })
        case "TeamForbidden":
          return errorResponse(403, "team_forbidden", e.message)
        case "Store":
          return errorResponse(503, "unavailable", e.message)
      }
      break
    case "AgentHubError":
      return e.reason === "NotFound" ? errorResponse(404, "not_found", e.message) : errorResponse(409, "conflict", e.message)
    case "CommandDispatcherError":
      return e.reason === "NotFound" ? errorResponse(404, "not_found", e.message) : errorResponse(503, "unavailable", e.message)
    case "HomesError":
      switch (e.reason) {
        case "NotFound":
          return errorResponse(404, "not_found", e.message)
        case "InUse":
          return errorResponse(409, "conflict", e.message)
        case "Forbidden":
          return errorResponse(403, "forbidden", e.message)
        case "Unavailable":
          return errorResponse(503, "unavailable", e.message)
      }
      break
    case "VncProxyError":
      return e.reason === "NotFound"
        ? errorResponse(404, "not_found", e.message)
        : e.reason === "LimitExceeded"
        ? limitResponse(e.message, undefined)
        : e.reason === "AgentOffline"
        ? errorResponse(409, "agent_offline", e.message)
        : errorResponse(401, "unauthorized", e.message)
    case "AuditError":
      return errorResponse(503, "unavailable", e.message)
    case "UsersError":
      return usersErrorResponse(e)
  }
  return errorResponse(500, "internal", "unexpected error")
}

const usersErrorResponse = (e: UsersError) =>
  e.reason === "NotFound"
    ? errorResponse(404, "not_found", e.message)
    : e.reason === "Forbidden"
    ? errorResponse(403, "forbidden", e.message)
    : e.reason === "LoginFailed" || e.reason === "NotConfigured"
    ? errorResponse(400, "invalid_request", e.message)
    : errorResponse(503, "unavailable", e.message)

/** Answers errors as JSON; a defect is logged and answered 500 without details. */
export const answer = answering(toResponse)

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const config = yield* ControlPlaneConfig
  const auth = yield* Auth
  const hub = yield* AgentHub
  const sessions = yield* Sessions
  const dispatcher = yield* CommandDispatcher
  const proxy = yield* VncProxy
  const audit = yield* Audit
  const homes = yield* Homes
  const sharing = Option.getOrUndefined(yield* Effect.serviceOption(Sharing))
  const teams = yield* Effect.serviceOption(Teams)

  const user: Effect.Effect<User, AuthError, HttpServerRequest.HttpServerRequest> = Effect.flatMap(
    HttpServerRequest.HttpServerRequest,
    (request) => auth.authenticateRequest(request)
  )
  const admin = Effect.tap(user, requireAdmin)
  const path = <S extends Schema.Decoder<unknown>>(schema: S) => Effect.flatMap(HttpRouter.params, (p) => decodeStrict(schema, p, "path"))
  const body = <S extends Schema.Decoder<unknown>>(schema: S) => readBody(schema, config.maxBodyBytes)

  /** A session as the API shows it: the record plus its lifecycle (limits, warning, activity). */
  const view = (s: SessionRecord) => ({ ...sessionJson(s), ...sessions.lifecycle(s) })
  const agentView = (a: AgentView) => agentJson(a, sessions.unknownSessions(a.id).map((s) => s.session_id))
  const getAgent = (id: AgentId) =>
    Effect.flatMap(hub.get(id), Option.match({
      onNone: () => Effect.fail(new ApiError({ status: 404, code: "not_found", message: `no agent "${id}"` })),
      onSome: Effect.succeed
    }))

  const p = "/api/v1"

  // Requests the router turns away before any route runs (no route, a path it cannot percent-decode, a
  // parameter over its length limit) would get an empty 404: they get the JSON error shape too.
  yield* router.addGlobalMiddleware((app) => HttpEffect.withPreResponseHandler(app, (request, response) => Effect.succeed(jsonRouterErrors(request, response))))
  // HSTS when serving TLS; nosniff on every answer (JSON included).
  const hardening = hardeningHeaders(config.tlsCertFile !== undefined)
  yield* router.addGlobalMiddleware((app) => HttpEffect.withPreResponseHandler(app, (_request, response) => Effect.succeed(hardening(response))))

  yield* router.add("GET", `${p}/health`, answer("Api.health", Effect.gen(function*() {
    const agents = yield* hub.list
    return json({ status: "ok", agents_online: agents.filter((a) => a.connected && a.status === "online").length })
  })))

  // ---- agents
  yield* router.add("GET", `${p}/agents`, answer("Api.listAgents", Effect.gen(function*() {
    yield* user
    const request = yield* pageRequest("/api/v1/agents", 1)
    const agents = [...(yield* hub.list)].sort((a, b) => (a.id < b.id ? -1 : 1))
    const { items, next } = pageOf("/api/v1/agents", agents, (a) => a.id, request)
    return json({ agents: items.map(agentView), next_cursor: next })
  })))
  yield* router.add("GET", `${p}/agents/:id`, answer("Api.getAgent", Effect.gen(function*() {
    yield* user
    const { id } = yield* path(AgentPath)
    return json(agentView(yield* getAgent(id)))
  })))
  yield* router.add("PATCH", `${p}/agents/:id`, answer("Api.patchAgent", Effect.gen(function*() {
    const actor = yield* admin
    const { id } = yield* path(AgentPath)
    const { status } = yield* body(PatchAgentBody)
    yield* getAgent(id)
    const view = yield* hub.setDraining(id, status === "offline")
    yield* audit.record(actor, status === "offline" ? "agent.drain" : "agent.undrain", { type: "agent", id })
    return json(agentView(view))
  })))
  for (const action of ["approve", "reject", "rotate", "revoke"] as const) {
    yield* router.add("POST", `${p}/agents/:id/${action}`, answer(`Api.${action}Agent`, Effect.gen(function*() {
      const actor = yield* admin
      const { id } = yield* path(AgentPath)
      const view = yield* hub[action](id)
      yield* audit.record(actor, `agent.${action}`, { type: "agent", id })
      return json(agentView(view))
    })))
  }

  yield* router.add("DELETE", `${p}/agents/:id`, answer("Api.deleteAgent", Effect.gen(function*() {
    const actor = yield* admin
    const { id } = yield* path(AgentPath)
    yield* hub.remove(id)
    yield* audit.record(actor, "agent.delete", { type: "agent", id })
    return json({ id, deleted: true })
  })))
  yield* router.add("POST", `${p}/agents/:id/enrollment-token`, answer("Api.enrollmentToken", Effect.gen(function*() {
    const actor = yield* admin
    const { id } = yield* path(AgentPath)
    const request = yield* HttpServerRequest.HttpServerRequest
    const { ttl_seconds } = Number(request.headers["content-length"] ?? "0") > 0 ? yield* body(EnrollmentTokenBody) : {}
    const issued = yield* hub.issueEnrollmentToken(id, Duration.seconds(ttl_seconds ?? 3600))
    yield* audit.record(actor, "agent.enrollment_token", { type: "agent", id }, { expires_at: issued.expiresAt.toISOString() })
    // Shown once: never cached, never stored in the clear.
    return noStore(json({ agent_id: id, token: issued.token, expires_at: issued.expiresAt.toISOString() }, 201))
  })))

  // ---- templates
  yield* router.add("GET", `${p}/templates`, answer("Api.listTemplates", Effect.gen(function*() {
    yield* user
    const request = yield* pageRequest("/api/v1/templates", 1)
    const templates = [...(yield* sessions.listTemplates)].sort((a, b) => (a.name < b.name ? -1 : 1))
    const { items, next } = pageOf("/api/v1/templates", templates, (t) => t.name, request)
    return json({ templates: items.map(templateJson), next_cursor: next })
  })))
  yield* router.add("GET", `${p}/templates/:name`, answer("Api.getTemplate", Effect.gen(function*() {
    yield* user
    const { name } = yield* path(NamePath)
    return json(templateJson(yield* sessions.getTemplate(name)))
  })))
  yield* router.add("POST", `${p}/templates`, answer("Api.createTemplate", Effect.gen(function*() {
    const actor = yield* admin
    const t = yield* body(CreateTemplateRequest)
    const created = yield* sessions.createTemplate(t)
    yield* audit.record(actor, "template.create", { type: "template", id: created.name }, { image: created.image })
    return json(templateJson(created), 201)
  })))

  yield* router.add("PATCH", `${p}/templates/:name`, answer("Api.patchTemplate", Effect.gen(function*() {
    yield* admin
    const { name } = yield* path(NamePath)
    const patch = yield* body(PatchTemplateRequest)
    return json(templateJson(yield* sessions.updateTemplate(name, patch)))
  })))
  yield* router.add("DELETE", `${p}/templates/:name`, answer("Api.deleteTemplate", Effect.gen(function*() {
    yield* admin
    const { name } = yield* path(NamePath)
    yield* sessions.deleteTemplate(name)
    return HttpServerResponse.empty({ status: 204 })
  })))

  // ---- sessions
  yield* router.add("POST", `${p}/sessions`, answer("Api.createSession", Effect.gen(function*() {
    const u = yield* user
    const request = yield* body(CreateSessionRequest)
    const created = yield* sessions.create(u, request)
    yield* audit.record(u, "session.create", { type: "session", id: created.id }, { template: created.template, agent_id: created.agentId ?? null, owner: created.userId, team: created.team ?? null })
    return json(view(created), 201)
  })))
  yield* router.add("GET", `${p}/sessions`, answer("Api.listSessions", Effect.gen(function*() {
    const u = yield* user
    // Newest first, read a page at a time from the store (ended sessions are not kept in memory).
    const request = yield* pageRequest("/api/v1/sessions", 2)
    const after = request.after === undefined ? undefined : { createdAt: new Date(request.after[0]!), id: request.after[1]! }
    if (after !== undefined && Number.isNaN(after.createdAt.getTime())) {
      return yield* new ApiError({ status: 400, code: "invalid_request", message: "cursor: not a cursor of this list" })
    }
    const rows = yield* sessions.page(u, request.limit + 1, after)
    const shown = rows.slice(0, request.limit)
    const last = shown.at(-1)
    const next = rows.length > request.limit && last !== undefined ? encodeCursor("/api/v1/sessions", [last.createdAt.toISOString(), last.id]) : null
    // The first page also lists the live sessions shared with the user, marked `shared` (admins see all anyway).
    const shared = request.after === undefined && sharing !== undefined && u.role !== "admin"
      ? yield* sharing.sharedWith(u).pipe(Effect.mapError((e) => new ApiError({ status: 503, code: "unavailable", message: e.message })))
      : []
    const marked = shared.map(({ session, share }) => ({ ...view(session), shared: { access: share.access, owner: session.userId } }))
    return json({ sessions: [...shown.map(view), ...marked], next_cursor: next })
  })))
  yield* router.add("GET", `${p}/sessions/:id`, answer("Api.getSession", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    // A session shared with the user reads as in their list, marked `shared`; anyone else still gets 404.
    const shared = (e: SessionsError) =>
      sharing === undefined || e.reason !== "NotFound"
        ? Effect.fail(e)
        : sharing.access(u, id).pipe(
          Effect.map(({ access, session }) => ({ ...view(session), shared: { access, owner: session.userId } })),
          Effect.mapError(() => e)
        )
    return json(yield* sessions.get(u, id).pipe(Effect.map(view), Effect.catch(shared)))
  })))
  yield* router.add("GET", `${p}/sessions/:id/history`, answer("Api.sessionHistory", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    return json({ session_id: id, history: (yield* sessions.history(u, id)).map(sessionEventJson) })
  })))
  yield* router.add("DELETE", `${p}/sessions/:id`, answer("Api.deleteSession", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    const s = yield* sessions.remove(u, id)
    yield* audit.record(u, "session.delete", { type: "session", id: s.id }, { owner: s.userId })
    return json(view(s), s.state === "terminated" ? 200 : 202)
  })))
  yield* router.add("POST", `${p}/sessions/:id/hibernate`, answer("Api.hibernateSession", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    const s = yield* sessions.hibernate(u, id)
    yield* audit.record(u, "session.hibernate", { type: "session", id: s.id }, { owner: s.userId })
    return json(view(s), s.state === "hibernated" ? 200 : 202)
  })))
  yield* router.add("POST", `${p}/sessions/:id/resume`, answer("Api.resumeSession", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    const s = yield* sessions.resume(u, id)
    yield* audit.record(u, "session.resume", { type: "session", id: s.id }, { owner: s.userId })
    return json(view(s), s.state === "running" ? 200 : 202)
  })))
  yield* router.add("POST", `${p}/sessions/:id/keepalive`, answer("Api.keepaliveSession", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    return json(view(yield* sessions.keepalive(u, id)))
  })))
  yield* router.add("POST", `${p}/sessions/:id/vnc-ticket`, answer("Api.vncTicket", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    const t = yield* proxy.issueTicket(u, id)
    return noStore(json({
      ticket: t.ticket,
      session_id: t.sessionId,
      expires_at: t.expiresAt.toISOString(),
      viewer_id: t.viewerId,
      url: `${p}/sessions/${t.sessionId}/vnc?ticket=${t.ticket}`
    }, 201))
  })))

  // ---- audit log (admins): newest first, `limit` (1..500, default 100) and `cursor` (the previous page's next_cursor)
  yield* router.add("GET", `${p}/audit`, answer("Api.audit", Effect.gen(function*() {
    yield* admin
    const request = yield* HttpServerRequest.HttpServerRequest
    const query = yield* decodeStrict(AuditQuery, Object.fromEntries(new URL(request.url, "http://x").searchParams), "query")
    return json(auditJson(yield* audit.list({ limit: query.limit ?? 100, before: query.cursor })))
  })))

  // ---- homes: a user's own; admins all, or one user's with ?user=
  yield* router.add("GET", `${p}/homes`, answer("Api.listHomes", Effect.gen(function*() {
    const u = yield* user
    const request = yield* HttpServerRequest.HttpServerRequest
    const forUser = new URL(request.url, "http://x").searchParams.get("user") ?? undefined
    return json({ homes: (yield* homes.list(u, forUser)).map(homeJson) })
  })))
  yield* router.add("DELETE", `${p}/homes/:id`, answer("Api.deleteHome", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    yield* homes.remove(u, id)
    return HttpServerResponse.empty({ status: 204 })
  })))

  // ---- commands: admins see all; a user sees the commands of their own sessions
  yield* router.add("GET", `${p}/commands/:id`, answer("Api.getCommand", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(CommandPath)
    const notFound = new ApiError({ status: 404, code: "not_found", message: `no command "${id}"` })
    const command = yield* dispatcher.get(id).pipe(Effect.catchIf((e) => e.reason === "NotFound" && u.role !== "admin", () => Effect.fail(notFound)))
    if (u.role !== "admin") {
      // A user sees the commands of their own sessions only (and cannot tell others' from missing ones).
      if (command.sessionId === undefined) return yield* notFound
      yield* sessions.get(u, command.sessionId).pipe(Effect.catchIf((e) => e.reason === "NotFound", () => Effect.fail(notFound)))
    }
    return json(commandJson(command))
  })))

  if (config.metricsEnabled) {
    yield* registerMetrics
    const teamGauges = Option.isSome(teams) ? makeTeamGauges(teams.value, sessions, homes) : Effect.void
    const scrape = metricsHandler(refreshGauges.pipe(
      Effect.provideService(AgentHub, hub),
      Effect.provideService(Sessions, sessions),
      Effect.provideService(VncProxy, proxy),
      Effect.andThen(teamGauges)
    ))
    // With METRICS_TOKEN, a scrape must present it as a bearer token (a ServiceMonitor's bearerTokenSecret).
    yield* router.add("GET", "/metrics", Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      metricsAuthorized(config.metricsToken, request.headers["authorization"])
        ? scrape
        : Effect.succeed(errorResponse(401, "unauthorized", "GET /metrics needs Authorization: Bearer <METRICS_TOKEN>"))))
  }

  yield* router.add("*", `${p}/*`, answer("Api.notFound", Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    return yield* new ApiError({ status: 404, code: "not_found", message: `no endpoint ${request.method} ${new URL(request.url, "http://x").pathname}` })
  })))
}))

/** Recomputes the snapshot gauges (agents by status, sessions by state, bytes held for viewers) before a scrape. */
export const refreshGauges = Effect.gen(function*() {
  const hub = yield* AgentHub
  const sessions = yield* Sessions
  const held = yield* (yield* VncProxy).buffered
  yield* Metric.update(vncBufferedBytes, held.total)
  yield* Metric.update(vncBufferedBytesMax, held.max)
  const agents = yield* hub.list
  const byStatus = new Map<string, number>()
  for (const a of agents) byStatus.set(a.status, (byStatus.get(a.status) ?? 0) + 1)
  yield* setGaugeFamily(agentsGauge, "status", ["online", "offline", "warning", "error", "draining"], byStatus)
  yield* setGaugeFamily(sessionsGauge, "state", SESSION_STATES, yield* sessions.stateCounts)
})

/** The API routes and GET /metrics (unless METRICS_ENABLED=false). Needs the services above and an HttpRouter. */
export const layer = routes
