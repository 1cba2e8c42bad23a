// The whole-system harness for end-to-end tests, all on 127.0.0.1: kube-testserver clusters whose pods
// port-forward to a vnc-testserver, the real control plane (in this process as `ControlPlane.layerNoDeps` on a
// scope of its own, so a test can stop and restart it, or as `node packages/control-plane/src/main.ts` in a
// child process a test can SIGKILL), real agents (in this process as `Agent.layerKubernetes`, or
// `packages/agent/src/main.ts` as a child process), an API client, HS256 user tokens, and databases of each
// kind: `memory` (PGlite in memory), `pglite` (a fresh DATA_DIR) and `postgres` (a fresh database on a
// throwaway PostgreSQL cluster started with pg_ctl). Nothing sleeps for a fixed time: waits poll a condition
// with a real-time bound (@streamspace/testbed's waitFor).
import { Agent, AgentConfig, type AgentConfigShape, Connection, Kubernetes, type KubernetesOptions, readAgentConfig, TunnelPool } from "@streamspace/agent"
import { AgentHub, CommandDispatcher, ControlPlane, ControlPlaneConfig, Drain, type DrainShape, type PresenceEvent, Sessions } from "@streamspace/control-plane"
import { startPostgres } from "@streamspace/control-plane/test-support"
import { KubeTestServer, type KubeTestServerHandle, type ServerOptions } from "@streamspace/kube-testserver"
import { waitFor } from "@streamspace/testbed"
import { RfbClient, VncTestServer } from "@streamspace/vnc-testserver"
import { Clock, ConfigProvider, Context, Effect, Exit, Layer, Redacted, Scope, Stream } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createHmac } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { createWebSocketStream, WebSocket } from "ws"

export { waitFor }

export const REPO = fileURLToPath(new URL("../../../../", import.meta.url))
export const NODE = `${REPO}node_modules/.bin/node`
export const NAMESPACE = "streamspace"
export const JWT_SECRET = "stack-jwt-secret-5d1f0c9a8b7e6d5c4b3a29180f7e6d5c"
export const BOOTSTRAP_TOKEN = "stack-bootstrap-token-a1b2c3d4e5f60718293a4b5c"
/** The replicas' shared CLUSTER_SECRET (required with DATABASE_URL). */
export const CLUSTER_SECRET = "stack-cluster-secret-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

/** Short agent-side Kubernetes retries, so fault tests finish quickly. */
export const fastKube: KubernetesOptions = {
  retryBase: "20 millis",
  retryTimes: 4,
  maxRetryAfter: "2 seconds",
  requestTimeout: "5 seconds",
  failingAfter: "300 millis",
  degradedWindow: "1500 millis"
}

/** A TCP port that was free a moment ago (for child processes and restarts on the same address). */
export const freePort = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})

export const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), prefix))),
    (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
  )

// ---------------------------------------------------------------------------------------------- tokens and API

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")

/** An HS256 JWT signed with `secret` (JWT_SECRET by default); `header` and claims can be bent for attacks. */
export const signJwt = (
  claims: Record<string, unknown>,
  options: { readonly secret?: string; readonly header?: Record<string, unknown>; readonly ttlSec?: number } = {}
): string => {
  const now = Math.floor(Date.now() / 1000)
  const head = b64(options.header ?? { alg: "HS256", typ: "JWT" })
  const body = b64({ iat: now, exp: now + (options.ttlSec ?? 3600), ...claims })
  const sig = createHmac("sha256", options.secret ?? JWT_SECRET).update(`${head}.${body}`).digest("base64url")
  return `${head}.${body}.${sig}`
}
export const adminToken = () => signJwt({ sub: "admin", role: "admin" })
export const userToken = (sub: string) => signJwt({ sub, role: "user" })

export interface ApiResponse {
  readonly status: number
  readonly body: any
  readonly text: string
}

