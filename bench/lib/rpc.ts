// A tiny request/response channel over Node's IPC, so load generators and test peers run in their own
// processes (their CPU and memory are not the system under test's) while the orchestrator drives them.
import { fork, type ChildProcess } from "node:child_process"
import { join } from "node:path"
import { BENCH_DIR, NODE } from "./util.ts"

type Handlers = Record<string, (args: any) => unknown>

export interface Worker {
  readonly pid: number
  readonly call: <T = any>(op: string, args?: unknown, timeoutMs?: number) => Promise<T>
  readonly stop: () => Promise<void>
  readonly child: ChildProcess
}

/** Starts bench/lib/worker.ts in a child process. */
export const spawnWorker = (name: string, env: Record<string, string> = {}): Worker => {
  const child = fork(join(BENCH_DIR, "lib", "worker.ts"), [name], {
    execPath: NODE,
    env: { ...process.env, ...env },
    stdio: ["ignore", process.env.BENCH_DEBUG ? "inherit" : "ignore", "inherit", "ipc"],
    serialization: "advanced"
  })
  let next = 1
  const pending = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>()
  child.on("message", (m: any) => {
    const p = pending.get(m.id)
    if (p === undefined) return
    pending.delete(m.id)
    if (m.error !== undefined) p.reject(new Error(`${name}: ${m.error}`))
    else p.resolve(m.result)
  })
  const exited = new Promise<void>((resolve) => child.once("exit", () => {
    for (const p of pending.values()) p.reject(new Error(`worker ${name} exited`))
    pending.clear()
    resolve()
  }))
  return {
    pid: child.pid!,
    child,
    call: (op, args, timeoutMs = 600_000) =>
      new Promise((resolve, reject) => {
        const id = next++
        const timer = setTimeout(() => {
          pending.delete(id)
          reject(new Error(`${name}: ${op} timed out after ${timeoutMs} ms`))
        }, timeoutMs)
        pending.set(id, {
          resolve: (v) => (clearTimeout(timer), resolve(v)),
          reject: (e) => (clearTimeout(timer), reject(e))
        })
        child.send({ id, op, args })
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill("SIGTERM")
      const t = setTimeout(() => child.kill("SIGKILL"), 5000)
      await exited
      clearTimeout(t)
    }
  }
}

/** In the worker: answers requests with the handlers. */
export const serveRpc = (handlers: Handlers) => {
  process.on("message", async (m: any) => {
    try {
      const h = handlers[m.op]
      if (h === undefined) throw new Error(`unknown op ${m.op}`)
      const result = await h(m.args)
      process.send!({ id: m.id, result })
    } catch (e) {
      process.send!({ id: m.id, error: e instanceof Error ? `${e.message}\n${e.stack ?? ""}` : String(e) })
    }
  })
  process.on("disconnect", () => process.exit(0))
  process.on("SIGTERM", () => process.exit(0))
}
