// A supervised child process of the test bed: output to a log file, a readiness wait, and a stop that
// escalates from SIGTERM to SIGKILL. Nothing here outlives the test process (the stop is also run at exit).
import { type ChildProcess, spawn } from "node:child_process"
import { closeSync, openSync, readFileSync } from "node:fs"
import { createServer } from "node:net"
import * as path from "node:path"

export interface Proc {
  readonly name: string
  readonly child: ChildProcess
  readonly logFile: string
  /** Resolves when the process has exited. */
  readonly exited: Promise<number | null>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it is gone. */
  readonly stop: (graceMs?: number) => Promise<void>
  /** The last lines of its log, for error messages. */
  readonly tail: (lines?: number) => string
}

const running = new Set<Proc>()
process.once("exit", () => {
  for (const p of running) p.child.kill("SIGKILL")
})

export const startProcess = (name: string, file: string, args: ReadonlyArray<string>, logDir: string, env?: NodeJS.ProcessEnv): Proc => {
  const logFile = path.join(logDir, `${name}.log`)
  const fd = openSync(logFile, "a")
  const child = spawn(file, args, { stdio: ["ignore", fd, fd], env: env ?? process.env })
  closeSync(fd)
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code) => resolve(code))
    child.once("error", () => resolve(-1))
  })
  const tail = (lines = 30) => {
    try {
      return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n")
    } catch {
      return ""
    }
  }
  const proc: Proc = {
    name,
    child,
    logFile,
    exited,
    tail,
    stop: async (graceMs = 10_000) => {
      running.delete(proc)
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs)
      await exited
      clearTimeout(timer)
    }
  }
  running.add(proc)
  void exited.then(() => running.delete(proc))
  return proc
}

/** Polls `ready` until it is true; fails with the process's log when it exits first or time runs out. */
export const waitReady = async (proc: Proc, what: string, ready: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  let exit: number | null | undefined
  void proc.exited.then((c) => {
    exit = c
  })
  while (true) {
    if (exit !== undefined) throw new Error(`${proc.name} exited (code ${exit}) before ${what}; its log (${proc.logFile}):\n${proc.tail()}`)
    if (await ready().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`${proc.name}: no ${what} within ${timeoutMs / 1000}s; its log (${proc.logFile}):\n${proc.tail()}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** A loopback TCP port that was free a moment ago. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
