// Status bodies exactly as the real apiserver writes them (k8s.io/apimachinery/pkg/api/errors).
export interface StatusCause {
  readonly reason: string
  readonly message: string
  readonly field: string
}

export interface StatusBody {
  kind: "Status"
  apiVersion: "v1"
  metadata: Record<string, never>
  status: "Failure" | "Success"
  message?: string
  reason?: string
  details?: { name?: string; group?: string; kind?: string; uid?: string; causes?: Array<StatusCause>; retryAfterSeconds?: number }
  code?: number
}

/** A failure the HTTP layer turns into a Status response. */
export class ApiError extends Error {
  readonly status: StatusBody
  readonly headers: Record<string, string>
  constructor(status: StatusBody, headers: Record<string, string> = {}) {
    super(status.message ?? status.reason ?? "error")
    this.status = status
    this.headers = headers
  }
}

export interface GroupResource {
  readonly group: string
  readonly resource: string
}

const details = (gr: GroupResource, name: string | undefined, extra: Partial<NonNullable<StatusBody["details"]>> = {}) => {
  const d: NonNullable<StatusBody["details"]> = {}
  if (name !== undefined && name !== "") d.name = name
  if (gr.group !== "") d.group = gr.group
  d.kind = gr.resource
  return { ...d, ...extra }
}

/** "pods" for the core group, "roles.rbac.authorization.k8s.io" otherwise. */
export const qualified = (gr: GroupResource) => gr.group === "" ? gr.resource : `${gr.resource}.${gr.group}`

export const failure = (code: number, reason: string, message: string, d?: StatusBody["details"]): StatusBody => {
  const s: StatusBody = { kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message, reason, code }
  if (d !== undefined) s.details = d
  return s
}

export const notFound = (gr: GroupResource, name: string) =>
  new ApiError(failure(404, "NotFound", `${qualified(gr)} "${name}" not found`, details(gr, name)))

export const alreadyExists = (gr: GroupResource, name: string, generated = false) =>
  new ApiError(failure(
    409,
    "AlreadyExists",
    `${qualified(gr)} "${name}" already exists${generated ? ", the server was not able to generate a unique name for the object" : ""}`,
    details(gr, name)
  ))

export const OptimisticLockErrorMsg = "the object has been modified; please apply your changes to the latest version and try again"

export const conflict = (gr: GroupResource, name: string, why: string = OptimisticLockErrorMsg) =>
  new ApiError(failure(409, "Conflict", `Operation cannot be fulfilled on ${qualified(gr)} "${name}": ${why}`, details(gr, name)))

const htmlEscape = (s: string) => s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")

export const forbidden = (
  gr: GroupResource,
  name: string | undefined,
  user: string,
  verb: string,
  resource: string,
  namespace: string | undefined
) => {
  const where = namespace !== undefined && namespace !== "" ? `in the namespace "${namespace}"` : "at the cluster scope"
  const subject = name !== undefined && name !== "" ? `${qualified(gr)} "${name}"` : qualified(gr)
  const message = htmlEscape(
    `${subject} is forbidden: User "${user}" cannot ${verb} resource "${resource}" in API group "${gr.group}" ${where}`
  )
  return new ApiError(failure(403, "Forbidden", message, details(gr, name)))
}

export const unauthorized = () => new ApiError(failure(401, "Unauthorized", "Unauthorized"))

export const badRequest = (message: string) => new ApiError(failure(400, "BadRequest", message))

export const expired = (message: string) => new ApiError(failure(410, "Expired", message))

export const internalError = (message: string) => new ApiError(failure(500, "InternalError", message))

export const unsupportedMediaType = (message: string) => new ApiError(failure(415, "UnsupportedMediaType", message))

export const methodNotAllowed = () =>
  new ApiError(failure(405, "MethodNotAllowed", "the server does not allow this method on the requested resource"))

/** A field error in the apiserver's `field.Error` shape. */
export interface FieldError {
  readonly type: "Required value" | "Invalid value" | "Unsupported value" | "Duplicate value" | "Forbidden" | "Too long" | "Not found"
  readonly field: string
  readonly value?: unknown
  readonly detail?: string
}

const causeReason: Record<FieldError["type"], string> = {
  "Required value": "FieldValueRequired",
  "Invalid value": "FieldValueInvalid",
  "Unsupported value": "FieldValueNotSupported",
  "Duplicate value": "FieldValueDuplicate",
  "Forbidden": "FieldValueForbidden",
  "Too long": "FieldValueTooLong",
  "Not found": "FieldValueNotFound"
}

const goValue = (v: unknown): string => {
  if (typeof v === "string") return JSON.stringify(v)
  if (typeof v === "number" || typeof v === "boolean") return String(v)
  return JSON.stringify(v)
}

/** ErrorBody(): "<Type>[: <value>][: <detail>]". Required/Forbidden/TooLong omit the value. */
const errorBody = (e: FieldError) => {
  let s: string = e.type
  const showValue = e.type !== "Required value" && e.type !== "Forbidden" && e.type !== "Too long" && e.value !== undefined
  if (showValue) s += `: ${goValue(e.value)}`
  if (e.detail !== undefined && e.detail !== "") s += `: ${e.detail}`
  return s
}

export const fieldErrorString = (e: FieldError) => `${e.field}: ${errorBody(e)}`

export const invalid = (kind: string, group: string, name: string, errors: ReadonlyArray<FieldError>) => {
  const seen = new Set<string>()
  const msgs: Array<string> = []
  for (const e of errors) {
    const s = fieldErrorString(e)
    if (!seen.has(s)) {
      seen.add(s)
      msgs.push(s)
    }
  }
  const agg = msgs.length === 1 ? msgs[0]! : `[${msgs.join(", ")}]`
  const d: NonNullable<StatusBody["details"]> = {}
  if (name !== "") d.name = name
  if (group !== "") d.group = group
  d.kind = kind
  d.causes = errors.map((e) => ({ reason: causeReason[e.type], message: errorBody(e), field: e.field }))
  return new ApiError(failure(422, "Invalid", `${kind} "${name}" is invalid: ${agg}`, d))
}

export const success = (gr: GroupResource, name: string, uid: string): StatusBody => ({
  kind: "Status",
  apiVersion: "v1",
  metadata: {},
  status: "Success",
  details: { ...details(gr, name), uid }
})