/** One HTTP request; a JSON `body` (or `raw` bytes) is sent as application/json unless `headers` say otherwise. */
export const request = (
  base: string,
  method: string,
  path: string,
  options: { readonly token?: string; readonly body?: unknown; readonly raw?: string | Uint8Array; readonly headers?: Record<string, string> } = {}
) =>
  Effect.promise(async (): Promise<ApiResponse> => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
    let body: string | Uint8Array | undefined = options.raw
    if (options.body !== undefined) body = JSON.stringify(options.body)
    if (body !== undefined && headers["content-type"] === undefined) headers["content-type"] = "application/json"
    // Bounded: a request that hangs fails the test with its path instead of timing the whole test out.
    const res = await fetch(`${base}${path}`, { method, headers, body: (body ?? null) as never, signal: AbortSignal.timeout(10_000) }).catch((e) => {
      throw new Error(`${method} ${path}: ${e instanceof Error ? e.message : String(e)}`)
    })
    const text = await res.text()
    let parsed: unknown = undefined
    try {
      parsed = JSON.parse(text)
    } catch {
      // not JSON: the text is kept
    }
    return { status: res.status, body: parsed, text }
  })

export type Client = ReturnType<typeof api>

export const api = (base: string, token: string) => ({
  get: (path: string) => request(base, "GET", `/api/v1${path}`, { token }),
  post: (path: string, body?: unknown) => request(base, "POST", `/api/v1${path}`, { token, body: body ?? {} }),
  patch: (path: string, body: unknown) => request(base, "PATCH", `/api/v1${path}`, { token, body }),
  del: (path: string) => request(base, "DELETE", `/api/v1${path}`, { token })
})

// ---------------------------------------------------------------------------------------------- stores

export type StoreKind = "memory" | "pglite" | "postgres"

/** Hands out empty databases of one kind, as control-plane environment variables. */
export class SystemDb extends Context.Service<SystemDb, {
  readonly kind: StoreKind
  /** A new empty database, kept for the current scope; restarts reuse the same variables. */
  readonly fresh: Effect.Effect<Record<string, string>, never, Scope.Scope>
}>()("e2e/SystemDb") {
  static readonly memory = Layer.succeed(SystemDb, SystemDb.of({ kind: "memory", fresh: Effect.succeed({ DATABASE_IN_MEMORY: "true" }) }))

  static readonly pglite = Layer.succeed(SystemDb, SystemDb.of({
    kind: "pglite",
    fresh: Effect.map(tempDir("system-pglite-"), (dir) => ({ DATABASE_IN_MEMORY: "false", DATA_DIR: join(dir, "data") }))
  }))

  /** One PostgreSQL cluster for the layer's lifetime; each `fresh` is a new database on it. */
  static readonly postgres = Layer.effect(SystemDb, Effect.gen(function*() {
    const pg = yield* Effect.orDie(startPostgres)
    let n = 0
    return SystemDb.of({
      kind: "postgres",
      fresh: Effect.sync(() => ({ DATABASE_URL: Redacted.value(pg.createDatabase(`system_${process.pid}_${++n}`)), CLUSTER_SECRET }))
    })
  }))
}

// ---------------------------------------------------------------------------------------------- cluster

export interface Cluster {
  readonly kube: KubeTestServerHandle
  readonly vnc: VncTestServer["Service"]
  readonly dir: string
  readonly kubeconfigPath: string
}

/** kube-testserver (kubelet runs pods within ~10 ms) with every port-forward to a vnc-testserver of its own. */
export const makeCluster = (options: ServerOptions = {}) =>
  Effect.gen(function*() {
    const kube = yield* KubeTestServer.make({ kubelet: { startDelayMs: 10, terminationDelayMs: 10, pvcBindDelayMs: 10 }, ...options })
    const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 64, height: 48, frameRate: 2, name: "system desktop" })), VncTestServer)
    kube.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
    const dir = yield* tempDir("stack-cluster-")
    const kubeconfigPath = join(dir, "kubeconfig")
    writeFileSync(kubeconfigPath, kube.kubeconfigFor(kube.adminToken, { namespace: NAMESPACE, user: "admin" }))
    return { kube, vnc, dir, kubeconfigPath } satisfies Cluster
  })

