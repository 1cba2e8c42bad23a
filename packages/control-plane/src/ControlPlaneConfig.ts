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
  parseQuantity,
  Quantity,
  readTelemetrySettings,
  secretSetting,
  setting,
  SettingError,
  type TelemetrySettings
} from "@streamspace/protocol"
import { ConfigProvider, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { type DatabaseSettings, readDatabaseSettings } from "./Database.ts"
import { readRecordingSettings, type RecordingSettings } from "./internal/recording/settings.ts"
import { type LoginSettings, readLoginSettings } from "./internal/auth/loginSettings.ts"

export interface ControlPlaneConfigShape {
  readonly host: string
  readonly port: number
  /** Base URL users reach the control plane at (for printed links); derived from host and port when unset. */
  readonly publicUrl: string | undefined
  readonly tlsCertFile: string | undefined
  readonly tlsKeyFile: string | undefined
  /** DATABASE_URL (a real PostgreSQL), else the embedded PGlite in DATA_DIR or, with DATABASE_IN_MEMORY, in memory. */
  readonly database: DatabaseSettings
  /** With DATABASE_URL: how the other replicas reach this one (PEER_URL); unset: `http://HOST:PORT` with the bound port. */
  readonly peerUrl: string | undefined
  /** With DATABASE_URL: how long a replica's lease lasts without renewal (REPLICA_LEASE); renewed every third of it. */
  readonly replicaLease: Duration.Duration
  /** Lets a new agent id register as pending. Unset: no enrolment (only agents with credentials connect). */
  readonly agentBootstrapToken: Option.Option<Redacted.Redacted<string>>
  /** HS256 secret for user JWTs. */
  readonly jwtSecret: Option.Option<Redacted.Redacted<string>>
  /** JWKS URL for user JWTs signed by an identity provider (RS256/ES256). */
  readonly jwtJwksUrl: string | undefined
  readonly jwtIssuer: string | undefined
  readonly jwtAudience: string | undefined
  /** OpenID Connect login (OIDC_*) and browser login sessions (LOGIN_*). */
  readonly login: LoginSettings
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
  /** How long a viewer waits for the agent to open its tunnel before it is closed (4502, retryable). */
  readonly vncConnectTimeout: Duration.Duration
  /** Credit window per VNC tunnel, in bytes. */
  readonly vncTunnelWindow: number
  /** Link window announced to agents in welcome: tunnel bytes an agent may have unread on its socket. */
  readonly agentLinkWindow: number
  /** Transport ping period on agent and viewer sockets. */
  readonly pingInterval: Duration.Duration
  readonly logLevel: "Trace" | "Debug" | "Info" | "Warn" | "Error" | "Fatal" | "None"
  readonly logFormat: "json" | "text"
  /** Similar log lines (same text but for numbers, addresses, ids) written per minute before the rest are counted and summarised; 0 = no limit. */
  readonly logRepeatLimit: number
  readonly metricsEnabled: boolean
  /** Allowed clock skew when checking a user JWT's exp and nbf. */
  readonly jwtClockTolerance: Duration.Duration
  /** Lifetime of the admin token DEV_MODE mints at start. */
  readonly devTokenTtl: Duration.Duration
  /** Longest lifetime a user JWT may have (exp - iat, or exp - now without iat); longer ones are refused. */
  readonly jwtMaxTtl: Duration.Duration
  /** When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`; unset, /metrics is open. */
  readonly metricsToken: Option.Option<Redacted.Redacted<string>>
  /** Largest API request body accepted, in bytes. */
  readonly maxBodyBytes: number
  /** OTLP/HTTP base URL (e.g. http://collector:4318); traces, metrics and logs go there when set. */
  readonly otelEndpoint: string | undefined
  readonly otelServiceName: string
  /** Every OTEL_* variable (endpoints, headers, protocol, resource, sampler, OTEL_SDK_DISABLED). */
  readonly telemetry: TelemetrySettings
  /** Time a client has to send its request headers (slow-header clients are cut off). */
  readonly httpHeadersTimeout: Duration.Duration
  /** Time a client has to send a whole request, body included (not WebSockets once upgraded). */
  readonly httpRequestTimeout: Duration.Duration
  /** Most open connections from one client address; 0 = no limit (behind a proxy every client shares one address). */
  readonly maxConnectionsPerAddress: number
  /** Default idle limit of sessions (templates may set their own); 0 = none. */
  readonly sessionIdleTimeout: Duration.Duration
  /** Default hard lifetime limit of sessions from creation; 0 = none. */
  readonly sessionMaxLifetime: Duration.Duration
  /** Default action at the idle limit; undefined: hibernate with a persistent home, else delete. */
  readonly sessionIdleAction: "hibernate" | "delete" | undefined
  /** Default warning time before any automatic action. */
  readonly sessionWarnBefore: Duration.Duration
  /** How often the lifecycle policy looks at the running sessions (warnings and actions happen on these passes). */
  readonly sessionPolicyInterval: Duration.Duration
  /** Per-user limits (users with role `user`; admins are not limited). 0 = no limit. */
  readonly userLimits: UserLimits
  /** Bounds on the CPU and memory a session may request, unless its template sets its own. */
  readonly sessionResourceBounds: { readonly min: { readonly cpu: string; readonly memory: string }; readonly max: { readonly cpu: string; readonly memory: string } }
  /** A home volume unused this long is deleted (after HOME_RETENTION_WARNING with `expires_at` shown); undefined: kept. */
  readonly homeRetention: Duration.Duration | undefined
  /** How long a home's coming deletion is shown (`expires_at`) before it happens. */
  readonly homeRetentionWarning: Duration.Duration
  /** How often each agent's home volumes are listed and the retention policy applied. */
  readonly homeScanInterval: Duration.Duration
  /** RECORDINGS_DIR, RECORDING_MAX_BYTES, RECORDING_RETENTION, RECORDING_KEYFRAME_INTERVAL, RECORDING_SWEEP_INTERVAL. */
  readonly recording: RecordingSettings
  /**
   * CLUSTER_SECRET: the replica-to-replica credential (peer tokens, VNC tickets any replica can check). Required
   * with DATABASE_URL (a PostgreSQL-backed control plane may run as several replicas, if only during a rolling
   * update); unset on the embedded database, which is one replica: tickets are then signed with a per-process key.
   */
  readonly clusterSecret: Option.Option<Redacted.Redacted<string>>
}

/** Shared secrets shorter than this are refused at start: a short HS256 key or bootstrap token can be guessed offline. */
export const MIN_SECRET_BYTES = 32

/** Fails, naming the variable (never the value), when a set secret is under MIN_SECRET_BYTES bytes. */
const strongSecret = (name: string, secret: Option.Option<Redacted.Redacted<string>>): Effect.Effect<void, SettingError> => {
  if (Option.isNone(secret)) return Effect.void
  const bytes = Buffer.byteLength(Redacted.value(secret.value), "utf8")
  return bytes >= MIN_SECRET_BYTES
    ? Effect.void
    : Effect.fail(new SettingError({
      variable: name,
      message: `${name} is too short (${bytes} bytes): a shared secret needs at least ${MIN_SECRET_BYTES} bytes; generate one with: openssl rand -base64 32`
    }))
}

/** What one user may hold at once and how fast they may create; 0 = no limit. */
export interface UserLimits {
  /** MAX_SESSIONS_PER_USER: live (not terminated or failed) sessions. */
  readonly sessionsPerUser: number
  /** SESSION_CREATES_PER_MINUTE: session creates in any 60 s. */
  readonly createsPerMinute: number
  /** MAX_VIEWERS_PER_SESSION: viewers connected to one session (on this replica). */
  readonly viewersPerSession: number
  /** MAX_VIEWERS_PER_USER: viewers one user has connected (on this replica). */
  readonly viewersPerUser: number
}

export const DEFAULT_USER_LIMITS: UserLimits = { sessionsPerUser: 10, createsPerMinute: 20, viewersPerSession: 8, viewersPerUser: 16 }
export const DEFAULT_SESSION_RESOURCE_BOUNDS = { min: { cpu: "100m", memory: "128Mi" }, max: { cpu: "16", memory: "64Gi" } } as const

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
  const limit = (name: string, def: number) =>
    setting(name, IntString(0, 1_000_000), { default: String(def), expected: "a whole number (0 = no limit)" })
  const quantity = (name: string, def: string) =>
    setting(name, Quantity, { default: def, expected: "a Kubernetes quantity above zero such as 500m, 2, 512Mi or 10Gi" }).pipe(
      Effect.flatMap((q) =>
        (parseQuantity(q) ?? 0) > 0
          ? Effect.succeed(q)
          : Effect.fail(new SettingError({ variable: name, message: `${name}=${JSON.stringify(q)} is invalid: expected a Kubernetes quantity above zero such as 500m, 2, 512Mi or 10Gi` }))
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
    login: yield* readLoginSettings,
    devMode: yield* bool("DEV_MODE", "false"),
    heartbeatInterval: yield* duration("HEARTBEAT_INTERVAL", "30s"),
    heartbeatMissedLimit: yield* setting("HEARTBEAT_MISSED_LIMIT", IntString(1, 100), { default: "3", expected: "a whole number from 1 to 100" }),
    commandTimeout: yield* duration("COMMAND_TIMEOUT", "5m"),
    credentialRotationGrace: yield* duration("CREDENTIAL_ROTATION_GRACE", "1h"),
    vncTicketTtl: yield* duration("VNC_TICKET_TTL", "60s"),
    vncConnectTimeout: yield* duration("VNC_CONNECT_TIMEOUT", "20s"),
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
    logRepeatLimit: yield* setting("LOG_REPEAT_LIMIT", IntString(0, 1_000_000), { default: "60", expected: "lines per minute (0 = no limit)" }),
    metricsEnabled: yield* bool("METRICS_ENABLED", "true"),
    jwtClockTolerance: yield* duration("JWT_CLOCK_TOLERANCE", "30s"),
    devTokenTtl: yield* duration("DEV_TOKEN_TTL", "8h"),
    jwtMaxTtl: yield* duration("JWT_MAX_TTL", "24h"),
    metricsToken: yield* secretSetting("METRICS_TOKEN"),
    maxBodyBytes: yield* setting("MAX_BODY_BYTES", IntString(1024, 64 * 1024 * 1024), { default: String(1024 * 1024), expected: "bytes from 1024 to 67108864" }),
    otelEndpoint: yield* url("OTEL_EXPORTER_OTLP_ENDPOINT"),
    otelServiceName: yield* text("OTEL_SERVICE_NAME", "streamspace-control-plane"),
    telemetry: yield* readTelemetrySettings("streamspace-control-plane"),
    httpHeadersTimeout: yield* duration("HTTP_HEADERS_TIMEOUT", "10s"),
    httpRequestTimeout: yield* duration("HTTP_REQUEST_TIMEOUT", "30s"),
    maxConnectionsPerAddress: yield* setting("MAX_CONNECTIONS_PER_ADDRESS", IntString(0, 1_000_000), {
      default: "512",
      expected: "a whole number (0 = no limit)"
    }),
    sessionIdleTimeout: yield* duration("SESSION_IDLE_TIMEOUT", "0s"),
    sessionMaxLifetime: yield* duration("SESSION_MAX_LIFETIME", "0s"),
    sessionIdleAction: yield* setting("SESSION_IDLE_ACTION", Schema.Literals(["", "hibernate", "delete"]), {
      default: "",
      expected: "hibernate or delete (empty: hibernate where the session has a persistent home, else delete)"
    }).pipe(Effect.map((a) => (a === "" ? undefined : a))),
    sessionWarnBefore: yield* duration("SESSION_WARN_BEFORE", "5m"),
    sessionPolicyInterval: yield* duration("SESSION_POLICY_INTERVAL", "1s"),
    userLimits: {
      sessionsPerUser: yield* limit("MAX_SESSIONS_PER_USER", DEFAULT_USER_LIMITS.sessionsPerUser),
      createsPerMinute: yield* limit("SESSION_CREATES_PER_MINUTE", DEFAULT_USER_LIMITS.createsPerMinute),
      viewersPerSession: yield* limit("MAX_VIEWERS_PER_SESSION", DEFAULT_USER_LIMITS.viewersPerSession),
      viewersPerUser: yield* limit("MAX_VIEWERS_PER_USER", DEFAULT_USER_LIMITS.viewersPerUser)
    },
    sessionResourceBounds: {
      min: {
        cpu: yield* quantity("SESSION_MIN_CPU", DEFAULT_SESSION_RESOURCE_BOUNDS.min.cpu),
        memory: yield* quantity("SESSION_MIN_MEMORY", DEFAULT_SESSION_RESOURCE_BOUNDS.min.memory)
      },
      max: {
        cpu: yield* quantity("SESSION_MAX_CPU", DEFAULT_SESSION_RESOURCE_BOUNDS.max.cpu),
        memory: yield* quantity("SESSION_MAX_MEMORY", DEFAULT_SESSION_RESOURCE_BOUNDS.max.memory)
      }
    },
    homeRetention: yield* Effect.flatMap(text("HOME_RETENTION", "off"), (s) => {
      if (s.trim() === "" || s.trim() === "off") return Effect.succeed(undefined)
      const d = parseDuration(s.trim())
      return d !== undefined && Duration.toMillis(d) > 0
        ? Effect.succeed(d)
        : Effect.fail(new SettingError({ variable: "HOME_RETENTION", message: `HOME_RETENTION=${JSON.stringify(s)} is invalid: expected off or a duration such as 720h` }))
    }),
    homeRetentionWarning: yield* duration("HOME_RETENTION_WARNING", "24h"),
    homeScanInterval: yield* duration("HOME_SCAN_INTERVAL", "5m"),
    recording: yield* readRecordingSettings,
    peerUrl: yield* url("PEER_URL"),
    replicaLease: yield* duration("REPLICA_LEASE", "15s"),
    clusterSecret: yield* secretSetting("CLUSTER_SECRET")
  }
  for (const r of ["cpu", "memory"] as const) {
    const [lo, hi] = [config.sessionResourceBounds.min[r], config.sessionResourceBounds.max[r]]
    if (parseQuantity(lo)! > parseQuantity(hi)!) {
      const R = r.toUpperCase()
      return yield* new SettingError({ variable: `SESSION_MIN_${R}`, message: `SESSION_MIN_${R}=${lo} is above SESSION_MAX_${R}=${hi}` })
    }
  }
  if (Duration.toMillis(config.replicaLease) < 300) {
    return yield* new SettingError({ variable: "REPLICA_LEASE", message: `REPLICA_LEASE=${Duration.format(config.replicaLease)} is too short: expected at least 300ms` })
  }
  if ((config.tlsCertFile === undefined) !== (config.tlsKeyFile === undefined)) {
    return yield* new SettingError({ variable: "TLS_CERT_FILE", message: "TLS_CERT_FILE and TLS_KEY_FILE must be set together" })
  }
  for (const [name, secret] of [["JWT_SECRET", config.jwtSecret], ["AGENT_BOOTSTRAP_TOKEN", config.agentBootstrapToken], ["METRICS_TOKEN", config.metricsToken], ["CLUSTER_SECRET", config.clusterSecret]] as const) {
    yield* strongSecret(name, secret)
  }
  if (Option.isSome(config.database.databaseUrl) && Option.isNone(config.clusterSecret)) {
    return yield* new SettingError({
      variable: "CLUSTER_SECRET",
      message: "CLUSTER_SECRET is required with DATABASE_URL (replicas on one PostgreSQL authenticate each other with it); generate one with: openssl rand -base64 32"
    })
  }
  if (Duration.isGreaterThan(config.devTokenTtl, config.jwtMaxTtl)) {
    return yield* new SettingError({
      variable: "DEV_TOKEN_TTL",
      message: `DEV_TOKEN_TTL (${Duration.format(config.devTokenTtl)}) is longer than JWT_MAX_TTL (${Duration.format(config.jwtMaxTtl)}): the dev token would be refused`
    })
  }
  if (Option.isNone(config.jwtSecret) && config.jwtJwksUrl === undefined && !config.devMode && config.login.oidc === undefined) {
    return yield* new SettingError({ variable: "JWT_SECRET", message: "JWT_SECRET, JWT_JWKS_URL or OIDC_ISSUER_URL is required (or DEV_MODE=true for a local install)" })
  }
  return config
})

export class ControlPlaneConfig extends Context.Service<ControlPlaneConfig, ControlPlaneConfigShape>()("control-plane/ControlPlaneConfig") {
  static readonly layerFromEnv = Layer.effect(ControlPlaneConfig, readControlPlaneConfig)
  static readonly layerFromRecord = (env: Record<string, string>) =>
    ControlPlaneConfig.layerFromEnv.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))
}
