// ControlPlaneConfig: every environment variable of the control plane, parsed and validated once at start.
import {
  BooleanString,
  DEFAULT_LINK_WINDOW_BYTES,
  DurationString,
  IntString,
  parseDuration,
  LogFormatString,
  LogLevelString,
  MAX_LINK_WINDOW_BYTES,
  MIN_LINK_WINDOW_BYTES,
  PortString,
  secretSetting,
  setting,
  SettingError
} from "@streamspace/protocol"
import { ConfigProvider, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { type DatabaseSettings, readDatabaseSettings } from "./Database.ts"

export interface ControlPlaneConfigShape {
  readonly host: string
  readonly port: number
  /** Base URL users reach the control plane at (for printed links); derived from host and port when unset. */
  readonly publicUrl: string | undefined
  readonly tlsCertFile: string | undefined
  readonly tlsKeyFile: string | undefined
  /** DATABASE_URL (a real PostgreSQL), else the embedded PGlite in DATA_DIR or, with DATABASE_IN_MEMORY, in memory. */
  readonly database: DatabaseSettings
  /** Lets a new agent id register as pending. Unset: no enrolment (only agents with credentials connect). */
  readonly agentBootstrapToken: Option.Option<Redacted.Redacted<string>>
  /** HS256 secret for user JWTs. */
  readonly jwtSecret: Option.Option<Redacted.Redacted<string>>
  /** JWKS URL for user JWTs signed by an identity provider (RS256/ES256). */
  readonly jwtJwksUrl: string | undefined
  readonly jwtIssuer: string | undefined
  readonly jwtAudience: string | undefined
  /** Development mode: mint and print a local admin token at start. Never in production. */
  readonly devMode: boolean
  /** How often agents are expected to heartbeat. */
  readonly heartbeatInterval: Duration.Duration
  /** An agent is offline after this many missed heartbeats. */
  readonly heartbeatMissedLimit: number
  readonly commandTimeout: Duration.Duration
  /** How long a rotated-out agent credential keeps working. */
  readonly credentialRotationGrace: Duration.Duration
  /** Lifetime of a single-use VNC ticket. */
  readonly vncTicketTtl: Duration.Duration
  /** Credit window per VNC tunnel, in bytes. */
  readonly vncTunnelWindow: number
  /** Link window announced to agents in welcome: tunnel bytes an agent may have unread on its socket. */
  readonly agentLinkWindow: number
  /** Transport ping period on agent and viewer sockets. */
  readonly pingInterval: Duration.Duration
  readonly logLevel: "Trace" | "Debug" | "Info" | "Warn" | "Error" | "Fatal" | "None"
  readonly logFormat: "json" | "text"
  readonly metricsEnabled: boolean
  /** Allowed clock skew when checking a user JWT's exp and nbf. */
  readonly jwtClockTolerance: Duration.Duration
  /** Lifetime of the admin token DEV_MODE mints at start. */
  readonly devTokenTtl: Duration.Duration
  /** Largest API request body accepted, in bytes. */
  readonly maxBodyBytes: number
  /** OTLP/HTTP base URL (e.g. http://collector:4318); traces, metrics and logs go there when set. */
  readonly otelEndpoint: string | undefined
  readonly otelServiceName: string
  /** Time a client has to send its request headers (slow-header clients are cut off). */
  readonly httpHeadersTimeout: Duration.Duration
  /** Time a client has to send a whole request, body included (not WebSockets once upgraded). */
  readonly httpRequestTimeout: Duration.Duration
  /** Most open connections from one client address; 0 = no limit (behind a proxy every client shares one address). */
  readonly maxConnectionsPerAddress: number
  /** A home volume unused this long is deleted (after HOME_RETENTION_WARNING with `expires_at` shown); undefined: kept. */
  readonly homeRetention: Duration.Duration | undefined
  /** How long a home's coming deletion is shown (`expires_at`) before it happens. */
  readonly homeRetentionWarning: Duration.Duration
  /** How often each agent's home volumes are listed and the retention policy applied. */
  readonly homeScanInterval: Duration.Duration
}

const blankToUndefined = (s: string): string | undefined => (s.trim() === "" ? undefined : s)

export const readControlPlaneConfig: Effect.Effect<ControlPlaneConfigShape, SettingError> = Effect.gen(function*() {
  const duration = (name: string, def: string) => setting(name, DurationString, { default: def, expected: "a duration such as 500ms, 30s, 5m or 1h" })
  const text = (name: string, def: string) => setting(name, Schema.String, { default: def, expected: "text" })
  const bool = (name: string, def: string) => setting(name, BooleanString, { default: def, expected: "true or false" })
  const url = (name: string) =>
    setting(name, Schema.String, { default: "", expected: "a URL" }).pipe(
      Effect.flatMap((s) =>
        s === "" || URL.canParse(s)
          ? Effect.succeed(blankToUndefined(s))
          : Effect.fail(new SettingError({ variable: name, message: `${name}=${JSON.stringify(s)} is invalid: expected a URL such as https://streamspace.example.com` }))
      )
    )
  const config: ControlPlaneConfigShape = {
    host: yield* text("HOST", "0.0.0.0"),
    port: yield* setting("PORT", IntString(0, 65535), { default: "8000", expected: "a TCP port from 1 to 65535 (0 picks a free one)" }),
    publicUrl: yield* url("PUBLIC_URL"),
    tlsCertFile: blankToUndefined(yield* text("TLS_CERT_FILE", "")),
    tlsKeyFile: blankToUndefined(yield* text("TLS_KEY_FILE", "")),
    database: yield* readDatabaseSettings,
    agentBootstrapToken: yield* secretSetting("AGENT_BOOTSTRAP_TOKEN"),
    jwtSecret: yield* secretSetting("JWT_SECRET"),
    jwtJwksUrl: yield* url("JWT_JWKS_URL"),
    jwtIssuer: blankToUndefined(yield* text("JWT_ISSUER", "")),
    jwtAudience: blankToUndefined(yield* text("JWT_AUDIENCE", "")),
    devMode: yield* bool("DEV_MODE", "false"),
    heartbeatInterval: yield* duration("HEARTBEAT_INTERVAL", "30s"),
    heartbeatMissedLimit: yield* setting("HEARTBEAT_MISSED_LIMIT", IntString(1, 100), { default: "3", expected: "a whole number from 1 to 100" }),
    commandTimeout: yield* duration("COMMAND_TIMEOUT", "5m"),
    credentialRotationGrace: yield* duration("CREDENTIAL_ROTATION_GRACE", "1h"),
    vncTicketTtl: yield* duration("VNC_TICKET_TTL", "60s"),
    vncTunnelWindow: yield* setting("VNC_TUNNEL_WINDOW", IntString(64 * 1024, 16 * 1024 * 1024), {
      default: String(1024 * 1024),
      expected: "bytes from 65536 to 16777216"
    }),
    agentLinkWindow: yield* setting("AGENT_LINK_WINDOW", IntString(MIN_LINK_WINDOW_BYTES, MAX_LINK_WINDOW_BYTES), {
      default: String(DEFAULT_LINK_WINDOW_BYTES),
      expected: `bytes from ${MIN_LINK_WINDOW_BYTES} to ${MAX_LINK_WINDOW_BYTES}`
    }),
    pingInterval: yield* duration("PING_INTERVAL", "20s"),
    logLevel: yield* setting("LOG_LEVEL", LogLevelString, { default: "info", expected: "debug, info, warn or error" }),
    logFormat: yield* setting("LOG_FORMAT", LogFormatString, { default: "json", expected: "json or text" }),
    metricsEnabled: yield* bool("METRICS_ENABLED", "true"),
    jwtClockTolerance: yield* duration("JWT_CLOCK_TOLERANCE", "30s"),
    devTokenTtl: yield* duration("DEV_TOKEN_TTL", "24h"),
    maxBodyBytes: yield* setting("MAX_BODY_BYTES", IntString(1024, 64 * 1024 * 1024), { default: String(1024 * 1024), expected: "bytes from 1024 to 67108864" }),
    otelEndpoint: yield* url("OTEL_EXPORTER_OTLP_ENDPOINT"),
    otelServiceName: yield* text("OTEL_SERVICE_NAME", "streamspace-control-plane"),
    httpHeadersTimeout: yield* duration("HTTP_HEADERS_TIMEOUT", "10s"),
    httpRequestTimeout: yield* duration("HTTP_REQUEST_TIMEOUT", "30s"),
    maxConnectionsPerAddress: yield* setting("MAX_CONNECTIONS_PER_ADDRESS", IntString(0, 1_000_000), {
      default: "512",
      expected: "a whole number (0 = no limit)"
    }),
    homeRetention: yield* Effect.flatMap(text("HOME_RETENTION", "off"), (s) => {
      if (s.trim() === "" || s.trim() === "off") return Effect.succeed(undefined)
      const d = parseDuration(s.trim())
      return d !== undefined && Duration.toMillis(d) > 0
        ? Effect.succeed(d)
        : Effect.fail(new SettingError({ variable: "HOME_RETENTION", message: `HOME_RETENTION=${JSON.stringify(s)} is invalid: expected off or a duration such as 720h` }))
    }),
    homeRetentionWarning: yield* duration("HOME_RETENTION_WARNING", "24h"),
    homeScanInterval: yield* duration("HOME_SCAN_INTERVAL", "5m")
  }
  if ((config.tlsCertFile === undefined) !== (config.tlsKeyFile === undefined)) {
    return yield* new SettingError({ variable: "TLS_CERT_FILE", message: "TLS_CERT_FILE and TLS_KEY_FILE must be set together" })
  }
  if (Option.isNone(config.jwtSecret) && config.jwtJwksUrl === undefined && !config.devMode) {
    return yield* new SettingError({ variable: "JWT_SECRET", message: "JWT_SECRET or JWT_JWKS_URL is required (or DEV_MODE=true for a local install)" })
  }
  return config
})

export class ControlPlaneConfig extends Context.Service<ControlPlaneConfig, ControlPlaneConfigShape>()("control-plane/ControlPlaneConfig") {
  static readonly layerFromEnv = Layer.effect(ControlPlaneConfig, readControlPlaneConfig)
  static readonly layerFromRecord = (env: Record<string, string>) =>
    ControlPlaneConfig.layerFromEnv.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))
}