/** The session pods of a cluster (carrying the session label). */
export const sessionPods = (cluster: Cluster) => cluster.kube.list("pods", NAMESPACE).filter((p: any) => p.metadata?.labels?.app === "session")

/** The session pods of a cluster, as session ids. */
export const sessionIdsIn = (cluster: Cluster): ReadonlyArray<string> =>
  sessionPods(cluster).map((p: any) => String(p.metadata?.labels?.["streamspace.io/session-id"]))

// ---------------------------------------------------------------------------------------------- control plane

export const controlPlaneEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  HOST: "127.0.0.1",
  PORT: "0",
  DATABASE_IN_MEMORY: "true",
  JWT_SECRET,
  AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
  LOG_LEVEL: "error",
  HEARTBEAT_INTERVAL: "1s",
  PING_INTERVAL: "1s",
  ...extra
})

/** What the system tests run the control plane with: a missed beat more, and commands that give up sooner. */
export const SYSTEM_ENV: Record<string, string> = { HEARTBEAT_MISSED_LIMIT: "5", COMMAND_TIMEOUT: "60s" }

export interface ControlPlaneHandle {
  readonly url: string
  readonly wsUrl: string
  readonly port: number
  readonly admin: Client
  readonly hub: AgentHub["Service"]
  readonly dispatcher: CommandDispatcher["Service"]
  readonly sessions: Sessions["Service"]
  /** Its graceful stop's first step (what SIGTERM starts), to watch a draining replica before it exits. */
  readonly drain: DrainShape
  /** Every presence event (connects, disconnects, status changes) since start, in order. */
  readonly events: () => ReadonlyArray<PresenceEvent>
  /** Stops it gracefully (its scope closes); also done when the test's scope closes. */
  readonly stop: Effect.Effect<void>
}

/** Closes `scope` once, whoever asks first (the test or the test's own scope). */
const stopOnce = (scope: Scope.Closeable) => {
  let stopped = false
  return Effect.suspend(() => {
    if (stopped) return Effect.void
    stopped = true
    return Scope.close(scope, Exit.void)
  })
}

/**
 * The control plane in this process on its own scope. `clock` replaces its Clock (a TestClock for heartbeat
 * deadlines); the rest of the system keeps real time. Replicas on one database (DATABASE_URL) find each other's
 * agents through the replica registry.
 */
export const startControlPlane = (env: Record<string, string> = {}, options: { readonly clock?: Clock.Clock } = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const stop = stopOnce(scope)
    yield* Effect.addFinalizer(() => stop)
    const base = ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromRecord(controlPlaneEnv(env))))
    const built = options.clock === undefined ? base : base.pipe(Layer.provide(Layer.succeed(Clock.Clock, options.clock)))
    const ctx = yield* Layer.buildWithScope(built, scope).pipe(Effect.orDie)
    const cp = Context.get(ctx, ControlPlane)
    const hub = Context.get(ctx, AgentHub)
    const events: Array<PresenceEvent> = []
    yield* Stream.runForEach(hub.presence, (e) => Effect.sync(() => events.push(e))).pipe(Effect.forkIn(scope, { startImmediately: true }))
    const url = `http://127.0.0.1:${cp.port}`
    return {
      url,
      wsUrl: `ws://127.0.0.1:${cp.port}`,
      port: cp.port,
      admin: api(url, adminToken()),
      hub,
      dispatcher: Context.get(ctx, CommandDispatcher),
      sessions: Context.get(ctx, Sessions),
      drain: Context.get(ctx, Drain),
      events: () => events,
      stop
    } satisfies ControlPlaneHandle
  })

/**
 * One control plane shared by the tests of a file: starting one costs seconds on a loaded machine. Tests stay
 * independent by using their own agent ids, users and clusters.
 */
