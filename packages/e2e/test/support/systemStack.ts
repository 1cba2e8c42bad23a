// System-test support: the real control plane (`ControlPlane.layerNoDeps`) and real agents
// (`Agent.layerKubernetes`) in this process, each on its own scope so a test can stop and restart either,
// against kube-testserver clusters whose pods port-forward to one vnc-testserver. Everything listens on
// 127.0.0.1 with port 0 (or a port that was free a moment ago, for a restart on the same address).
//
// Stores: `memory` (PGlite in memory), `pglite` (PGlite in a fresh DATA_DIR) and `postgres` (a fresh database
// on a throwaway PostgreSQL cluster started with pg_ctl, shared by the tests of one file). Nothing sleeps
// for a fixed time: waits poll a condition with a real-time bound.
import { Agent, AgentConfig, type AgentConfigShape, Connection, Kubernetes, type KubernetesOptions, readAgentConfig } from "@streamspace/agent"
import { AgentHub, CommandDispatcher, ControlPlane, ControlPlaneConfig, type PresenceEvent, Sessions } from "@streamspace/control-plane"
import { KubeTestServer, type KubeTestServerHandle } from "@streamspace/kube-testserver"
import { VncTestServer } from "@streamspace/vnc-testserver"
import { Clock, ConfigProvider, Context, Effect, Exit, Layer, Redacted, Scope, Stream } from "effect"
import { createHmac } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { startPostgres } from "../../../control-plane/test/support/postgres.ts"

export const NAMESPACE = "streamspace"
export const JWT_SECRET = "system-jwt-secret-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
export const BOOTSTRAP_TOKEN = "system-bootstrap-token-9a8b7c6d5e4f30211203f4e5"

/** Short agent-side Kubernetes retries. */
export const fastKube: KubernetesOptions = {
  retryBase: "20 millis",
  retryTimes: 4,
  maxRetryAfter: "2 seconds",
  requestTimeout: "5 seconds",
  failingAfter: "300 millis"
}

// ---------------------------------------------------------------------------------------------- waiting

const tick = (ms = 20) => Effect.promise(() => new Promise<void>((r) => setTimeout(r, ms)))

/** Polls `check` (real time) until it yields something other than undefined/false; fails after `timeoutMs`. */
export const waitFor = <A, E, R>(what: string, check: Effect.Effect<A | undefined | false, E, R>, timeoutMs = 15_000): Effect.Effect<A, E | Error, R> =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const a = yield* check
      if (a !== undefined && a !== false) return a as A
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      yield* tick()
    }
  })

/** A TCP port that was free a moment ago (to restart a control plane on the same address). */
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

/** An HS256 JWT; `secret` defaults to JWT_SECRET. */
export const signJwt = (claims: Record<string, unknown>, options: { readonly secret?: string; readonly ttlSec?: number } = {}): string => {
  const now = Math.floor(Date.now() / 1000)
  const head = b64({ alg: "HS256", typ: "JWT" })
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

export const request = (
  base: string,
  method: string,
  path: string,
  options: { readonly token?: string; readonly body?: unknown; readonly raw?: string; readonly headers?: Record<string, string> } = {}
) =>
  Effect.promise(async (): Promise<ApiResponse> => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
    let body: string | undefined = options.raw
    if (options.body !== undefined) body = JSON.stringify(options.body)
    if (body !== undefined && headers["content-type"] === undefined) headers["content-type"] = "application/json"
    // Bounded: a request that hangs fails the test with its path instead of timing the whole test out.
    const res = await fetch(`${base}${path}`, { method, headers, body: body ?? null, signal: AbortSignal.timeout(10_000) }).catch((e) => {
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
      fresh: Effect.sync(() => ({ DATABASE_URL: Redacted.value(pg.createDatabase(`system_${process.pid}_${++n}`)) }))
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

/** kube-testserver (kubelet within ~10 ms) with every port-forward going to a vnc-testserver of its own. */
export const makeCluster = Effect.gen(function*() {
  const kube = yield* KubeTestServer.make({ kubelet: { startDelayMs: 10, terminationDelayMs: 10, pvcBindDelayMs: 10 } })
  const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 64, height: 48, frameRate: 2, name: "system desktop" })), VncTestServer)
  kube.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
  const dir = yield* tempDir("system-cluster-")
  const kubeconfigPath = join(dir, "kubeconfig")
  writeFileSync(kubeconfigPath, kube.kubeconfigFor(kube.adminToken, { namespace: NAMESPACE, user: "admin" }))
  return { kube, vnc, dir, kubeconfigPath } satisfies Cluster
})

/** The session pods of a cluster, as session ids. */
export const sessionIdsIn = (cluster: Cluster): ReadonlyArray<string> =>
  cluster.kube.list("pods", NAMESPACE)
    .filter((p: any) => p.metadata?.labels?.app === "session")
    .map((p: any) => String(p.metadata?.labels?.["streamspace.io/session-id"]))

// ---------------------------------------------------------------------------------------------- control plane

export const controlPlaneEnv = (extra: Record<string, string> = {}): Record<string, string> => ({
  HOST: "127.0.0.1",
  PORT: "0",
  DATABASE_IN_MEMORY: "true",
  JWT_SECRET,
  AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
  LOG_LEVEL: "error",
  HEARTBEAT_INTERVAL: "1s",
  HEARTBEAT_MISSED_LIMIT: "5",
  PING_INTERVAL: "1s",
  COMMAND_TIMEOUT: "60s",
  ...extra
})

