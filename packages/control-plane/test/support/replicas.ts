// N control-plane replicas sharing one PostgreSQL, as separate OS processes (`node src/main.ts` with env, as
// an operator runs them), behind the testbed's TCP round-robin balancer (like a Kubernetes Service). Each
// replica's output is kept (and written to a log file) so a test can wait for what it logs. A replica can be
// killed (SIGKILL), stopped (SIGTERM) and started again on the same port; its database connection can be
// routed through a TCP proxy that the test cuts (a network partition from PostgreSQL).
import { type Backend, startBalancer, type RunningBalancer } from "@streamspace/testbed"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { TEST_JWT_SECRET } from "./jwt.ts"

const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url))

export const BOOTSTRAP_TOKEN = "bootstrap-token-0123456789abcdef0123456789"
export const TEST_CLUSTER_SECRET = "test-cluster-secret-0123456789abcdef0123456789"

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/** A TCP proxy on loopback to `target`; `cut` drops every connection and refuses new ones, `heal` accepts again. */
export interface Cuttable {
  readonly port: number
  readonly cut: () => void
  readonly heal: () => void
  readonly close: () => Promise<void>
}

export const startProxy = async (target: { host: string; port: number }): Promise<Cuttable> => {
  let open = true
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    if (!open) return client.destroy()
    const upstream = net.connect(target.port, target.host)
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.once("close", () => sockets.delete(s))
      s.on("error", () => s.destroy())
    }
    client.once("close", () => upstream.destroy())
    upstream.once("close", () => client.destroy())
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()))
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    cut: () => {
      open = false
      for (const s of sockets) s.destroy()
    },
    heal: () => {
      open = true
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      })
  }
}

export interface Replica {
  readonly index: number
  readonly port: number
  readonly url: string
  /** Everything the process wrote so far (all its runs). */
  readonly output: () => string
  /** What the current (or last) run of the process wrote. */
  readonly thisRun: () => string
  readonly running: () => boolean
  /** Resolves once the process answers /api/v1/health. */
  readonly start: () => Promise<void>
  readonly kill: (signal?: NodeJS.Signals) => Promise<void>
}

export interface ReplicaSet {
  readonly replicas: ReadonlyArray<Replica>
  readonly balancer: RunningBalancer
  /** Waits until some replica's output (after `from` characters of it) matches. */
  readonly waitForLog: (replica: Replica, pattern: RegExp, timeoutMs?: number, from?: number) => Promise<string>
  readonly close: () => Promise<void>
}

export interface ReplicaOptions {
  readonly databaseUrl: (index: number) => string
  readonly count: number
  readonly env?: Record<string, string>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const healthy = async (url: string): Promise<boolean> => {
  try {
    const res = await fetch(`${url}/api/v1/health`, { signal: AbortSignal.timeout(1000) })
    return res.ok
  } catch {
    return false
  }
}

export const startReplicas = async (options: ReplicaOptions): Promise<ReplicaSet> => {
  const logDir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-replicas-"))
  const replicas: Array<Replica> = []
  for (let index = 0; index < options.count; index++) {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    let out = ""
    let runStart = 0
    let child: ChildProcess | undefined
    let exited: Promise<void> = Promise.resolve()
    const logFile = path.join(logDir, `replica-${index}.log`)
    const start = async () => {
      runStart = out.length
      child = spawn(process.execPath, [MAIN], {
        env: {
          PATH: process.env["PATH"] ?? "",
          HOST: "127.0.0.1",
          PORT: String(port),
          DATABASE_URL: options.databaseUrl(index),
          JWT_SECRET: TEST_JWT_SECRET,
          // required with DATABASE_URL since the replica-to-replica relay (ha-peer)
          CLUSTER_SECRET: TEST_CLUSTER_SECRET,
          AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
          LOG_FORMAT: "text",
          LOG_LEVEL: "info",
          REPLICA_LEASE: "4s",
          HEARTBEAT_INTERVAL: "1s",
          MAX_SESSIONS_PER_USER: "0",
          SESSION_CREATES_PER_MINUTE: "0",
          MAX_CONNECTIONS_PER_ADDRESS: "0",
          ...options.env
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      const c = child
      const append = (b: Buffer) => {
        out += b.toString("utf8")
        fs.appendFileSync(logFile, b)
      }
      c.stdout!.on("data", append)
      c.stderr!.on("data", append)
      exited = new Promise((resolve) => c.once("exit", () => resolve()))
      const deadline = Date.now() + 60_000
      while (!(await healthy(url))) {
        if (c.exitCode !== null || c.signalCode !== null) throw new Error(`replica ${index} exited at start:\n${out.slice(-4000)}`)
        if (Date.now() > deadline) throw new Error(`replica ${index} not healthy after 60 s:\n${out.slice(-4000)}`)
        await sleep(50)
      }
    }
    replicas.push({
      index,
      port,
      url,
      output: () => out,
      thisRun: () => out.slice(runStart),
      running: () => child !== undefined && child.exitCode === null && child.signalCode === null,
      start,
      kill: async (signal = "SIGKILL") => {
        if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill(signal)
        await exited
      }
    })
  }
  await Promise.all(replicas.map((r) => r.start()))
  const balancer = await startBalancer(replicas.map((r): Backend => ({ host: "127.0.0.1", port: r.port })))
  return {
    replicas,
    balancer,
    waitForLog: async (replica, pattern, timeoutMs = 20_000, from = 0) => {
      const deadline = Date.now() + timeoutMs
      while (true) {
        const m = pattern.exec(replica.output().slice(from))
        if (m !== null) return m[0]
        if (Date.now() > deadline) throw new Error(`replica ${replica.index} did not log ${pattern} in ${timeoutMs} ms:\n${replica.output().slice(-3000)}`)
        await sleep(25)
      }
    },
    close: async () => {
      await balancer.close()
      await Promise.all(replicas.map((r) => r.kill("SIGTERM")))
    }
  }
}
