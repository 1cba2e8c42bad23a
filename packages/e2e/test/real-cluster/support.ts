// Support for the real-cluster suite: the shared cluster (from the global setup), kubectl and helm as its
// admin, namespaces, service-account tokens, and the two halves run as a user runs them: the control plane
// and the agent as processes (`node packages/*/src/main.ts`), the agent with the configuration its chart
// deploys and the chart's ServiceAccount token, so the chart's Role is what authorises it.
import { RfbClient } from "@streamspace/vnc-testserver"
import { freePort, type Proc, repoRoot, startProcess, toolPath, waitForPromise, waitReady } from "@streamspace/testbed"
import { execFile } from "node:child_process"
import { createHmac, randomBytes } from "node:crypto"
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { inject } from "vitest"
import { createWebSocketStream, WebSocket } from "ws"
import { parse as parseYaml } from "yaml"
import type { RealClusterInfo } from "./globalSetup.ts"

export { repoRoot } from "@streamspace/testbed"

let own: RealClusterInfo | undefined

/** The cluster this file works on: the suite's shared one, unless the file started its own (`useCluster`). */
export const cluster = (): RealClusterInfo => own ?? inject("realCluster")

/** For a file that needs a cluster of its own (to restart its API server, say). */
export const useCluster = (info: RealClusterInfo) => {
  own = info
}

export interface CommandResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

const run = (file: string, args: ReadonlyArray<string>, input?: string, env?: NodeJS.ProcessEnv) =>
  new Promise<CommandResult>((resolve) => {
    const child = execFile(file, args, { maxBuffer: 64 * 1024 * 1024, env: env ?? process.env }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr: stderr || (err?.message ?? "") }))
    child.stdin?.end(input ?? "")
  })

/** kubectl as the cluster admin (or with another kubeconfig); never throws. */
export const kubectl = (args: ReadonlyArray<string>, options: { readonly input?: string; readonly kubeconfig?: string } = {}) =>
  run(toolPath("kubectl"), ["--kubeconfig", options.kubeconfig ?? cluster().adminKubeconfig, ...args], options.input)

/** kubectl that must succeed; returns stdout. */
export const kubectlOk = async (args: ReadonlyArray<string>, options: { readonly input?: string; readonly kubeconfig?: string } = {}) => {
  const r = await kubectl(args, options)
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed (exit ${r.code}): ${r.stderr}`)
  return r.stdout
}

/** `kubectl get -o json`, parsed. */
export const getJson = async <A = any>(args: ReadonlyArray<string>): Promise<A> => JSON.parse(await kubectlOk(["get", ...args, "-o", "json"])) as A

export const helm = (args: ReadonlyArray<string>) =>
  run(toolPath("helm"), ["--kubeconfig", cluster().adminKubeconfig, ...args])

/** A fresh namespace (a random suffix keeps files and reruns apart), enforcing Pod Security "restricted" by default. */
export const createNamespace = async (prefix: string, options: { readonly enforce?: "restricted" | "baseline" | "privileged" } = {}) => {
  const name = `${prefix}-${randomBytes(3).toString("hex")}`
  await kubectlOk(["apply", "-f", "-"], {
    input: JSON.stringify({
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name, labels: { "pod-security.kubernetes.io/enforce": options.enforce ?? "restricted" } }
    })
  })
  return name
}

/** A token for a ServiceAccount (TokenRequest), optionally bound to a Secret so that deleting it revokes the token. */
export const serviceAccountToken = async (namespace: string, serviceAccount: string, boundSecret?: string) =>
  (await kubectlOk([
    "-n",
    namespace,
    "create",
    "token",
    serviceAccount,
    "--duration=1h",
    ...(boundSecret === undefined ? [] : ["--bound-object-kind=Secret", `--bound-object-name=${boundSecret}`])
  ])).trim()

/** A kubeconfig file for `user` (its kubeconfig entry: token, tokenFile, exec...) against the shared cluster. */
export const writeKubeconfig = (dir: string, user: Record<string, unknown>, namespace = "default") => {
  const file = path.join(dir, `kubeconfig-${randomBytes(3).toString("hex")}`)
  const c = cluster()
  writeFileSync(file, JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "real", cluster: { server: c.server, "certificate-authority": c.caFile } }],
    users: [{ name: "agent", user }],
    contexts: [{ name: "real", context: { cluster: "real", user: "agent", namespace } }],
    "current-context": "real"
  }))
  return file
}

export const tempDir = (prefix: string) => mkdtempSync(path.join(tmpdir(), prefix))

/** `value` as JSON in a new temporary file (JSON is YAML, for helm --values). */
const writeJson = (value: unknown) => {
  const file = path.join(tempDir("values-"), "values.json")
  writeFileSync(file, JSON.stringify(value))
  return file
}

// ---------------------------------------------------------------------------------------------- the control plane

export const JWT_SECRET = randomBytes(32).toString("hex")
export const BOOTSTRAP_TOKEN = randomBytes(32).toString("hex")

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
export const signJwt = (claims: Record<string, unknown>) => {
  const now = Math.floor(Date.now() / 1000)
  const head = b64({ alg: "HS256", typ: "JWT" })
  const body = b64({ iat: now, exp: now + 3600, ...claims })
  return `${head}.${body}.${createHmac("sha256", JWT_SECRET).update(`${head}.${body}`).digest("base64url")}`
}

export interface Api {
  readonly get: (p: string) => Promise<{ status: number; body: any }>
  readonly post: (p: string, body?: unknown) => Promise<{ status: number; body: any }>
  readonly del: (p: string) => Promise<{ status: number; body: any }>
}

const api = (base: string, token: string): Api => {
  const call = async (method: string, p: string, body?: unknown) => {
    const res = await fetch(`${base}/api/v1${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) })
    })
    const text = await res.text()
    let parsed: unknown = text
    try {
      parsed = JSON.parse(text)
    } catch {}
    return { status: res.status, body: parsed as any }
  }
  return { get: (p) => call("GET", p), post: (p, b) => call("POST", p, b ?? {}), del: (p) => call("DELETE", p) }
}

