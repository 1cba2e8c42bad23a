// Api: the JSON HTTP API under /api/v1 (health, agents, templates, sessions, commands, VNC tickets) and
// GET /metrics. Every route but health and metrics needs a user JWT (Auth); changing agents and templates
// needs the admin role; users see and touch only their own sessions. Bodies are read within MAX_BODY_BYTES and
// decoded strictly (unknown fields are errors); every error is `{"error": {"code", "message"}}` with the
// status that fits, and bad input names the field.
import { AgentId, CommandId, TemplateName } from "@streamspace/protocol"
import { Cause, Effect, Metric, Option, Schema } from "effect"
import { HttpEffect, HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { AgentHub, type AgentHubError, type AgentView } from "./AgentHub.ts"
import { Auth, type AuthError, requireAdmin, type User } from "./Auth.ts"
import { CommandDispatcher, type CommandDispatcherError } from "./CommandDispatcher.ts"
import { Homes, type HomesError } from "./Homes.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { agentJson, ApiError, commandJson, decodeStrict, errorResponse, homeJson, json, jsonRouterErrors, readBody, sessionEventJson, sessionJson, templateJson } from "./internal/api.ts"
import { agentsGauge, metricsHandler, registerMetrics, sessionsGauge, setGaugeFamily, vncBufferedBytes, vncBufferedBytesMax } from "./Observability.ts"
import { CreateSessionRequest, CreateTemplateRequest, PatchTemplateRequest, SESSION_STATES, Sessions, type SessionsError } from "./Sessions.ts"
import { VncProxy, type VncProxyError } from "./VncProxy.ts"

export const PatchAgentBody = Schema.Struct({ status: Schema.Literals(["online", "offline"]) })

const AgentPath = Schema.Struct({ id: AgentId })
const NamePath = Schema.Struct({ name: TemplateName })
const IdPath = Schema.Struct({ id: Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: "id must not be empty" }), Schema.isMaxLength(128, { message: "id must be at most 128 characters" }))) })
const CommandPath = Schema.Struct({ id: CommandId })

type Failure = ApiError | AuthError | SessionsError | AgentHubError | CommandDispatcherError | VncProxyError | HomesError

const toResponse = (e: Failure): HttpServerResponse.HttpServerResponse => {
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
          return errorResponse(409, "conflict", e.message)
        case "NoEligibleAgent":
          return errorResponse(503, "no_eligible_agent", e.message)
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
      return e.reason === "NotFound" ? errorResponse(404, "not_found", e.message) : errorResponse(401, "unauthorized", e.message)
  }
  return errorResponse(500, "internal", "unexpected error")
}

