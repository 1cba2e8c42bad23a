// AgentConfig: every environment variable of the agent guide, parsed and validated once at start.
// A bad value stops the agent before it dials anything, with a message naming the variable.
import {
  AgentId,
  BooleanString,
  DurationString,
  IntString,
  LogFormatString,
  LogLevelString,
  PortString,
  Quantity,
  readTelemetrySettings,
  secretSetting,
  setting,
  SettingError,
  type TelemetrySettings
} from "@streamspace/protocol"
import { ConfigProvider, Context, Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import { SERVICE_ACCOUNT_DIR } from "./internal/kubeAuth.ts"

const UrlString = (schemes: ReadonlyArray<string>) =>
  Schema.String.pipe(
    Schema.check(
      Schema.makeFilter((s: string) => {
        try {
          const u = new URL(s)
          return schemes.includes(u.protocol) ? undefined : `scheme must be one of ${schemes.join(", ")}`
        } catch {
          return "must be a URL"
        }
      })
    )
  )

const Text = Schema.String

export interface AgentConfigShape {
  readonly agentId: AgentId
  readonly controlPlaneUrl: string
  readonly allowInsecureTransport: boolean
  readonly platform: "kubernetes"
  readonly region: string
  readonly namespace: string
  /** Path of a kubeconfig; undefined means in-cluster config. */
  readonly kubeconfig: string | undefined
  /** In-cluster: where the service-account token, CA and namespace files are (the kubelet mounts them there). */
  readonly serviceAccountDir: string
  /** In-cluster: the API server's address, as the kubelet gives it to every pod. */
  readonly kubernetesServiceHost: string | undefined
  readonly kubernetesServicePort: string | undefined
  readonly heartbeatInterval: Duration.Duration
  readonly reconnectDelay: Duration.Duration
  readonly maxReconnectDelay: Duration.Duration
  /** A connection that stayed up this long resets the reconnect backoff. */
  readonly reconnectResetAfter: Duration.Duration
  /** Transport (WebSocket) ping period; a pong missing for `pingTimeout` drops the connection. */
  readonly pingInterval: Duration.Duration
  readonly pingTimeout: Duration.Duration
  readonly maxSessions: number
  readonly sessionImagePullPolicy: "Always" | "IfNotPresent" | "Never"
  readonly sessionDefaultCpu: string
  readonly sessionDefaultMemory: string
  readonly sessionDefaultStorage: string
  /** Ephemeral-storage limit of a session container (its writable layer, logs and emptyDirs count against it). */
  readonly sessionEphemeralStorageLimit: string
  /** undefined: the cluster's default StorageClass. */
  readonly sessionStorageClass: string | undefined
  readonly sessionServiceType: "ClusterIP" | "NodePort" | "LoadBalancer"
  /** Path of a pod template YAML merged into every session pod; undefined: none. */
  readonly sessionPodTemplate: string | undefined
  readonly vncPort: number
  readonly vncTunnelTimeout: Duration.Duration
  /** How often the warm pools are checked and refilled (also right after a create took a warm pod). */
  readonly warmPoolInterval: Duration.Duration
  /** Credit window this agent grants per tunnel (bytes towards the viewer are limited by the control plane's window). */
  readonly vncTunnelWindow: number
  readonly logLevel: "Trace" | "Debug" | "Info" | "Warn" | "Error" | "Fatal" | "None"
  readonly logFormat: "json" | "text"
  /** Similar log lines written per minute before the rest are counted and summarised; 0 = no limit. */
  readonly logRepeatLimit: number
  readonly metricsEnabled: boolean
  readonly metricsPort: number
  readonly healthPort: number
  /** Address the health and metrics endpoints listen on; undefined = every interface (what kubelet probes need). */
  readonly healthHost: string | undefined
  readonly commandTimeout: Duration.Duration
  readonly gracefulShutdownTimeout: Duration.Duration
  readonly maxConcurrentOperations: number
  /** Bootstrap or per-agent token; a saved per-agent credential takes precedence. */
  readonly agentToken: Option.Option<Redacted.Redacted<string>>
  /** Secret in NAMESPACE that keeps the per-agent credential when running in a cluster. */
  readonly credentialSecret: string
  /** File that keeps the per-agent credential when running outside a cluster (KUBECONFIG set). */
  readonly credentialFile: string
  readonly httpsProxy: string | undefined
  readonly httpProxy: string | undefined
  readonly noProxy: string | undefined
  readonly controlPlaneCaFile: string | undefined
  /** OTLP/HTTP collector base URL; spans are exported only when set. */
  readonly otelEndpoint: string | undefined
  readonly otelServiceName: string
  /** Every OTEL_* variable (endpoints, headers, protocol, resource, sampler, OTEL_SDK_DISABLED). */
  readonly telemetry: TelemetrySettings
}

const blankToUndefined = (s: string): string | undefined => (s.trim() === "" ? undefined : s)

const isLoopback = (host: string) =>
  host === "localhost" || host === "[::1]" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host)

