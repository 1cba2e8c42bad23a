// Runs the quick start (`node packages/e2e/src/quickstart.ts`, what `npm start` runs) as a child process on
// a free port with its own data directory, reads the URL and admin token from its banner, and stops it
// with SIGINT as Ctrl-C would. Nothing here sleeps for a fixed time: every wait is on output or exit.
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

export const REPO = fileURLToPath(new URL("../../../../", import.meta.url))
export const NODE = `${REPO}node_modules/.bin/node`

export interface QuickStartProcess {
  readonly url: string
  readonly loginUrl: string
  readonly adminToken: string
  /** Everything printed so far (stdout and stderr). */
  output(): string
  /** SIGINT, then waits for the exit; resolves with the exit code. */
  stop(): Promise<number | null>
}

export interface QuickStartOptions {
  readonly dataDir: string
  readonly port?: number
  readonly env?: Record<string, string>
  /** How long to wait for the banner. */
  readonly timeoutMs?: number
}

const field = (text: string, label: string): string | undefined => new RegExp(`^\\s*${label}:\\s+(\\S+)`, "m").exec(text)?.[1]

export const startQuickStart = (options: QuickStartOptions): Promise<QuickStartProcess> =>
  new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(NODE, ["packages/e2e/src/quickstart.ts"], {
      cwd: REPO,
      // A clean environment: no KUBECONFIG from the machine, so the demo cluster is used.
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: process.env["HOME"] ?? "/tmp", PORT: String(options.port ?? 0), DATA_DIR: options.dataDir, ...options.env },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let out = ""
    let settled = false
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)))
    const handle: Omit<QuickStartProcess, "url" | "loginUrl" | "adminToken"> = {
      output: () => out,
      stop: () => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGINT")
        return exited
      }
    }
    const timer = setTimeout(() => {
      settled = true
      child.kill("SIGKILL")
      reject(new Error(`the quick start printed no banner within ${options.timeoutMs ?? 90_000} ms:\n${out}`))
    }, options.timeoutMs ?? 90_000)
    const onData = (chunk: Buffer) => {
      out += chunk.toString("utf8")
      if (settled || !out.includes("Press Ctrl-C")) return
      const url = field(out, "Web UI")
      const loginUrl = field(out, "Log in")
      const adminToken = field(out, "Admin token")
      settled = true
      clearTimeout(timer)
      if (url === undefined || loginUrl === undefined || adminToken === undefined) {
        child.kill("SIGKILL")
        reject(new Error(`the quick start banner lacks the URL, login link or token:\n${out}`))
      } else resolve({ ...handle, url, loginUrl, adminToken })
    }
    child.stdout!.on("data", onData)
    child.stderr!.on("data", onData)
    void exited.then((code) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      reject(new Error(`the quick start exited with ${code} before it was ready:\n${out}`))
    })
  })