export interface ControlPlane {
  readonly url: string
  readonly wsUrl: string
  readonly admin: Api
  readonly as: (sub: string) => Api
  readonly proc: Proc
  readonly stop: () => Promise<void>
}

const logDir = () => {
  const dir = path.join(cluster().dir, "logs", "e2e")
  mkdirSync(dir, { recursive: true })
  return dir
}

/** The control plane as its image runs it (by default on an in-memory database), on a free loopback port. */
export const startControlPlane = async (name: string, env: Record<string, string> = {}): Promise<ControlPlane> => {
  const port = await freePort()
  const proc = startProcess(`control-plane-${name}`, path.join(repoRoot, "node_modules/.bin/node"), [path.join(repoRoot, "packages/control-plane/src/main.ts")], logDir(), {
    ...process.env,
    DATABASE_IN_MEMORY: "true",
    JWT_SECRET,
    AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
    LOG_FORMAT: "json",
    LOG_LEVEL: "info",
    ...env,
    // The test's own address, whatever `env` says.
    HOST: "127.0.0.1",
    PORT: String(port)
  })
  const url = `http://127.0.0.1:${port}`
  await waitReady(proc, "/api/v1/health", async () => (await fetch(`${url}/api/v1/health`)).ok)
  return {
    url,
    wsUrl: url.replace(/^http/, "ws"),
    admin: api(url, signJwt({ sub: "admin", role: "admin" })),
    as: (sub) => api(url, signJwt({ sub, role: "user" })),
    proc,
    stop: () => proc.stop()
  }
}

// ---------------------------------------------------------------------------------------------- the agent

/**
 * The agent container's environment as the cluster would give it: env values, Secret and ConfigMap references
 * resolved, and ConfigMap volumes written out under `root` (with variables that point into a mount moved there).
 */
