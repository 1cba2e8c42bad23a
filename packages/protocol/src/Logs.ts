// The log line both halves write, one format an operator parses the same way from the control plane and the
// agent: LOG_FORMAT=text is logfmt, `ts=<ISO 8601> level=<debug|info|warn|error> msg="..." key=value ...`;
// LOG_FORMAT=json is one object per line, `{"ts", "level", "msg", ...}`. After msg come the process's own
// fields (e.g. agent_id), then the annotations in scope (session_id, command_id, tunnel_id, ...), then the
// trace and span ids of the current span, then the cause of a failure. Secrets are Redacted values, which
// print as <redacted>. No I/O here: the caller passes where lines go.
//
// Log storms (1,700 refused agent dials wrote 1,700 WARN lines) are cut by `throttledLineLogger`: lines that
// differ only in numbers, addresses and ids share a token bucket of `limit` lines per minute; what the bucket
// refuses is counted, and once a minute one line per such source says how many similar lines were suppressed.
import type { LogLevel } from "effect"
import { Cause, Context, Duration, Effect, Logger, Redacted, References, Tracer } from "effect"

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

// ---- repeated lines ----------------------------------------------------------------------------------

/**
 * What makes two lines "similar": the same level and the same message once numbers, IP addresses, hex and
 * base64-ish ids and quoted values are blanked. `refused a connection from 10.0.0.7:51234` and the same from
 * another address share a key.
 */
export const similarityKey = (entry: Pick<LogEntry, "level" | "msg">): string =>
  `${entry.level}|${
    entry.msg
      .replace(/"[^"]*"/g, "\"…\"")
      .replace(/\b[0-9a-f]{0,4}(:[0-9a-f]{0,4}){2,7}\b/gi, "#") // IPv6
      .replace(/\b(?=[\w-]*\d)[\w-]{6,}\b/g, "#") // ids with digits (s-1a2b3c, UUIDs, tokens)
      .replace(/\d+/g, "#")
  }`

export interface LogThrottleOptions {
  /** Lines per similarity key per minute (also the burst); 0 turns throttling off. */
  readonly perMinute: number
  /** Most keys tracked at once; beyond it the idlest are forgotten (their counts are reported first). */
  readonly maxKeys?: number
}

interface Bucket {
  tokens: number
  lastMs: number
  suppressed: number
  /** The last suppressed entry, shown in the summary. */
  sample: LogEntry | undefined
}

/** The bookkeeping of throttledLineLogger, exposed for tests: `admit` per line, `summaries` once a minute. */
export const makeLogThrottle = (options: LogThrottleOptions) => {
  const buckets = new Map<string, Bucket>()
  const maxKeys = options.maxKeys ?? 10_000
  const perMs = options.perMinute / 60_000
  const summaryOf = (b: Bucket, ts: Date): LogEntry => ({
    ts,
    level: b.sample!.level,
    msg: `suppressed ${b.suppressed} similar line${b.suppressed === 1 ? "" : "s"} in the last minute, the last: ${b.sample!.msg}`,
    fields: { ...b.sample!.fields, suppressed: b.suppressed }
  })
  /** Whether the line may be written now; when not, it is counted. Lines of an evicted key come back as a summary. */
  const admit = (entry: LogEntry): { readonly write: boolean; readonly evicted: ReadonlyArray<LogEntry> } => {
    if (options.perMinute <= 0) return { write: true, evicted: [] }
    const now = entry.ts.getTime()
    const key = similarityKey(entry)
    let bucket = buckets.get(key)
    const evicted: Array<LogEntry> = []
    if (bucket === undefined) {
      if (buckets.size >= maxKeys) {
        const [oldestKey, oldest] = buckets.entries().next().value!
        buckets.delete(oldestKey)
        if (oldest.suppressed > 0) evicted.push(summaryOf(oldest, entry.ts))
      }
      bucket = { tokens: options.perMinute, lastMs: now, suppressed: 0, sample: undefined }
    } else {
      buckets.delete(key) // re-inserted below: the map's order is least recently used first
      bucket.tokens = Math.min(options.perMinute, bucket.tokens + Math.max(0, now - bucket.lastMs) * perMs)
      bucket.lastMs = now
    }
    buckets.set(key, bucket)
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return { write: true, evicted }
    }
    bucket.suppressed += 1
    bucket.sample = entry
    return { write: false, evicted }
  }
  /** One summary per key that suppressed lines since the last call; forgets keys whose bucket is full again. */
  const summaries = (now: Date): ReadonlyArray<LogEntry> => {
    const out: Array<LogEntry> = []
    for (const [key, b] of buckets) {
      if (b.suppressed > 0) {
        out.push(summaryOf(b, now))
        b.suppressed = 0
        b.sample = undefined
      } else if (b.tokens + Math.max(0, now.getTime() - b.lastMs) * perMs >= options.perMinute) {
        buckets.delete(key)
      }
    }
    return out
  }
  return { admit, summaries, size: () => buckets.size }
}

/** How often the suppressed-lines summaries are written. */
export const LOG_SUMMARY_INTERVAL = Duration.minutes(1)

/**
 * lineLogger with repeated lines limited per similarity key (see makeLogThrottle) and, every
 * LOG_SUMMARY_INTERVAL, a "suppressed N similar lines" line per key that dropped any. The summary fiber lives in
 * the layer's scope; time comes from the Clock (the log entries' dates), so TestClock drives it.
 */
export const throttledLineLogger = (
  format: LogFormat,
  write: (line: string) => void,
  base: Readonly<Record<string, unknown>>,
  options: LogThrottleOptions
) =>
  Effect.gen(function*() {
    if (options.perMinute <= 0) return lineLogger(format, write, base)
    const throttle = makeLogThrottle(options)
    const emit = (entry: LogEntry) => write(formatLogEntry(entry, format))
    yield* Effect.sleep(LOG_SUMMARY_INTERVAL).pipe(
      Effect.andThen(Effect.clockWith((clock) => Effect.sync(() => throttle.summaries(new Date(clock.currentTimeMillisUnsafe())).forEach(emit)))),
      Effect.forever,
      Effect.forkScoped
    )
    return Logger.make((opts) => {
      const entry = logEntry(opts, base)
      const { evicted, write: ok } = throttle.admit(entry)
      evicted.forEach(emit)
      if (ok) emit(entry)
    })
  })
