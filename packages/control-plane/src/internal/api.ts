// HTTP API helpers: the JSON error shape, body reading with a size limit and strict Schema decoding (unknown
// fields are errors, every message names the field), and the wire shapes of agents, sessions, templates and
// commands.
import { formatSchemaError } from "@streamspace/protocol"
import { ByteSize, Effect, Schema } from "effect"
import { HttpIncomingMessage, HttpServerRequest, HttpServerResponse } from "effect/http"
import type { AgentView } from "../AgentHub.ts"
import type { CommandRecord, HomeRecord, SessionEvent, SessionRecord, TemplateRecord } from "../Store.ts"
import { errorResponse } from "./httpError.ts"

export { errorResponse } from "./httpError.ts"

/** An answer other than success: `{"error": {"code", "message"}}` with `status`. */
export class ApiError extends Schema.TaggedError<ApiError>()("ApiError", {
  status: Schema.Number,
  code: Schema.String,
  message: Schema.String
}) {}

export const json = (body: unknown, status = 200) => HttpServerResponse.jsonUnsafe(body, { status })

/** A per-user limit refused the request: 429 `limit_exceeded`, the message naming the limit, Retry-After for a rate. */
export const limitResponse = (message: string, retryAfterSeconds: number | undefined) => {
  const response = errorResponse(429, "limit_exceeded", message)
  return retryAfterSeconds === undefined ? response : HttpServerResponse.setHeader(response, "retry-after", String(retryAfterSeconds))
}

/** The raw path of a request URL (no query). */
const rawPath = (url: string) => {
  const end = url.search(/[?#]/)
  return end === -1 ? url : url.slice(0, end)
}

const shorten = (path: string) => (path.length > 200 ? `${path.slice(0, 200)}...` : path)

/** Whether every %XX escape in the path is valid and the bytes decode as UTF-8 (what the router needs). */
const decodablePath = (path: string) => {
  try {
    decodeURIComponent(path)
    return true
  } catch {
    return false
  }
}

/**
 * The JSON error for a request the router itself turned away (no route matched, on any path): it answers those
 * with an empty 404. Under /api/v1 a path the router cannot decode (malformed percent-encoding such as `%ff` or
 * a lone `%`) is the client's mistake and gets 400; anything else is a JSON 404. Other responses pass unchanged.
 */
export const jsonRouterErrors = (request: HttpServerRequest.HttpServerRequest, response: HttpServerResponse.HttpServerResponse) => {
  if (response.status !== 404 || response.body._tag !== "Empty") return response
  const path = rawPath(request.url)
  if (path !== "/api/v1" && !path.startsWith("/api/v1/")) {
    return errorResponse(404, "not_found", `no such page ${JSON.stringify(shorten(path))} (the API is under /api/v1; its health check is GET /api/v1/health)`)
  }
  return decodablePath(path)
    ? errorResponse(404, "not_found", `no endpoint ${request.method} ${shorten(path)}`)
    : errorResponse(400, "invalid_request", `malformed percent-encoding in the path ${JSON.stringify(shorten(path))}: every % must start a valid %XX escape of UTF-8 bytes`)
}

const friendly = (text: string) => text.replaceAll("Expected no excess property", "unknown field").replaceAll("Missing key", "is required")

/** Decodes a value strictly (unknown fields rejected); the error names each field at fault. */
export const decodeStrict = <S extends Schema.Decoder<unknown>>(schema: S, value: unknown, what: string) =>
  Schema.decodeUnknownEffect(schema)(value, { onExcessProperty: "error", errors: "all" }).pipe(
    Effect.mapError((e) => new ApiError({ status: 400, code: "invalid_request", message: `invalid ${what}: ${friendly(formatSchemaError(e))}` }))
  ) as Effect.Effect<S["Type"], ApiError, never>

/** Reads the request body as JSON within `maxBytes` and decodes it strictly. */
export const readBody = <S extends Schema.Decoder<unknown>>(schema: S, maxBytes: number) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const declared = Number(request.headers["content-length"] ?? "0")
    if (declared > maxBytes) return yield* new ApiError({ status: 413, code: "body_too_large", message: `request body is over ${maxBytes} bytes` })
    const buf = yield* request.arrayBuffer.pipe(
      Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(maxBytes)),
      Effect.mapError((e) =>
        e.reason._tag === "RequestParseError" && e.reason.reason === "BodyTooLarge"
          ? new ApiError({ status: 413, code: "body_too_large", message: `request body is over ${maxBytes} bytes` })
          : new ApiError({ status: 400, code: "invalid_request", message: "request body could not be read" })
      )
    )
    const type = request.headers["content-type"] ?? ""
    if (buf.byteLength > 0 && !/^application\/(.+\+)?json\b/i.test(type)) {
      return yield* new ApiError({ status: 415, code: "unsupported_media_type", message: "request body must be application/json" })
    }
    let value: unknown
    try {
      value = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(buf))
    } catch (e) {
      return yield* new ApiError({ status: 400, code: "invalid_request", message: `request body is not valid JSON: ${(e as Error).message}` })
    }
    return yield* decodeStrict(schema, value, "request body")
  })