export const deployedEnv = async (namespace: string, deployment: string, root = tempDir("agent-mounts-")): Promise<Record<string, string>> => {
  const d = await getJson(["-n", namespace, "deployment", deployment])
  const pod = d.spec.template.spec
  const container = pod.containers[0]
  const env: Record<string, string> = {}
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value
    else if (e.valueFrom?.secretKeyRef !== undefined) {
      const s = await getJson(["-n", namespace, "secret", e.valueFrom.secretKeyRef.name])
      env[e.name] = Buffer.from(s.data[e.valueFrom.secretKeyRef.key], "base64").toString("utf8")
    } else if (e.valueFrom?.configMapKeyRef !== undefined) {
      const c = await getJson(["-n", namespace, "configmap", e.valueFrom.configMapKeyRef.name])
      env[e.name] = c.data[e.valueFrom.configMapKeyRef.key]
    }
  }
  for (const mount of container.volumeMounts ?? []) {
    const volume = (pod.volumes ?? []).find((v: any) => v.name === mount.name)
    if (volume?.configMap === undefined) continue
    const data = (await getJson(["-n", namespace, "configmap", volume.configMap.name])).data ?? {}
    const dir = path.join(root, mount.mountPath)
    mkdirSync(dir, { recursive: true })
    for (const [key, value] of Object.entries(data)) writeFileSync(path.join(dir, key), value as string)
    for (const [name, value] of Object.entries(env)) {
      if (value.startsWith(`${mount.mountPath}/`)) env[name] = path.join(root, value)
    }
  }
  return env
}

/** The files a pod's service-account volume holds: token, ca.crt, namespace. Rewrite `token` to rotate it. */
export const serviceAccountDir = (dir: string, token: string, namespace: string) => {
  const sa = path.join(dir, "serviceaccount")
  mkdirSync(sa, { recursive: true })
  writeFileSync(path.join(sa, "token"), token)
  writeFileSync(path.join(sa, "ca.crt"), readFileSync(cluster().caFile))
  writeFileSync(path.join(sa, "namespace"), namespace)
  return sa
}

export interface AgentProcess {
  readonly proc: Proc
  readonly healthUrl: string
  readonly metricsUrl: string
  readonly stop: () => Promise<void>
}

/** The agent process with `env` (ports for health and metrics are made free; everything else is the caller's). */
export const startAgentProcess = async (name: string, env: Record<string, string>): Promise<AgentProcess> => {
  const [health, metrics] = await Promise.all([freePort(), freePort()])
  const proc = startProcess(`agent-${name}`, path.join(repoRoot, "node_modules/.bin/node"), [path.join(repoRoot, "packages/agent/src/main.ts")], logDir(), {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    LOG_FORMAT: "json",
    RECONNECT_DELAY: "200ms",
    MAX_RECONNECT_DELAY: "2s",
    ...env,
    HEALTH_PORT: String(health),
    METRICS_PORT: String(metrics)
  })
  const healthUrl = `http://127.0.0.1:${health}`
  await waitReady(proc, "/health", async () => (await fetch(`${healthUrl}/health`)).ok)
  return { proc, healthUrl, metricsUrl: `http://127.0.0.1:${metrics}/metrics`, stop: () => proc.stop() }
}

/** In-cluster settings of a pod: the API server's address and the service-account files. */
export const inClusterEnv = (saDir: string): Record<string, string> => {
  const u = new URL(cluster().server)
  return { KUBERNETES_SERVICE_HOST: u.hostname, KUBERNETES_SERVICE_PORT: u.port, SERVICE_ACCOUNT_DIR: saDir }
}

/** Approves a pending agent and waits until it is online. */
export const approveAndWait = async (cp: ControlPlane, agentId: string) => {
  await waitForPromise(`agent ${agentId} to enrol`, async () => (await cp.admin.get(`/agents/${agentId}`)).status === 200, { timeout: 30_000 })
  const approved = await cp.admin.post(`/agents/${agentId}/approve`)
  if (approved.status !== 200) throw new Error(`approve ${agentId}: ${approved.status} ${JSON.stringify(approved.body)}`)
  return waitOnline(cp, agentId)
}

export const waitOnline = (cp: ControlPlane, agentId: string) =>
  waitForPromise(`agent ${agentId} online`, async () => {
    const a = await cp.admin.get(`/agents/${agentId}`)
    return a.status === 200 && a.body.connected === true && a.body.status === "online" ? a.body : undefined
  }, { timeout: 60_000 })

/** Waits for a session to reach one of `states`; fails early, with the session, when it ends up elsewhere. */
export const waitSession = (client: Api, id: string, states: ReadonlyArray<string>, timeout = 60_000) =>
  waitForPromise(`session ${id} in ${states.join("|")}`, async () => {
    const s = await client.get(`/sessions/${id}`)
    if (s.status === 200 && states.includes(s.body.state)) return s.body
    if (s.status === 200 && ["failed", "terminated"].includes(s.body.state) && !states.includes(s.body.state)) {
      throw new Error(`session ${id} is ${s.body.state}: ${JSON.stringify(s.body)}`)
    }
    return undefined
  }, { timeout })