export interface ControlPlaneHandle {
  readonly url: string
  readonly wsUrl: string
  readonly port: number
  readonly admin: Client
  readonly hub: AgentHub["Service"]
  readonly dispatcher: CommandDispatcher["Service"]
  readonly sessions: Sessions["Service"]
  /** Every presence event (connects, disconnects, status changes) since start, in order. */
  readonly events: () => ReadonlyArray<PresenceEvent>
  /** Stops it gracefully (its scope closes); also done when the test's scope closes. */
  readonly stop: Effect.Effect<void>
}

/**
 * The control plane in this process on its own scope. `clock` replaces its Clock (a TestClock for heartbeat
 * deadlines); the rest of the system keeps real time.
 */
export const startControlPlane = (env: Record<string, string> = {}, options: { readonly clock?: Clock.Clock } = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    let stopped = false
    const stop = Effect.suspend(() => {
      if (stopped) return Effect.void
      stopped = true
      return Scope.close(scope, Exit.void)
    })
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
      events: () => events,
      stop
    } satisfies ControlPlaneHandle
  })

/**
 * One control plane (in-memory store) shared by the tests of a file: starting one costs seconds on a loaded
 * machine. Tests stay independent by using their own agent ids, users and clusters.
 */
export class SharedControlPlane extends Context.Service<SharedControlPlane, ControlPlaneHandle>()("e2e/SharedControlPlane") {
  static readonly layer = (env: Record<string, string> = {}) => Layer.effect(SharedControlPlane, startControlPlane(env))
  /** On a fresh database of the SystemDb in context (which stays available to the tests). */
  static readonly layerOnDb = <E>(db: Layer.Layer<SystemDb, E>) =>
    Layer.effect(SharedControlPlane, Effect.gen(function*() {
      const d = yield* SystemDb
      return yield* startControlPlane(yield* d.fresh)
    })).pipe(
      Layer.provideMerge(db)
    )
}

/** Options for `layer(...)` blocks of system tests: real time throughout (they talk to real sockets). */
export const layerOptions = { timeout: "120 seconds", excludeTestServices: true } as const

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
  PING_INTERVAL: "1s",
  PING_TIMEOUT: "2s",
  LOG_LEVEL: "error",
  ...extra
})

export interface AgentHandle {
  readonly connection: Connection["Service"]
  /** Graceful shutdown (the agent's scope closes); also done when the test's scope closes. */
  readonly stop: Effect.Effect<void>
}

/** A real agent in this process (health and metrics on port 0), on its own scope. */
export const startAgent = (env: Record<string, string>, overrides: Partial<AgentConfigShape> = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    let stopped = false
    const stop = Effect.suspend(() => {
      if (stopped) return Effect.void
      stopped = true
      return Scope.close(scope, Exit.void)
    })
    yield* Effect.addFinalizer(() => stop)
    const config = Layer.effect(
      AgentConfig,
      readAgentConfig.pipe(
        Effect.map((c): AgentConfigShape => ({ ...c, healthPort: 0, metricsPort: 0, ...overrides })),
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
        Effect.orDie
      )
    )
    const ctx = yield* Layer.buildWithScope(Agent.layerKubernetes(Kubernetes.layerWith(fastKube)).pipe(Layer.provideMerge(config)), scope).pipe(Effect.orDie)
    return { connection: Context.get(ctx, Connection), stop } satisfies AgentHandle
  })

/** The agent as the API shows it, or undefined while the control plane does not know it. */
export const agentView = (cp: { readonly admin: Client }, agentId: string) =>
  Effect.map(cp.admin.get(`/agents/${agentId}`), (r) => (r.status === 200 ? r.body : undefined))

export const waitForAgent = (cp: { readonly admin: Client }, agentId: string, what: string, check: (a: any) => boolean, timeoutMs = 15_000) =>
  waitFor(`agent ${agentId} ${what}`, Effect.map(agentView(cp, agentId), (a) => (a !== undefined && check(a) ? a : undefined)), timeoutMs)

export const waitForOnline = (cp: { readonly admin: Client }, agentId: string, timeoutMs = 15_000) =>
  waitForAgent(cp, agentId, "approved, connected and online", (a) => a.enrollment === "approved" && a.connected === true && a.status === "online", timeoutMs)

/** Waits for the agent to enrol as pending, approves it over the API and waits until it is online. */
export const approveAgent = (cp: { readonly admin: Client }, agentId: string) =>
  Effect.gen(function*() {
    yield* waitForAgent(cp, agentId, "pending", (a) => a.enrollment === "pending" && a.connected === true)
    const approved = yield* cp.admin.post(`/agents/${agentId}/approve`)
    if (approved.status !== 200) return yield* Effect.die(new Error(`approve failed: ${approved.status} ${approved.text}`))
    return yield* waitForOnline(cp, agentId)
  })

/** Starts an agent and enrols it. */
export const startApprovedAgent = (cp: ControlPlaneHandle, env: Record<string, string>) =>
  Effect.gen(function*() {
    const agent = yield* startAgent(env)
    yield* approveAgent(cp, env.AGENT_ID!)
    return agent
  })

/** Waits for a session to reach one of `states`. */
export const waitForSession = (client: Client, id: string, states: ReadonlyArray<string>, timeoutMs = 15_000) =>
  waitFor(
    `session ${id} in ${states.join("|")}`,
    Effect.map(client.get(`/sessions/${id}`), (r) => (r.status === 200 && states.includes(r.body.state) ? r.body : undefined)),
    timeoutMs
  )
