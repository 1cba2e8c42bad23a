// Logging: one line per event, JSON (LOG_FORMAT=json) or logfmt text (LOG_FORMAT=text), at LOG_LEVEL and
// above. Every line carries the agent id, plus whatever the code annotated (session_id, command_id,
// tunnel_id, trace_id). Secrets are Redacted values, which print as <redacted>.
import { Cause, Effect, Layer, Logger, References } from "effect"
import type { LogLevel } from "effect"
import { AgentConfig } from "./AgentConfig.ts"

const render = (value: unknown): unknown =>
  typeof value === "string" || typeof value === "number" || typeof value === "boolean" || value === null
    ? value
    : value instanceof Error
    ? value.message
    : String(value)

const fields = (agentId: string, options: Logger.Options<unknown>): Record<string, unknown> => {
  const message = Array.isArray(options.message) ? options.message.map((m) => String(render(m))).join(" ") : String(render(options.message))
  const out: Record<string, unknown> = {
    ts: options.date.toISOString(),
    level: options.logLevel.toLowerCase(),
    msg: message,
    agent_id: agentId
  }
  for (const [k, v] of Object.entries(options.fiber.getRef(References.CurrentLogAnnotations))) {
    if (!(k in out)) out[k] = render(v)
  }
  if (options.cause.reasons.length > 0) out.cause = Cause.pretty(options.cause)
  return out
}

/** One JSON object per line. */
export const jsonLogger = (agentId: string, write: (line: string) => void = (l) => globalThis.console.log(l)) =>
  Logger.make((options) => write(JSON.stringify(fields(agentId, options))))

const logfmtValue = (v: unknown) => {
  const s = String(v)
  return /^[^\s"=]+$/.test(s) ? s : JSON.stringify(s)
}

/** logfmt: `ts=... level=info msg="..." agent_id=... key=value`. */
export const textLogger = (agentId: string, write: (line: string) => void = (l) => globalThis.console.log(l)) =>
  Logger.make((options) =>
    write(Object.entries(fields(agentId, options)).map(([k, v]) => `${k}=${logfmtValue(v)}`).join(" "))
  )

export const layerWith = (format: "json" | "text", level: LogLevel.LogLevel, agentId: string, write?: (line: string) => void) =>
  Layer.mergeAll(
    Logger.layer([format === "json" ? jsonLogger(agentId, write) : textLogger(agentId, write)]),
    Layer.succeed(References.MinimumLogLevel, level)
  )

/** The agent's logger, from LOG_FORMAT and LOG_LEVEL. */
export const layer: Layer.Layer<never, never, AgentConfig> = Layer.unwrap(
  Effect.map(Effect.service(AgentConfig), (config) => layerWith(config.logFormat, config.logLevel, config.agentId))
)