const iso = (d: Date | undefined) => (d === undefined ? null : d.toISOString())

export const agentJson = (a: AgentView, unknownSessions: ReadonlyArray<string>) => ({
  id: a.id,
  platform: a.platform,
  region: a.region,
  version: a.version,
  status: a.status,
  enrollment: a.enrollment,
  connected: a.connected,
  draining: a.draining,
  last_heartbeat: iso(a.lastHeartbeat),
  capacity: a.capacity,
  active_sessions: a.activeSessions,
  active_tunnels: a.activeTunnels,
  /** While connected: the socket's peer address and the fingerprint the agent logs (compare before approving). */
  remote_address: a.remoteAddress ?? null,
  fingerprint: a.fingerprint ?? null,
  /** Sessions the agent runs that the control plane has no record of (reported, never deleted). */
  unknown_sessions: unknownSessions
})

export const sessionJson = (s: SessionRecord) => ({
  id: s.id,
  user_id: s.userId,
  template: s.template,
  agent_id: s.agentId,
  region: s.region ?? null,
  state: s.state,
  reason: s.reason ?? null,
  message: s.message ?? null,
  image: s.spec.image,
  resources: s.spec.resources ?? {},
  env: s.spec.env ?? {},
  persistent_home: s.spec.persistent_home,
  create_command_id: s.createCommandId ?? null,
  delete_command_id: s.deleteCommandId ?? null,
  hibernate_command_id: s.hibernateCommandId ?? null,
  team: s.team ?? null,
  created_at: s.createdAt.toISOString(),
  updated_at: s.updatedAt.toISOString()
})

/** `by`: who made the change, `{ kind: "user" | "agent" | "system", id }` (null for rows from before it was recorded). */
export const sessionEventJson = (e: SessionEvent) => {
  const colon = e.actor?.indexOf(":") ?? -1
  return {
    state: e.state,
    reason: e.reason ?? null,
    message: e.message ?? null,
    by: e.actor === undefined ? null : colon === -1 ? { kind: e.actor, id: null } : { kind: e.actor.slice(0, colon), id: e.actor.slice(colon + 1) },
    at: e.at.toISOString()
  }
}

export const templateJson = (t: TemplateRecord) => ({
  name: t.name,
  display_name: t.displayName,
  image: t.image,
  resources: t.resources,
  env: t.env,
  vnc_port: t.vncPort,
  persistent_home: t.persistentHome,
  /** Lifecycle policy as written; null takes the control plane's default. */
  idle_timeout: t.idleTimeout ?? null,
  max_lifetime: t.maxLifetime ?? null,
  idle_action: t.idleAction ?? null,
  warn_before: t.warnBefore ?? null,
  resource_bounds: t.resourceBounds ?? null,
  warm_pool: t.warmPool,
  clipboard: t.clipboard,
  created_at: t.createdAt.toISOString(),
  updated_at: t.updatedAt.toISOString()
})

/** `expires_at`: when the retention policy deletes the home unless it is used before (null: not scheduled). */
export const homeJson = (h: HomeRecord) => ({
  id: h.id,
  agent_id: h.agentId,
  name: h.name,
  user_id: h.userId,
  size: h.size ?? null,
  in_use: h.inUse,
  created_at: h.createdAt.toISOString(),
  last_used_at: h.lastUsedAt.toISOString(),
  expires_at: iso(h.expiresAt),
  reported_at: h.reportedAt.toISOString()
})

export const commandJson = (c: CommandRecord) => ({
  id: c.id,
  agent_id: c.agentId,
  action: c.action,
  state: c.state,
  result: c.result ?? null,
  error: c.error ?? null,
  created_at: c.createdAt.toISOString(),
  sent_at: iso(c.sentAt),
  acked_at: iso(c.ackedAt),
  completed_at: iso(c.completedAt),
  failed_at: iso(c.failedAt),
  deadline: c.deadline.toISOString()
})
