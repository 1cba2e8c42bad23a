// Starting the parts of the system under test as separate processes: control plane, agent, websockify.
import { createHmac } from "node:crypto"
import { existsSync, mkdtempSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { spawn } from "node:child_process"
import { waitForPromise } from "@streamspace/testbed"
import { agentLaunch } from "./agent-launch.ts"
import { BENCH_DIR, ROOT, type Proc, sleep, startProc } from "./util.ts"

export const JWT_SECRET = "bench-jwt-secret-bench-jwt-secret-0123456789"
export const BOOTSTRAP_TOKEN = "bench-bootstrap-token-0123456789"

/** BENCH_PROFILE=<dir>: the agent and control-plane processes write V8 CPU profiles there (node --cpu-prof). */
const profileArgs = (): Array<string> => (process.env.BENCH_PROFILE ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_PROFILE}`] : [])

export const tmp = (prefix: string) => mkdtempSync(join(tmpdir(), `ss-bench-${prefix}-`))

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer()
    s.once("error", reject)
    s.listen(0, "127.0.0.1", () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url")
/** An HS256 user JWT for the control plane's API. */
export const signJwt = (sub: string, role: "admin" | "user", ttlSec = 24 * 3600) => {
  const iat = Math.floor(Date.now() / 1000)
  const head = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ sub, role, iat, exp: iat + ttlSec })}`
  return `${head}.${createHmac("sha256", JWT_SECRET).update(head).digest("base64url")}`
}
export const ADMIN = () => signJwt("bench-admin", "admin")

/** The control plane as it ships: the package's own entry point, which composes the whole ControlPlane layer. */
export const cpEntry = (): string => join(ROOT, "packages", "control-plane", "src", "main.ts")

export interface ControlPlane {
  readonly proc: Proc
  readonly port: number
  readonly base: string
  readonly wsBase: string
  readonly dataDir: string
  readonly api: (method: string, path: string, body?: unknown, token?: string, timeoutMs?: number) => Promise<{ status: number; json: any }>
  readonly stop: () => Promise<void>
}

/** What the benchmarks need of a control plane's API: its addresses and an admin-token client (any replica or a balancer). */
export type ApiTarget = Pick<ControlPlane, "base" | "wsBase" | "api">

