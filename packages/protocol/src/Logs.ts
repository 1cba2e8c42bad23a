// The log line both halves write, one format an operator parses the same way from the control plane and the
// agent: LOG_FORMAT=text is logfmt, `ts=<ISO 8601> level=<debug|info|warn|error> msg="..." key=value ...`;
// LOG_FORMAT=json is one object per line, `{"ts", "level", "msg", ...}`. After msg come the process's own
// fields (e.g. agent_id), then the annotations in scope (session_id, command_id, tunnel_id, ...), then the
// trace and span ids of the current span, then the cause of a failure. Secrets are Redacted values, which
// print as <redacted>. No I/O here: the caller passes where lines go.
import type { LogLevel } from "effect"
import { Cause, Context, Logger, Redacted, References, Tracer } from "effect"

export type LogFormat = "json" | "text"

export interface LogEntry {
  readonly ts: Date
  /** Lower case: trace, debug, info, warn, error, fatal. */
  readonly level: string
  readonly msg: string
  /** Every other field, in the order they are written. */
  readonly fields: Readonly<Record<string, unknown>>
}

/** A value as a log field: primitives as they are, errors by message, secrets redacted, arrays element-wise. */
const render = (value: unknown): unknown =>
  value === null || typeof value === "string" || typeof value === "number" || typeof value === "boolean"
    ? value
    : Redacted.isRedacted(value)
    ? "<redacted>"
    : value instanceof Error
    ? value.message
    : Array.isArray(value)
    ? value.map(render)
    : String(value)

/** The entry for one Effect log call; `base` are the process's own fields. */
export const logEntry = (options: Logger.Options<unknown>, base: Readonly<Record<string, unknown>> = {}): LogEntry => {
  const message = Array.isArray(options.message) ? options.message.map((m) => String(render(m))).join(" ") : String(render(options.message))
  const fields: Record<string, unknown> = { ...base }
  for (const [k, v] of Object.entries(options.fiber.getRef(References.CurrentLogAnnotations))) {
    if (!(k in fields) && k !== "ts" && k !== "level" && k !== "msg") fields[k] = render(v)
  }
  const span = Context.getOrUndefined(options.fiber.context, Tracer.ParentSpan)
  if (span !== undefined) {
    fields.trace_id ??= span.traceId
    fields.span_id ??= span.spanId
  }
  if (options.cause.reasons.length > 0) fields.cause = Cause.pretty(options.cause)
  return { ts: options.date, level: (options.logLevel as LogLevel.LogLevel).toLowerCase(), msg: message, fields }
}

const logfmtValue = (v: unknown) => {
  const s = typeof v === "string" ? v : JSON.stringify(v)
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s)
}

/** One line, without the newline. */
export const formatLogEntry = (entry: LogEntry, format: LogFormat): string => {
  const all: Record<string, unknown> = { ts: entry.ts.toISOString(), level: entry.level, msg: entry.msg, ...entry.fields }
  return format === "json" ? JSON.stringify(all) : Object.entries(all).map(([k, v]) => `${k}=${logfmtValue(v)}`).join(" ")
}

/** A Logger that writes each entry as one line with `write`. */
export const lineLogger = (format: LogFormat, write: (line: string) => void, base: Readonly<Record<string, unknown>> = {}) =>
  Logger.make((options) => write(formatLogEntry(logEntry(options, base), format)))
