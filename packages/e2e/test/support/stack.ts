// The whole system for reliability and security tests, all on 127.0.0.1: kube-testserver (with every pod's
// port-forward going to one vnc-testserver), the control plane (in-process as `ControlPlane.layerNoDeps`, or as
// `node packages/control-plane/src/main.ts` in a child process that a test can SIGKILL), and agents (in-process
// as `Agent.layerKubernetes`, or `packages/agent/src/main.ts` as a child process). Plus an API client, HS256
// user tokens and bounded polling. Nothing here sleeps for a fixed time.
import { Agent, AgentConfig, type AgentConfigShape, Kubernetes, type KubernetesOptions, readAgentConfig } from "@streamspace/agent"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { KubeTestServer, type KubeTestServerHandle, type ServerOptions } from "@streamspace/kube-testserver"
import { RfbClient, VncTestServer } from "@streamspace/vnc-testserver"
import { ConfigProvider, Context, Effect, Exit, Layer, Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { createHmac } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import type { AddressInfo } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { createWebSocketStream, WebSocket } from "ws"

export const REPO = fileURLToPath(new URL("../../../../", import.meta.url))
export const NODE = `${REPO}node_modules/.bin/node`
export const NAMESPACE = "streamspace"
export const JWT_SECRET = "stack-jwt-secret-5d1f0c9a8b7e6d5c4b3a29180f7e6d5c"
export const BOOTSTRAP_TOKEN = "stack-bootstrap-token-a1b2c3d4e5f60718293a4b5c"

/** Short agent-side Kubernetes retries, so fault tests finish quickly. */
export const fastKube: KubernetesOptions = {
  retryBase: "20 millis",
  retryTimes: 4,
  maxRetryAfter: "2 seconds",
  requestTimeout: "5 seconds",
  failingAfter: "300 millis",
  degradedWindow: "1500 millis"
}

// ---------------------------------------------------------------------------------------------- polling

const tick = (ms = 20) => Effect.promise(() => new Promise<void>((r) => setTimeout(r, ms)))

/** Polls `check` in real time until it returns something other than undefined/false; fails after `timeoutMs`. */
export const waitFor = <A, E, R>(what: string, check: Effect.Effect<A | undefined | false, E, R>, timeoutMs = 10_000): Effect.Effect<A, E | Error, R> =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    while (true) {
      const a = yield* check
      if (a !== undefined && a !== false) return a as A
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`))
      yield* tick()
    }
  })

/** A TCP port that was free a moment ago (for child processes and restarts on the same port). */
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

// ---------------------------------------------------------------------------------------------- user tokens

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

// ---------------------------------------------------------------------------------------------- API client

export interface ApiResponse {
  readonly status: number
  readonly body: any
  readonly text: string
}

export const request = (base: string, method: string, path: string, options: { readonly token?: string; readonly body?: unknown; readonly raw?: string | Uint8Array; readonly headers?: Record<string, string> } = {}) =>
  Effect.promise(async (): Promise<ApiResponse> => {
    const headers: Record<string, string> = { ...options.headers }
    if (options.token !== undefined) headers.authorization = `Bearer ${options.token}`
    let body: string | Uint8Array | undefined = options.raw
    if (options.body !== undefined) {
      body = JSON.stringify(options.body)
      headers["content-type"] = "application/json"
    }
    const res = await fetch(`${base}${path}`, { method, headers, body: body as never })
    const text = await res.text()
    let parsed: unknown = undefined
    try {
      parsed = JSON.parse(text)
    } catch {
      // not JSON: keep the text
    }
    return { status: res.status, body: parsed, text }
  })

export const api = (base: string, token: string) => ({
  get: (path: string) => request(base, "GET", `/api/v1${path}`, { token }),
  post: (path: string, body?: unknown) => request(base, "POST", `/api/v1${path}`, { token, body: body ?? {} }),
  patch: (path: string, body: unknown) => request(base, "PATCH", `/api/v1${path}`, { token, body }),
  del: (path: string) => request(base, "DELETE", `/api/v1${path}`, { token })
})

// ---------------------------------------------------------------------------------------------- cluster

export interface Cluster {
  readonly kube: KubeTestServerHandle
  readonly vnc: VncTestServer["Service"]
  readonly dir: string
  readonly kubeconfigPath: string
}

/** kube-testserver (kubelet runs pods within ~10 ms) with every port-forward to one vnc-testserver. */
export const makeCluster = (options: ServerOptions = {}) =>
  Effect.gen(function*() {
    const kube = yield* KubeTestServer.make({ kubelet: { startDelayMs: 10, terminationDelayMs: 10, pvcBindDelayMs: 10 }, ...options })
    const vncCtx = yield* Layer.build(VncTestServer.layer({ width: 64, height: 48, frameRate: 2 }))
    const vnc = Context.get(vncCtx, VncTestServer)
    kube.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
    const dir = yield* tempDir("stack-cluster-")
    const kubeconfigPath = join(dir, "kubeconfig")
    writeFileSync(kubeconfigPath, kube.kubeconfigFor(kube.adminToken, { namespace: NAMESPACE, user: "admin" }))
    return { kube, vnc, dir, kubeconfigPath } satisfies Cluster
  })

/** Pods of the namespace carrying the session label, by session id. */
export const sessionPods = (cluster: Cluster) =>
  cluster.kube.list("pods", NAMESPACE).filter((p: any) => p.metadata?.labels?.app === "session")

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

export interface ControlPlaneHandle {
  readonly url: string
  readonly wsUrl: string
  readonly port: number
  readonly admin: ReturnType<typeof api>
  /** Stops it (graceful: the scope closes). */
  readonly stop: Effect.Effect<void>
}

/** The control plane in this process, on its own scope. */
export const startControlPlane = (env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const ctx = yield* Layer.buildWithScope(
      ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromRecord(controlPlaneEnv(env)))),
      scope
    ).pipe(Effect.orDie)
    const cp = Context.get(ctx, ControlPlane)
    const url = `http://127.0.0.1:${cp.port}`
    const stop = Scope.close(scope, Exit.void)
    yield* Effect.addFinalizer(() => stop)
    return { url, wsUrl: `ws://127.0.0.1:${cp.port}`, port: cp.port, admin: api(url, adminToken()), stop } satisfies ControlPlaneHandle
  })

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
      90_000 // a fresh PGlite and module loading take long on a loaded 2-core machine
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
  /** Graceful shutdown (the agent's scope closes). */
  readonly stop: Effect.Effect<void>
}