/** A JSON client for `base` that sends an admin token unless given another. */
export const apiClient = (base: string): ControlPlane["api"] => {
  const token = ADMIN()
  const api = async (method: string, path: string, body?: unknown, tok = token, timeoutMs = 120_000) => {
    const res = await fetch(`${base}${path}`, {
      method,
      headers: { authorization: `Bearer ${tok}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(timeoutMs)
    })
    const text = await res.text()
    let json: any
    try {
      json = JSON.parse(text)
    } catch {
      json = text
    }
    return { status: res.status, json }
  }
  return api
}

/** The ApiTarget of a control plane reached at `base` (http://host:port). */
export const apiTarget = (base: string): ApiTarget => ({ base, wsBase: base.replace(/^http/, "ws"), api: apiClient(base) })

export const startControlPlane = async (options: { port?: number; dataDir?: string; env?: Record<string, string>; args?: Array<string> } = {}): Promise<ControlPlane> => {
  const port = options.port ?? (await freePort())
  const dataDir = options.dataDir ?? tmp("cp")
  const proc = startProc("control-plane", [...profileArgs(), ...(options.args ?? []), cpEntry()], {
    HOST: "127.0.0.1",
    PORT: String(port),
    DATA_DIR: dataDir,
    JWT_SECRET,
    AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
    LOG_LEVEL: "warn",
    LOG_FORMAT: "json",
    HEARTBEAT_INTERVAL: "5s",
    // The benchmarks measure capacity with a few users and many sessions and viewers, not the per-user limits.
    MAX_SESSIONS_PER_USER: "0",
    SESSION_CREATES_PER_MINUTE: "0",
    MAX_VIEWERS_PER_SESSION: "0",
    MAX_VIEWERS_PER_USER: "0",
    ...options.env
  })
  const base = `http://127.0.0.1:${port}`
  const api = apiClient(base)
  await waitForPromise("control plane health", async () => {
    if (proc.child.exitCode !== null) throw new Error(`control plane exited ${proc.child.exitCode}:\n${proc.output().slice(-3000)}`)
    try {
      // A request that arrives while the server is still starting can hang: give each try 2 s.
      return (await fetch(`${base}/api/v1/health`, { signal: AbortSignal.timeout(2000) })).status === 200
    } catch {
      return false
    }
  }, { timeout: 90_000, interval: 50 })
  return { proc, port, base, wsBase: `ws://127.0.0.1:${port}`, dataDir, api, stop: () => proc.stop("SIGTERM", 15_000) }
}

export interface AgentProc {
  readonly proc: Proc
  readonly id: string
  /** Where its Prometheus /metrics listens. */
  readonly metricsPort: number
  readonly stop: () => Promise<void>
}

/** The real agent process, as it ships (agent-launch.ts: the bundle, the image's flags and ENV), against a kube-testserver kubeconfig. */
export const startAgent = async (options: { id: string; controlPlaneUrl: string; kubeconfig: string; token?: string; env?: Record<string, string>; args?: Array<string> }): Promise<AgentProc> => {
  const dir = tmp(`agent-${options.id}`)
  const kubeconfigPath = join(dir, "kubeconfig")
  writeFileSync(kubeconfigPath, options.kubeconfig)
  const launch = agentLaunch()
  const metricsPort = await freePort()
  const proc = startProc(`agent-${options.id}`, [...profileArgs(), ...launch.nodeArgs, ...(options.args ?? []), launch.entry], {
    ...launch.env,
    AGENT_ID: options.id,
    CONTROL_PLANE_URL: options.controlPlaneUrl,
    AGENT_TOKEN: options.token ?? BOOTSTRAP_TOKEN,
    KUBECONFIG: kubeconfigPath,
    NAMESPACE: "streamspace",
    HEALTH_PORT: String(await freePort()),
    METRICS_PORT: String(metricsPort),
    AGENT_CREDENTIAL_FILE: join(dir, "credential"),
    LOG_LEVEL: "warn",
    LOG_FORMAT: "json",
    HEARTBEAT_INTERVAL: "5s",
    MAX_SESSIONS: "200",
    ...options.env
  })
  return { proc, id: options.id, metricsPort: Number(options.env?.METRICS_PORT ?? metricsPort), stop: () => proc.stop("SIGTERM", 15_000) }
}

/** Connects a real agent to a real control plane and approves it (bootstrap token -> pending -> approved). */
export const enrollAgent = async (cp: ApiTarget, agentId: string) => {
  await waitForPromise(`agent ${agentId} pending`, async () => {
    const r = await cp.api("GET", `/api/v1/agents/${agentId}`)
    return r.status === 200 && (r.json.enrollment === "pending" || r.json.enrollment === "approved")
  }, { timeout: 60_000, interval: 50 })
  const r = await cp.api("GET", `/api/v1/agents/${agentId}`)
  if (r.json.enrollment === "pending") {
    const a = await cp.api("POST", `/api/v1/agents/${agentId}/approve`)
    if (a.status !== 200) throw new Error(`approve ${agentId}: ${a.status} ${JSON.stringify(a.json)}`)
  }
  await waitForPromise(`agent ${agentId} online`, async () => {
    const g = await cp.api("GET", `/api/v1/agents/${agentId}`)
    return g.status === 200 && g.json.connected === true && g.json.status === "online"
  }, { timeout: 60_000, interval: 50 })
}

export const ensureTemplate = async (cp: ApiTarget, name = "bench") => {
  const r = await cp.api("POST", "/api/v1/templates", { name, image: "bench/desktop:1", vnc_port: 5900, persistent_home: false })
  if (r.status !== 201 && r.status !== 409) throw new Error(`template: ${r.status} ${JSON.stringify(r.json)}`)
}

/** Creates a session through the API and waits until it is running. */
export const runningSession = async (cp: ApiTarget, token: string, template = "bench", ms = 60_000): Promise<string> => {
  const r = await cp.api("POST", "/api/v1/sessions", { template }, token)
  if (r.status !== 201) throw new Error(`create session: ${r.status} ${JSON.stringify(r.json)}`)
  const id = r.json.id as string
  await waitForPromise(`session ${id} running`, async () => {
    const g = await cp.api("GET", `/api/v1/sessions/${id}`, undefined, token)
    if (g.json.state === "failed") throw new Error(`session ${id} failed: ${g.json.reason} ${g.json.message}`)
    return g.json.state === "running"
  }, { timeout: ms, interval: 20 })
  return id
}

// ---- websockify ---------------------------------------------------------------------------------

export const websockifyAvailable = (): boolean => {
  try {
    return spawn("which", ["websockify"]).pid !== undefined && existsSync("/usr/bin/websockify")
  } catch {
    return false
  }
}

/** Installs the Debian package when missing (the machines run as root). */
export const ensureWebsockify = async (): Promise<boolean> => {
  if (existsSync("/usr/bin/websockify")) return true
  console.log("websockify missing: running bench/setup.sh (apt-get install -y websockify)")
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn("bash", [join(BENCH_DIR, "setup.sh")], { stdio: "inherit" })
    p.once("exit", resolve)
  })
  return code === 0 && existsSync("/usr/bin/websockify")
}

export const startWebsockify = async (targetPort: number) => {
  const port = await freePort()
  const child = spawn("/usr/bin/websockify", [`127.0.0.1:${port}`, `127.0.0.1:${targetPort}`], { stdio: ["ignore", "pipe", "pipe"] })
  let out = ""
  child.stdout.on("data", (d: Buffer) => (out += d))
  child.stderr.on("data", (d: Buffer) => (out += d))
  await waitForPromise("websockify listening", () => /Listen on|listening|proxying/i.test(out) || child.exitCode !== null, { timeout: 15_000 })
  if (child.exitCode !== null) throw new Error(`websockify exited: ${out}`)
  await sleep(200)
  return {
    port,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null) return
      child.kill("SIGTERM")
      await new Promise((r) => child.once("exit", r))
    }
  }
}
