// The Kubernetes backend's error, and how an HTTP answer of the API server maps onto it: the status code
// and the Status body's reason, message and retryAfterSeconds (k8s-api.md §1). No client library here:
// Kubernetes.ts recognises the client's exceptions and hands their parts to `fromStatus`.
import { Schema } from "effect"

export class KubernetesError extends Schema.TaggedError<KubernetesError>()("KubernetesError", {
  reason: Schema.Literals([
    "NotFound", // 404
    "AlreadyExists", // 409 on create, and the object is not ours
    "Conflict", // 409 optimistic-lock conflict (retried)
    "Invalid", // 422 / 400: the API's validation message
    "Forbidden", // 403 (RBAC, admission)
    "QuotaExceeded", // 403 from ResourceQuota admission: the namespace is full
    "Unauthorized", // 401
    "TooManyRequests", // 429 (retried, honouring Retry-After)
    "Unavailable", // 5xx, network (retried)
    "Timeout", // no answer within the request timeout (retried)
    "Expired", // a watch's resourceVersion is too old: relist
    "Config" // the kubeconfig could not be loaded
  ]),
  message: Schema.String,
  code: Schema.optionalKey(Schema.Number),
  retryAfterSeconds: Schema.optionalKey(Schema.Number)
}) {}

export type KubernetesErrorReason = KubernetesError["reason"]

interface StatusBody {
  readonly reason?: string
  readonly message?: string
  readonly details?: { readonly retryAfterSeconds?: number }
}

const parseStatus = (body: unknown): StatusBody => {
  if (typeof body === "object" && body !== null) return body as StatusBody
  if (typeof body !== "string") return {}
  try {
    const s = JSON.parse(body) as unknown
    return typeof s === "object" && s !== null ? (s as StatusBody) : {}
  } catch {
    return {}
  }
}

export const reasonOfCode = (code: number, statusReason: string | undefined, message = ""): KubernetesErrorReason => {
  if (code === 404) return "NotFound"
  if (code === 403 && message.includes("exceeded quota")) return "QuotaExceeded"
  if (code === 409) return statusReason === "AlreadyExists" ? "AlreadyExists" : "Conflict"
  if (code === 400 || code === 422) return "Invalid"
  if (code === 403) return "Forbidden"
  if (code === 401) return "Unauthorized"
  if (code === 429) return "TooManyRequests"
  if (code === 410) return "Expired"
  if (code === 408 || code === 504) return "Timeout"
  return "Unavailable"
}

/** An error answer of the API: status code, body (a Status, as JSON text or parsed) and headers. */
export const fromStatus = (
  what: string,
  code: number,
  body: unknown,
  headers: Readonly<Record<string, string>> | undefined
): KubernetesError => {
  const status = parseStatus(body)
  const headerRetry = Number(headers?.["retry-after"])
  const retryAfter = Number.isFinite(headerRetry) && headerRetry >= 0 ? headerRetry : status.details?.retryAfterSeconds
  return new KubernetesError({
    reason: reasonOfCode(code, status.reason, status.message),
    message: `${what}: ${status.message ?? (code === 401 ? "Unauthorized" : `HTTP ${code}`)}`,
    code,
    ...(retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : {})
  })
}

/** Anything else that was thrown: a watch error carrying a status code, a fetch timeout, a network error. */
export const fromThrown = (what: string, e: unknown): KubernetesError => {
  if (e instanceof KubernetesError) return e
  const err = e as { statusCode?: number; message?: string; name?: string; cause?: { code?: string; message?: string } }
  if (typeof err?.statusCode === "number") {
    return new KubernetesError({ reason: reasonOfCode(err.statusCode, undefined), message: `${what}: ${err.message ?? `HTTP ${err.statusCode}`}`, code: err.statusCode })
  }
  if (err?.name === "TimeoutError") return new KubernetesError({ reason: "Timeout", message: `${what}: timed out` })
  const detail = err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e)
  return new KubernetesError({ reason: "Unavailable", message: `${what}: ${detail}` })
}
