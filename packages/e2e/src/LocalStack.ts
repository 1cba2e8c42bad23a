// LocalStack: a whole local StreamSpace as one layer: the control plane (embedded PGlite under the data
// directory, DEV_MODE admin token), one agent on the Kubernetes platform connected to it over loopback, and,
// unless a kubeconfig is given, the simulated DemoCluster. The agent enrols with a bootstrap token and is
// approved through the API with the admin token, as an operator would; its credential is kept in the data
// directory, so later starts connect at once. Layers are built cluster, control plane, agent, and torn down
// in reverse: the agent shuts down gracefully first, then the control plane, then the cluster. Both halves run in
// this process, each with the metric registry its own layer provides, so each /metrics shows only its series.
import { Agent, AgentConfig, Kubernetes } from "@streamspace/agent"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { lineLogger } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer, Logger, LogLevel, Option, References, Schedule, Schema } from "effect"
import { randomBytes } from "node:crypto"
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { DemoCluster } from "./DemoCluster.ts"

export class LocalStackError extends Schema.TaggedError<LocalStackError>()("LocalStackError", {
  reason: Schema.Literals(["DataDir", "NoFreePort"]),
  message: Schema.String
}) {}

export interface LocalStackOptions {
  /** Control plane port (0 picks a free one). */
  readonly port: number
  /** Control plane listen address. */
  readonly host: string
  readonly dataDir: string
  /** A real cluster's kubeconfig; undefined starts the simulated demo cluster. */
  readonly kubeconfig: string | undefined
  /** Demo cluster: pod creation to Running. */
  readonly demoStartDelayMs: number
  /** The rest of the environment (LOG_LEVEL, REGION, ...), passed to both halves under the quick start's settings. */
  readonly env: Readonly<Record<string, string | undefined>>
}

export interface LocalStackShape {
  readonly url: string
  readonly adminToken: string
  /** Opens the web UI logged in as the admin. */
  readonly loginUrl: string
  readonly agentId: string
  /** True when the agent runs against the simulated demo cluster. */
  readonly simulated: boolean
  readonly clusterUrl: string
  readonly dataDir: string
  /** Demo cluster session pods restored from the previous run. */
  readonly restoredSessions: number
  /** Whether the agent came online within the start-up wait (else it keeps retrying in the background). */
  readonly agentOnline: boolean
  /** Whether this start enrolled and approved the agent (the first start on a data directory). */
  readonly agentApproved: boolean
  /** The agent's health and metrics endpoint (`/health`, `/ready`, `/metrics`) on loopback. */
  readonly agentUrl: string
}

export const AGENT_ID = "local"
/** How long the start-up waits for the agent to enrol and come online before printing anyway. */
const AGENT_WAIT = Duration.seconds(30)

/** A secret kept in the data directory across starts (created on first use, readable by the owner only). */
const persistentSecret = (file: string): string => {
  if (existsSync(file)) return readFileSync(file, "utf8").trim()
  const secret = randomBytes(32).toString("base64url")
  writeFileSync(file, secret, { mode: 0o600 })
  return secret
}

const freePort = Effect.callback<number, LocalStackError>((resume) => {
  const server = net.createServer()
  server.once("error", (e) => resume(Effect.fail(new LocalStackError({ reason: "NoFreePort", message: `no free port for the agent's health endpoint: ${e.message}` }))))
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

const defined = (env: Readonly<Record<string, string | undefined>>): Record<string, string> =>
  Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined))

const AgentsList = Schema.Struct({
  agents: Schema.Array(Schema.Struct({ id: Schema.String, enrollment: Schema.String, connected: Schema.Boolean, status: Schema.String }))
})
const decodeAgents = Schema.decodeUnknownEffect(AgentsList)

/**
 * Approves the local agent when it shows up pending; finishes once it is approved and connected (online
 * true) or after AGENT_WAIT (online false), telling whether it approved it.
 */
const approveLocalAgent = (base: string, token: string) => {
  let approved = false
  const call = (method: string, route: string) =>
    Effect.tryPromise(() => fetch(`${base}/api/v1${route}`, { method, headers: { authorization: `Bearer ${token}` } }).then((r) => r.json()))
  const step = Effect.gen(function*() {
    const { agents } = yield* Effect.flatMap(call("GET", "/agents"), decodeAgents)
    const agent = agents.find((a) => a.id === AGENT_ID)
    if (agent?.enrollment === "pending" && agent.connected) {
      yield* call("POST", `/agents/${AGENT_ID}/approve`)
      approved = true
      yield* Effect.logInfo(`quick start: approved agent ${AGENT_ID} (local install)`)
    }
    return agent?.enrollment === "approved" && agent.connected && agent.status !== "offline"
  })
  return step.pipe(
    Effect.orElseSucceed(() => false),
    Effect.repeat({ until: (done) => done, schedule: Schedule.spaced("200 millis") }),
    Effect.timeoutOption(AGENT_WAIT),
    Effect.map((done) => ({ online: Option.isSome(done), approved }))
  )
}