/** Answers errors as JSON; a defect is logged and answered 500 without details. */
const answer = <R>(name: string, effect: Effect.Effect<HttpServerResponse.HttpServerResponse, Failure, R>) =>
  effect.pipe(
    Effect.catch((e: Failure) => Effect.succeed(toResponse(e))),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.logError(`${name} failed`, cause).pipe(Effect.as(errorResponse(500, "internal", "internal error; see the control plane log")))
    ),
    Effect.withSpan(name)
  )

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const config = yield* ControlPlaneConfig
  const auth = yield* Auth
  const hub = yield* AgentHub
  const sessions = yield* Sessions
  const dispatcher = yield* CommandDispatcher
  const proxy = yield* VncProxy
  const homes = yield* Homes

  const user: Effect.Effect<User, AuthError, HttpServerRequest.HttpServerRequest> = Effect.flatMap(
    HttpServerRequest.HttpServerRequest,
    (request) => auth.authenticate(request.headers["authorization"])
  )
  const admin = Effect.tap(user, requireAdmin)
  const path = <S extends Schema.Decoder<unknown>>(schema: S) => Effect.flatMap(HttpRouter.params, (p) => decodeStrict(schema, p, "path"))
  const body = <S extends Schema.Decoder<unknown>>(schema: S) => readBody(schema, config.maxBodyBytes)

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

  yield* router.add("GET", `${p}/health`, answer("Api.health", Effect.gen(function*() {
    const agents = yield* hub.list
    return json({ status: "ok", agents_online: agents.filter((a) => a.connected && a.status === "online").length })
  })))

  // ---- agents
  yield* router.add("GET", `${p}/agents`, answer("Api.listAgents", Effect.gen(function*() {
    yield* user
    const agents = yield* hub.list
    return json({ agents: [...agents].sort((a, b) => (a.id < b.id ? -1 : 1)).map(agentView) })
  })))
  yield* router.add("GET", `${p}/agents/:id`, answer("Api.getAgent", Effect.gen(function*() {
    yield* user
    const { id } = yield* path(AgentPath)
    return json(agentView(yield* getAgent(id)))
  })))
  yield* router.add("PATCH", `${p}/agents/:id`, answer("Api.patchAgent", Effect.gen(function*() {
    yield* admin
    const { id } = yield* path(AgentPath)
    const { status } = yield* body(PatchAgentBody)
    yield* getAgent(id)
    const view = yield* hub.setDraining(id, status === "offline")
    yield* Effect.logInfo(status === "offline" ? "agent drained" : "agent undrained").pipe(Effect.annotateLogs({ agent_id: id }))
    return json(agentView(view))
  })))
  for (const action of ["approve", "reject", "rotate", "revoke"] as const) {
    yield* router.add("POST", `${p}/agents/:id/${action}`, answer(`Api.${action}Agent`, Effect.gen(function*() {
      yield* admin
      const { id } = yield* path(AgentPath)
      return json(agentView(yield* hub[action](id)))
    })))
  }

  // ---- templates
  yield* router.add("GET", `${p}/templates`, answer("Api.listTemplates", Effect.gen(function*() {
    yield* user
    return json({ templates: (yield* sessions.listTemplates).map(templateJson) })
  })))
  yield* router.add("GET", `${p}/templates/:name`, answer("Api.getTemplate", Effect.gen(function*() {
    yield* user
    const { name } = yield* path(NamePath)
    return json(templateJson(yield* sessions.getTemplate(name)))
  })))
  yield* router.add("POST", `${p}/templates`, answer("Api.createTemplate", Effect.gen(function*() {
    yield* admin
    const t = yield* body(CreateTemplateRequest)
    return json(templateJson(yield* sessions.createTemplate(t)), 201)
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
    return json(sessionJson(yield* sessions.create(u, request)), 201)
  })))
  yield* router.add("GET", `${p}/sessions`, answer("Api.listSessions", Effect.gen(function*() {
    const u = yield* user
    return json({ sessions: (yield* sessions.list(u)).map(sessionJson) })
  })))
  yield* router.add("GET", `${p}/sessions/:id`, answer("Api.getSession", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    return json(sessionJson(yield* sessions.get(u, id)))
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
    return json(sessionJson(s), s.state === "terminated" ? 200 : 202)
  })))
  yield* router.add("POST", `${p}/sessions/:id/vnc-ticket`, answer("Api.vncTicket", Effect.gen(function*() {
    const u = yield* user
    const { id } = yield* path(IdPath)
    const t = yield* proxy.issueTicket(u, id)
    return json({
      ticket: t.ticket,
      session_id: t.sessionId,
      expires_at: t.expiresAt.toISOString(),
      url: `${p}/sessions/${t.sessionId}/vnc?ticket=${t.ticket}`
    }, 201)
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
    if (u.role !== "admin") {
      const mine = (yield* sessions.list(u)).some((s) => s.createCommandId === id || s.deleteCommandId === id)
      if (!mine) return yield* new ApiError({ status: 404, code: "not_found", message: `no command "${id}"` })
    }
    return json(commandJson(yield* dispatcher.get(id)))
  })))

  if (config.metricsEnabled) {
    yield* registerMetrics
    yield* router.add("GET", "/metrics", metricsHandler(refreshGauges.pipe(
      Effect.provideService(AgentHub, hub),
      Effect.provideService(Sessions, sessions),
      Effect.provideService(VncProxy, proxy)
    )))
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
