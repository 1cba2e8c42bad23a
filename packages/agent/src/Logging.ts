// Logging: one line per event at LOG_LEVEL and above, in the format both halves share (@streamspace/protocol
// Logs: logfmt `ts= level= msg= key=value` for LOG_FORMAT=text, one JSON object per line for json). Every line
// carries the agent id, plus whatever the code annotated (session_id, command_id, tunnel_id) and the trace of
// the current span. Secrets are Redacted values, which print as <redacted>.
import { lineLogger, throttledLineLogger } from "@streamspace/protocol"
import { Effect, Layer, Logger, References } from "effect"
import type { LogLevel } from "effect"
import { AgentConfig } from "./AgentConfig.ts"

const console = (line: string) => globalThis.console.log(line)

/** One JSON object per line. */
export const jsonLogger = (agentId: string, write: (line: string) => void = console) => lineLogger("json", write, { agent_id: agentId })

/** logfmt: `ts=... level=info msg="..." agent_id=... key=value`. */
export const textLogger = (agentId: string, write: (line: string) => void = console) => lineLogger("text", write, { agent_id: agentId })

export const layerWith = (format: "json" | "text", level: LogLevel.LogLevel, agentId: string, write?: (line: string) => void) =>
  Layer.mergeAll(
    Logger.layer([format === "json" ? jsonLogger(agentId, write) : textLogger(agentId, write)]),
    Layer.succeed(References.MinimumLogLevel, level)
  )

/** The agent's logger, from LOG_FORMAT, LOG_LEVEL and LOG_REPEAT_LIMIT (repeated lines are summarised). */
export const layer: Layer.Layer<never, never, AgentConfig> = Layer.unwrap(
  Effect.map(Effect.service(AgentConfig), (config) =>
    Layer.mergeAll(
      Logger.layer([throttledLineLogger(config.logFormat, console, { agent_id: config.agentId }, { perMinute: config.logRepeatLimit })]),
      Layer.succeed(References.MinimumLogLevel, config.logLevel)
    ))
)