// ---------------------------------------------------------------------------------------------- viewers

/** A viewer through the control plane's proxy (a fresh ticket, the `binary` subprotocol, as noVNC). */
export const openViewer = async (cp: ControlPlane, client: Api, sessionId: string) => {
  const t = await client.post(`/sessions/${sessionId}/vnc-ticket`)
  if (t.status !== 201) throw new Error(`vnc-ticket: ${t.status} ${JSON.stringify(t.body)}`)
  const ws = new WebSocket(`${cp.wsUrl}${t.body.url}`, ["binary"])
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve())
    ws.once("error", reject)
    ws.once("unexpected-response", (_q, res) => reject(new Error(`viewer upgrade refused: HTTP ${res.statusCode}`)))
  })
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() })))
  const rfb = await RfbClient.connect(createWebSocketStream(ws), { timeout: 20_000 })
  return { ws, rfb, closed }
}

/** The YAML documents of a file, parsed. */
export const yamlDocs = (text: string): Array<any> => text.split(/^---$/m).map((d) => parseYaml(d)).filter((d) => d !== null)

// ---------------------------------------------------------------------------------------------- a deployed agent

export interface DeployedAgent {
  readonly id: string
  /** The release's namespace (Deployment, ServiceAccount, token Secret). */
  readonly agentNamespace: string
  /** The namespace of its sessions (Role, credential Secret, pods, services, PVCs). */
  readonly namespace: string
  /** The agent container's environment as deployed (before the test's own ports and in-cluster settings). */
  readonly env: Record<string, string>
  /** The service-account folder the process reads (token, ca.crt, namespace). */
  readonly saDir: string
  readonly process: () => AgentProcess
  /** Starts the agent process again (after `stop`), with `extraEnv` on top of what the chart deployed. */
  readonly start: (extraEnv?: Record<string, string>) => Promise<AgentProcess>
  readonly stop: () => Promise<void>
}

/**
 * `helm install` of the agent chart (release "agent") into a new namespace, sessions in another one
 * (enforcing "restricted"), then the agent process as the chart's Deployment configures its container, with
 * in-cluster credentials of the chart's ServiceAccount; approved, and online.
 */
export const deployAgentWithChart = async (
  cp: ControlPlane,
  id: string,
  options: {
    /** `--set` values. */
    readonly values?: ReadonlyArray<string>
    /** A values file's content (for structured values such as agent.session.podTemplate). */
    readonly valuesFile?: object
    readonly extraEnv?: Record<string, string>
  } = {}
): Promise<DeployedAgent> => {
  const agentNamespace = await createNamespace(`${id}-agent`)
  const namespace = await createNamespace(`${id}-sessions`)
  const installed = await helm([
    "install", "agent", path.join(repoRoot, "helm/streamspace-agent"), "--namespace", agentNamespace, "--wait", "--timeout", "120s",
    "--set", `agent.id=${id}`,
    "--set", `agent.controlPlaneUrl=${cp.wsUrl}`,
    "--set", `agent.namespace=${namespace}`,
    "--set", "agent.allowInsecureTransport=true",
    "--set", `token.value=${BOOTSTRAP_TOKEN}`,
    ...(options.values ?? []).flatMap((v) => ["--set", v]),
    ...(options.valuesFile === undefined ? [] : ["--values", writeJson(options.valuesFile)])
  ])
  if (installed.code !== 0) throw new Error(`helm install failed: ${installed.stderr}`)
  const env = await deployedEnv(agentNamespace, "agent")
  const saDir = serviceAccountDir(tempDir("agent-sa-"), await serviceAccountToken(agentNamespace, "agent"), agentNamespace)
  let current: AgentProcess | undefined
  const start = async (extraEnv: Record<string, string> = {}) => {
    current = await startAgentProcess(id, { ...env, ...inClusterEnv(saDir), ...options.extraEnv, ...extraEnv })
    return current
  }
  await start()
  await approveAndWait(cp, id)
  return {
    id,
    agentNamespace,
    namespace,
    env,
    saDir,
    process: () => current!,
    start,
    stop: async () => {
      await current?.stop()
    }
  }
}