export class SharedControlPlane extends Context.Service<SharedControlPlane, ControlPlaneHandle>()("e2e/SharedControlPlane") {
  static readonly layer = (env: Record<string, string> = {}) => Layer.effect(SharedControlPlane, startControlPlane({ ...SYSTEM_ENV, ...env }))
  /** On a fresh database of the SystemDb in context (which stays available to the tests). */
  static readonly layerOnDb = <E>(db: Layer.Layer<SystemDb, E>) =>
    Layer.effect(SharedControlPlane, Effect.gen(function*() {
      const d = yield* SystemDb
      return yield* startControlPlane({ ...SYSTEM_ENV, ...(yield* d.fresh) })
    })).pipe(Layer.provideMerge(db))
}

/** Options for `layer(...)` blocks of system tests: real time throughout (they talk to real sockets). */
export const layerOptions = { timeout: "120 seconds", excludeTestServices: true } as const

export interface Process {
  readonly child: ChildProcess
  /** Everything written to stdout and stderr so far. */
  readonly output: () => string
  readonly exited: Promise<number | null>
  readonly kill: (signal?: NodeJS.Signals) => Effect.Effect<number | null>
}

/** Runs a Node entry point (Node 24) with exactly `env` (plus PATH); SIGKILLed when the scope ends. */
export const spawnNode = (entry: string, env: Record<string, string>) =>
  Effect.acquireRelease(
    Effect.sync((): Process => {
      const child = spawn(NODE, [`${REPO}${entry}`], { cwd: REPO, env: { PATH: process.env.PATH ?? "", ...env }, stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      child.stdout!.on("data", (d) => (out += d))
      child.stderr!.on("data", (d) => (out += d))
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
      const kill = (signal: NodeJS.Signals = "SIGKILL") =>
        Effect.promise(() => {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal)
          return exited
        })
      return { child, output: () => out, exited, kill }
    }),
    (p) => Effect.asVoid(p.kill("SIGKILL"))
  )

/** `node packages/control-plane/src/main.ts` on a fixed port; resolves once /api/v1/health answers. */
export const startControlPlaneProcess = (port: number, env: Record<string, string>) =>
  Effect.gen(function*() {
    const proc = yield* spawnNode("packages/control-plane/src/main.ts", controlPlaneEnv({ PORT: String(port), DATABASE_IN_MEMORY: "false", LOG_LEVEL: "info", ...env }))
    const url = `http://127.0.0.1:${port}`
    yield* waitFor(
      "the control plane process to answer /api/v1/health",
      Effect.promise(() => fetch(`${url}/api/v1/health`, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false)).pipe(
        Effect.flatMap((ok) => proc.child.exitCode !== null ? Effect.die(new Error(`control plane exited: ${proc.output()}`)) : Effect.succeed(ok))
      ),
      { timeout: 90_000 } // a fresh PGlite and module loading take long on a loaded 2-core machine
    )
    return { ...proc, url, wsUrl: `ws://127.0.0.1:${port}`, admin: api(url, adminToken()) }
  })

// ---------------------------------------------------------------------------------------------- agents

export const agentEnv = (cluster: Cluster, cpWsUrl: string, agentId: string, extra: Record<string, string> = {}): Record<string, string> => ({
  AGENT_ID: agentId,
  CONTROL_PLANE_URL: cpWsUrl,
  AGENT_TOKEN: BOOTSTRAP_TOKEN,
  NAMESPACE,
  KUBECONFIG: cluster.kubeconfigPath,
  AGENT_CREDENTIAL_FILE: join(cluster.dir, `credential-${agentId}`),
  REGION: "test-1",
  RECONNECT_DELAY: "50ms",
  MAX_RECONNECT_DELAY: "500ms",
  HEARTBEAT_INTERVAL: "500ms",
  // a loaded CI machine can stall a child process for a second: shorter timeouts make links flap
  PING_INTERVAL: "1s",
  PING_TIMEOUT: "2s",
  LOG_LEVEL: "error",
  ...extra
})

export interface AgentHandle {
  readonly connection: Connection["Service"]
  /** The agent's own tunnels (what it has open, whatever the control plane thinks). */
  readonly tunnels: TunnelPool["Service"]
  /** Graceful shutdown (the agent's scope closes); also done when the test's scope closes. */
  readonly stop: Effect.Effect<void>
}

/** A real agent in this process (health and metrics on port 0), on its own scope. */
export const startAgent = (env: Record<string, string>, overrides: Partial<AgentConfigShape> = {}, kube: KubernetesOptions = fastKube) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const stop = stopOnce(scope)
    yield* Effect.addFinalizer(() => stop)
    const config = Layer.effect(
      AgentConfig,
      readAgentConfig.pipe(
        Effect.map((c): AgentConfigShape => ({ ...c, healthPort: 0, metricsPort: 0, ...overrides })),
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
        Effect.orDie
      )
    )
    const ctx = yield* Layer.buildWithScope(Agent.layerKubernetes(Kubernetes.layerWith(kube)).pipe(Layer.provideMerge(config)), scope).pipe(Effect.orDie)
    return { connection: Context.get(ctx, Connection), tunnels: Context.get(ctx, TunnelPool), stop } satisfies AgentHandle
  })