export class LocalStack extends Context.Service<LocalStack, LocalStackShape>()("e2e/LocalStack") {
  static readonly layer = (options: LocalStackOptions) =>
    Layer.unwrap(Effect.gen(function*() {
      const dataDir = path.resolve(options.dataDir)
      // The quick start's own files, next to the database the control plane keeps in DATA_DIR.
      const own = path.join(dataDir, "quickstart")
      yield* Effect.try({
        try: () => mkdirSync(own, { recursive: true, mode: 0o700 }),
        catch: (e) => new LocalStackError({ reason: "DataDir", message: `cannot create DATA_DIR ${dataDir}: ${(e as Error).message}` })
      })
      const env = defined(options.env)
      const jwtSecret = env["JWT_SECRET"] ?? persistentSecret(path.join(own, "jwt-secret"))
      const bootstrapToken = randomBytes(24).toString("base64url")
      const healthPort = yield* freePort
      const logFormat = env["LOG_FORMAT"] ?? "text"
      // Quiet by default: the banner says what matters; LOG_LEVEL=info shows every event.
      const logLevel = env["LOG_LEVEL"] ?? "warn"
      // The agent and the start-up check reach the control plane over loopback unless it listens elsewhere only.
      const localHost = options.host === "0.0.0.0" || options.host === "::" || options.host === "" ? "127.0.0.1" : options.host
      const local = (scheme: string, port: number) => `${scheme}://${localHost.includes(":") ? `[${localHost}]` : localHost}:${port}`

      const controlPlane = ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromRecord({
        ...env,
        HOST: options.host,
        PORT: String(options.port),
        DATA_DIR: dataDir,
        DEV_MODE: "true",
        JWT_SECRET: jwtSecret,
        AGENT_BOOTSTRAP_TOKEN: bootstrapToken,
        LOG_FORMAT: logFormat,
        LOG_LEVEL: logLevel
      })))

      const cluster = options.kubeconfig === undefined
        ? Layer.effect(
          ClusterInfo,
          Effect.map(DemoCluster, (demo) => ({ kubeconfig: demo.kubeconfigPath, url: demo.kube.url, simulated: true, restoredSessions: demo.restoredSessions }))
        ).pipe(Layer.provide(DemoCluster.layer({ dir: path.join(own, "demo-cluster"), startDelayMs: options.demoStartDelayMs })))
        : Layer.succeed(ClusterInfo, { kubeconfig: path.resolve(options.kubeconfig), url: options.kubeconfig, simulated: false, restoredSessions: 0 })

      const agent = Layer.unwrap(Effect.gen(function*() {
        const cp = yield* ControlPlane
        const info = yield* ClusterInfo
        const config = AgentConfig.layerFromRecord({
          ...env,
          AGENT_ID,
          CONTROL_PLANE_URL: local("ws", cp.port),
          AGENT_TOKEN: bootstrapToken,
          AGENT_CREDENTIAL_FILE: path.join(own, "agent-credential"),
          KUBECONFIG: info.kubeconfig,
          NAMESPACE: env["NAMESPACE"] ?? "streamspace",
          HEALTH_PORT: String(healthPort),
          // A laptop's health and metrics stay on the laptop.
          HEALTH_HOST: "127.0.0.1",
          METRICS_PORT: String(healthPort),
          LOG_FORMAT: logFormat,
          LOG_LEVEL: logLevel
        })
        return Agent.layerKubernetes(Kubernetes.layer).pipe(Layer.provideMerge(config))
      }))

      const info = Layer.effect(LocalStack, Effect.gen(function*() {
        const cp = yield* ControlPlane
        const cluster = yield* ClusterInfo
        const adminToken = cp.devToken ?? ""
        const agent = yield* approveLocalAgent(local("http", cp.port), adminToken)
        return LocalStack.of({
          url: `${cp.url}/`,
          adminToken,
          loginUrl: `${cp.url}/#token=${adminToken}`,
          agentId: AGENT_ID,
          simulated: cluster.simulated,
          clusterUrl: cluster.url,
          dataDir,
          restoredSessions: cluster.restoredSessions,
          agentOnline: agent.online,
          agentApproved: agent.approved,
          agentUrl: `http://127.0.0.1:${healthPort}`
        })
      }))

      // info needs the agent running (it waits for it); the agent needs the control plane and the cluster.
      // The quick start's own lines (demo cluster, enrolment) in the control plane's format and level.
      const minimum = LogLevel.values.find((l) => l.toLowerCase() === logLevel.toLowerCase()) ?? "Warn"
      const logging = Layer.mergeAll(
        Logger.layer([lineLogger(logFormat === "json" ? "json" : "text", (line) => globalThis.console.log(line))]),
        Layer.succeed(References.MinimumLogLevel, minimum)
      )
      return info.pipe(
        Layer.provide(agent),
        Layer.provideMerge(controlPlane),
        Layer.provideMerge(cluster),
        Layer.provide(logging)
      )
    }))
}

/** Which cluster the agent uses. */
class ClusterInfo extends Context.Service<ClusterInfo, {
  readonly kubeconfig: string
  readonly url: string
  readonly simulated: boolean
  readonly restoredSessions: number
}>()("e2e/LocalStack/ClusterInfo") {}