/** Reads every variable; the first bad one fails with a SettingError naming it. */
export const readAgentConfig: Effect.Effect<AgentConfigShape, SettingError> = Effect.gen(function*() {
  const agentId = yield* setting("AGENT_ID", AgentId, { expected: "a DNS label such as k8s-prod-us-east-1 (lowercase letters, digits, '-', at most 63 characters)" })
  const controlPlaneUrl = yield* setting("CONTROL_PLANE_URL", UrlString(["wss:", "ws:"]), { expected: "a WebSocket URL such as wss://streamspace.example.com" })
  const allowInsecureTransport = yield* setting("ALLOW_INSECURE_TRANSPORT", BooleanString, { default: "false", expected: "true or false" })
  const url = new URL(controlPlaneUrl)
  if (url.protocol === "ws:" && !allowInsecureTransport && !isLoopback(url.hostname)) {
    return yield* new SettingError({
      variable: "CONTROL_PLANE_URL",
      message: `CONTROL_PLANE_URL=${JSON.stringify(controlPlaneUrl)} uses unencrypted ws:// to a non-loopback host: use wss://, or set ALLOW_INSECURE_TRANSPORT=true`
    })
  }
  const duration = (name: string, def: string) => setting(name, DurationString, { default: def, expected: "a duration such as 500ms, 30s, 5m or 1h" })
  const int = (name: string, def: string, min: number, max: number) =>
    setting(name, IntString(min, max), { default: def, expected: `a whole number from ${min} to ${max}` })
  const port = (name: string, def: string) => setting(name, PortString, { default: def, expected: "a TCP port from 1 to 65535" })
  const quantity = (name: string, def: string) => setting(name, Quantity, { default: def, expected: "a Kubernetes quantity such as 500m, 2, 512Mi or 10Gi" })
  const text = (name: string, def: string) => setting(name, Text, { default: def, expected: "text" })

  const config: AgentConfigShape = {
    agentId,
    controlPlaneUrl,
    allowInsecureTransport,
    platform: yield* setting("PLATFORM", Schema.Literals(["kubernetes"]), { default: "kubernetes", expected: "kubernetes (the only platform this agent supports)" }),
    region: yield* text("REGION", ""),
    namespace: yield* setting("NAMESPACE", Schema.String.pipe(Schema.check(Schema.isPattern(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/), Schema.isMaxLength(63))), {
      default: "streamspace",
      expected: "a Kubernetes namespace name (DNS label)"
    }),
    kubeconfig: blankToUndefined(yield* text("KUBECONFIG", "")),
    serviceAccountDir: yield* text("SERVICE_ACCOUNT_DIR", SERVICE_ACCOUNT_DIR),
    kubernetesServiceHost: blankToUndefined(yield* text("KUBERNETES_SERVICE_HOST", "")),
    kubernetesServicePort: blankToUndefined(yield* text("KUBERNETES_SERVICE_PORT", "")),
    heartbeatInterval: yield* duration("HEARTBEAT_INTERVAL", "30s"),
    reconnectDelay: yield* duration("RECONNECT_DELAY", "5s"),
    maxReconnectDelay: yield* duration("MAX_RECONNECT_DELAY", "5m"),
    reconnectResetAfter: yield* duration("RECONNECT_RESET_AFTER", "1m"),
    pingInterval: yield* duration("PING_INTERVAL", "20s"),
    pingTimeout: yield* duration("PING_TIMEOUT", "10s"),
    maxSessions: yield* int("MAX_SESSIONS", "100", 0, 100_000),
    sessionImagePullPolicy: yield* setting("SESSION_IMAGE_PULL_POLICY", Schema.Literals(["Always", "IfNotPresent", "Never"]), {
      default: "IfNotPresent",
      expected: "Always, IfNotPresent or Never"
    }),
    sessionDefaultCpu: yield* quantity("SESSION_DEFAULT_CPU", "1000m"),
    sessionDefaultMemory: yield* quantity("SESSION_DEFAULT_MEMORY", "2Gi"),
    sessionDefaultStorage: yield* quantity("SESSION_DEFAULT_STORAGE", "10Gi"),
    sessionEphemeralStorageLimit: yield* quantity("SESSION_EPHEMERAL_STORAGE_LIMIT", "10Gi"),
    sessionStorageClass: blankToUndefined(yield* text("SESSION_STORAGE_CLASS", "")),
    sessionServiceType: yield* setting("SESSION_SERVICE_TYPE", Schema.Literals(["ClusterIP", "NodePort", "LoadBalancer"]), {
      default: "ClusterIP",
      expected: "ClusterIP, NodePort or LoadBalancer"
    }),
    sessionPodTemplate: blankToUndefined(yield* text("SESSION_POD_TEMPLATE", "")),
    vncPort: yield* port("VNC_PORT", "5900"),
    vncTunnelTimeout: yield* duration("VNC_TUNNEL_TIMEOUT", "1h"),
    warmPoolInterval: yield* duration("WARM_POOL_INTERVAL", "10s"),
    vncTunnelWindow: yield* int("VNC_TUNNEL_WINDOW", String(1024 * 1024), 64 * 1024, 16 * 1024 * 1024),
    logLevel: yield* setting("LOG_LEVEL", LogLevelString, { default: "info", expected: "debug, info, warn or error" }),
    logFormat: yield* setting("LOG_FORMAT", LogFormatString, { default: "json", expected: "json or text" }),
    logRepeatLimit: yield* int("LOG_REPEAT_LIMIT", "60", 0, 1_000_000),
    metricsEnabled: yield* setting("METRICS_ENABLED", BooleanString, { default: "true", expected: "true or false" }),
    metricsPort: yield* port("METRICS_PORT", "9090"),
    healthPort: yield* port("HEALTH_PORT", "8080"),
    healthHost: blankToUndefined(yield* text("HEALTH_HOST", "")),
    commandTimeout: yield* duration("COMMAND_TIMEOUT", "5m"),
    gracefulShutdownTimeout: yield* duration("GRACEFUL_SHUTDOWN_TIMEOUT", "30s"),
    maxConcurrentOperations: yield* int("MAX_CONCURRENT_OPERATIONS", "10", 1, 1000),
    agentToken: yield* secretSetting("AGENT_TOKEN"),
    credentialSecret: yield* text("AGENT_CREDENTIAL_SECRET", "streamspace-agent-credential"),
    credentialFile: yield* text("AGENT_CREDENTIAL_FILE", ".streamspace-agent-credential"),
    httpsProxy: blankToUndefined(yield* text("HTTPS_PROXY", "")),
    httpProxy: blankToUndefined(yield* text("HTTP_PROXY", "")),
    noProxy: blankToUndefined(yield* text("NO_PROXY", "")),
    controlPlaneCaFile: blankToUndefined(yield* text("CONTROL_PLANE_CA_FILE", "")),
    otelEndpoint: blankToUndefined(yield* setting("OTEL_EXPORTER_OTLP_ENDPOINT", Schema.Union([Schema.Literal(""), UrlString(["http:", "https:"])]), {
      default: "",
      expected: "an OTLP/HTTP collector URL such as http://otel-collector:4318"
    })),
    otelServiceName: yield* text("OTEL_SERVICE_NAME", "streamspace-agent"),
    telemetry: yield* readTelemetrySettings("streamspace-agent")
  }
  if (Duration.isGreaterThan(config.reconnectDelay, config.maxReconnectDelay)) {
    return yield* new SettingError({
      variable: "RECONNECT_DELAY",
      message: `RECONNECT_DELAY (${Duration.format(config.reconnectDelay)}) must not exceed MAX_RECONNECT_DELAY (${Duration.format(config.maxReconnectDelay)})`
    })
  }
  return config
})

export class AgentConfig extends Context.Service<AgentConfig, AgentConfigShape>()("agent/AgentConfig") {
  /** From the current ConfigProvider (the process environment unless a test or embedder installs another). */
  static readonly layerFromEnv = Layer.effect(AgentConfig, readAgentConfig)

  /** From a plain map of variables, as a test or an embedding program would give them. */
  static readonly layerFromRecord = (env: Record<string, string>) =>
    AgentConfig.layerFromEnv.pipe(Layer.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))))
}
