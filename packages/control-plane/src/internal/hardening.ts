// HTTP hardening that is not a route of its own: response headers (nosniff everywhere, HSTS when serving TLS,
// no-store on answers that carry a ticket or token), the METRICS_TOKEN check of GET /metrics, and the audit
// log's query and wire shape.
import { IntString } from "@streamspace/protocol"
import { Option, Redacted, Schema } from "effect"
import { HttpServerResponse } from "effect/http"
import type { AuditPage } from "../Store.ts"
import { bearerToken, hashesEqual, hashToken } from "./token.ts"

/** One year, the value HSTS preload lists ask for; no includeSubDomains (other hosts of the domain are not ours). */
export const HSTS = "max-age=31536000"

/** Adds nosniff to every answer and, when the control plane serves TLS itself, Strict-Transport-Security. */
export const hardeningHeaders = (tls: boolean) => (response: HttpServerResponse.HttpServerResponse) =>
  HttpServerResponse.setHeaders(response, tls ? { "x-content-type-options": "nosniff", "strict-transport-security": HSTS } : { "x-content-type-options": "nosniff" })

/** For answers that carry a secret (a VNC ticket, a token): no cache, proxy or browser, may keep them. */
export const noStore = (response: HttpServerResponse.HttpServerResponse) =>
  HttpServerResponse.setHeaders(response, { "cache-control": "no-store", pragma: "no-cache" })

/** Whether a scrape may read /metrics: always without METRICS_TOKEN, else only with it as the bearer token (constant time). */
export const metricsAuthorized = (token: Option.Option<Redacted.Redacted<string>>, authorization: string | undefined): boolean => {
  if (Option.isNone(token)) return true
  const presented = bearerToken(authorization)
  return presented !== undefined && hashesEqual(hashToken(presented), hashToken(Redacted.value(token.value)))
}

export const MAX_AUDIT_PAGE = 500

export const AuditQuery = Schema.Struct({
  limit: Schema.optional(IntString(1, MAX_AUDIT_PAGE)),
  cursor: Schema.optional(IntString(1, Number.MAX_SAFE_INTEGER))
})

export const auditJson = (page: AuditPage) => ({
  events: page.events.map((e) => ({
    id: String(e.seq),
    at: e.at.toISOString(),
    actor: e.actor,
    actor_role: e.actorRole,
    action: e.action,
    target_type: e.targetType,
    target_id: e.targetId,
    details: e.details
  })),
  next_cursor: page.nextCursor === undefined ? null : String(page.nextCursor)
})