/** The agent as the API shows it, or undefined while the control plane does not know it. */
export const agentView = (cp: { readonly admin: Client }, agentId: string) =>
  Effect.map(cp.admin.get(`/agents/${agentId}`), (r) => (r.status === 200 ? r.body : undefined))

export const waitForAgent = (cp: { readonly admin: Client }, agentId: string, what: string, check: (a: any) => boolean, timeout = 15_000) =>
  waitFor(`agent ${agentId} ${what}`, Effect.map(agentView(cp, agentId), (a) => (a !== undefined && check(a) ? a : undefined)), { timeout })

export const waitForOnline = (cp: { readonly admin: Client }, agentId: string, timeout = 15_000) =>
  waitForAgent(cp, agentId, "approved, connected and online", (a) => a.enrollment === "approved" && a.connected === true && a.status === "online", timeout)

/** Waits for the agent to enrol as pending, approves it over the API and waits until it is online. */
export const approveAgent = (cp: { readonly admin: Client }, agentId: string) =>
  Effect.gen(function*() {
    yield* waitForAgent(cp, agentId, "pending", (a) => a.enrollment === "pending" && a.connected === true, 30_000)
    const approved = yield* cp.admin.post(`/agents/${agentId}/approve`)
    if (approved.status !== 200) return yield* Effect.die(new Error(`approve failed: ${approved.status} ${approved.text}`))
    return yield* waitForOnline(cp, agentId)
  })

/** Starts an agent and enrols it. */
export const startApprovedAgent = (cp: { readonly admin: Client }, env: Record<string, string>) =>
  Effect.gen(function*() {
    const agent = yield* startAgent(env)
    yield* approveAgent(cp, env.AGENT_ID!)
    return agent
  })

/** Waits for a session to reach one of `states` (as the owner or an admin sees it). */
export const waitForSession = (client: Client, id: string, states: ReadonlyArray<string>, timeout = 15_000) =>
  waitFor(
    `session ${id} in ${states.join("|")}`,
    Effect.map(client.get(`/sessions/${id}`), (r) => (r.status === 200 && states.includes(r.body.state) ? r.body : undefined)),
    { timeout }
  )

// ---------------------------------------------------------------------------------------------- viewers

/** An RFB viewer through the control plane's VNC proxy (user JWT in the header, `binary` subprotocol). */
export const openViewer = (cpWsUrl: string, sessionId: string, token: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const ws = new WebSocket(`${cpWsUrl}/api/v1/sessions/${sessionId}/vnc`, ["binary"], { headers: { authorization: `Bearer ${token}` } })
      const client = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
      return { ws, client }
    }),
    (v) => Effect.sync(() => v.client.close())
  )