/** An agent in this process (health and metrics on port 0), on its own scope. */
export const startAgent = (env: Record<string, string>, overrides: Partial<AgentConfigShape> = {}, kube: KubernetesOptions = fastKube) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const config = Layer.effect(
      AgentConfig,
      readAgentConfig.pipe(
        Effect.map((c): AgentConfigShape => ({ ...c, healthPort: 0, metricsPort: 0, ...overrides })),
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
        Effect.orDie
      )
    )
    yield* Layer.buildWithScope(Agent.layerKubernetes(Kubernetes.layerWith(kube)).pipe(Layer.provideMerge(config)), scope).pipe(Effect.orDie)
    const stop = Scope.close(scope, Exit.void)
    yield* Effect.addFinalizer(() => stop)
    return { stop } satisfies AgentHandle
  })

/** The agent's view on the control plane, or undefined while it is unknown there. */
export const agentView = (cp: { readonly admin: ReturnType<typeof api> }, agentId: string) =>
  Effect.map(cp.admin.get(`/agents/${agentId}`), (r) => (r.status === 200 ? r.body : undefined))

/** Waits for the agent to appear pending, approves it, and waits until it is connected and online. */
export const approveAgent = (cp: { readonly admin: ReturnType<typeof api> }, agentId: string) =>
  Effect.gen(function*() {
    yield* waitFor(`agent ${agentId} to enrol as pending`, Effect.map(agentView(cp, agentId), (a) => a?.enrollment === "pending"), 30_000)
    const approved = yield* cp.admin.post(`/agents/${agentId}/approve`)
    if (approved.status !== 200) return yield* Effect.die(new Error(`approve failed: ${approved.text}`))
    yield* waitForOnline(cp, agentId)
  })

export const waitForOnline = (cp: { readonly admin: ReturnType<typeof api> }, agentId: string, timeoutMs = 15_000) =>
  waitFor(
    `agent ${agentId} online and connected`,
    Effect.map(agentView(cp, agentId), (a) => a?.enrollment === "approved" && a.connected === true && a.status === "online" ? a : undefined),
    timeoutMs
  )

/** Waits for a session to reach `state` (as the owner or an admin sees it). */
export const waitForSession = (client: ReturnType<typeof api>, id: string, states: ReadonlyArray<string>, timeoutMs = 15_000) =>
  waitFor(
    `session ${id} in ${states.join("|")}`,
    Effect.map(client.get(`/sessions/${id}`), (r) => (r.status === 200 && states.includes(r.body.state) ? r.body : undefined)),
    timeoutMs
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
