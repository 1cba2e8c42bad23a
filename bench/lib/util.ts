// Shared helpers for the benchmarks: statistics, environment, results files, process sampling.
import { execFileSync, spawn, type ChildProcess } from "node:child_process"
import { readdirSync, readFileSync, writeFileSync, mkdirSync } from "node:fs"
import { cpus, freemem, loadavg, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

export const BENCH_DIR = join(dirname(fileURLToPath(import.meta.url)), "..")
export const ROOT = join(BENCH_DIR, "..")
/** Node 24 from the repo (the global node is 20). */
export const NODE = process.execPath

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
export const now = () => performance.timeOrigin + performance.now()

export const median = (xs: ReadonlyArray<number>): number => percentile(xs, 50)
export const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const rank = (p / 100) * (s.length - 1)
  const lo = Math.floor(rank)
  const hi = Math.ceil(rank)
  return s[lo]! + (s[hi]! - s[lo]!) * (rank - lo)
}
export const round = (x: number, digits = 2) => (Number.isFinite(x) ? Math.round(x * 10 ** digits) / 10 ** digits : x)
export const MiB = 1024 * 1024

export const environment = () => ({
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  cores: cpus().length,
  memory_total_mib: Math.round(totalmem() / MiB),
  memory_free_mib: Math.round(freemem() / MiB),
  load_average: loadavg().map((x) => round(x, 2)),
  platform: `${process.platform} ${process.arch}`
})

export const gitCommit = (): string => {
  try {
    const sha = execFileSync("git", ["rev-parse", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim()
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "packages"], { cwd: ROOT, encoding: "utf8" }).trim() !== ""
    return dirty ? `${sha} (packages/ had uncommitted changes)` : sha
  } catch {
    return "unknown"
  }
}

export interface Target {
  readonly name: string
  readonly target: string
  readonly figure: string
  readonly met: boolean | undefined
}

export interface BenchResult {
  readonly name: string
  readonly title: string
  readonly command: string
  readonly scale: string
  /** Rows of the printed table. */
  readonly table: ReadonlyArray<Record<string, string | number>>
  readonly targets: ReadonlyArray<Target>
  readonly figures: Record<string, unknown>
  readonly notes: ReadonlyArray<string>
}

export const formatTable = (rows: ReadonlyArray<Record<string, string | number>>): string => {
  if (rows.length === 0) return "(no rows)"
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))]
  const cell = (v: unknown) => (v === undefined ? "" : String(v))
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => cell(r[c]).length)))
  const line = (vals: ReadonlyArray<string>) => `| ${vals.map((v, i) => v.padEnd(widths[i]!)).join(" | ")} |`
  return [line(cols), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map((r) => line(cols.map((c) => cell(r[c]))))].join("\n")
}

export const formatTargets = (targets: ReadonlyArray<Target>): string =>
  targets.length === 0
    ? ""
    : formatTable(targets.map((t) => ({ target: t.name, wanted: t.target, measured: t.figure, status: t.met === undefined ? "not measured" : t.met ? "met" : "NOT MET" })))

/** Prints the tables and writes bench/results/<name>.json. */
export const record = (r: BenchResult, startedAt: Date) => {
  const out = {
    ...r,
    date: startedAt.toISOString(),
    finished: new Date().toISOString(),
    commit: gitCommit(),
    environment: environment()
  }
  mkdirSync(join(BENCH_DIR, "results"), { recursive: true })
  writeFileSync(join(BENCH_DIR, "results", `${r.name}.json`), JSON.stringify(out, null, 2) + "\n")
  console.log(`\n## ${r.title}  (${r.scale})\n`)
  console.log(formatTable(r.table))
  if (r.targets.length > 0) console.log("\n" + formatTargets(r.targets))
  for (const n of r.notes) console.log(`- ${n}`)
  return out
}

// ---- per-process CPU and RSS from /proc -----------------------------------------------------------

const CLK_TCK = 100
export interface ProcSample {
  readonly rssMiB: number
  /** CPU seconds (user + system) since the process started. */
  readonly cpuSeconds: number
  readonly at: number
}
export const sampleProc = (pid: number): ProcSample | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0")
    return { rssMiB: rssKb / 1024, cpuSeconds: (utime + stime) / CLK_TCK, at: now() }
  } catch {
    return undefined
  }
}
/** VmRSS split into anonymous and file-backed pages (RssAnon / RssFile in /proc/<pid>/status), and the peak (VmHWM). */
export const memorySplit = (pid: number): { rssMiB: number; anonMiB: number; fileMiB: number; peakMiB: number } | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const mib = (key: string) => round(Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN) / 1024, 1)
    return { rssMiB: mib("VmRSS"), anonMiB: mib("RssAnon"), fileMiB: mib("RssFile"), peakMiB: mib("VmHWM") }
  } catch {
    return undefined
  }
}
/** The process's children, from /proc/<pid>/task/<tid>/children (empty once it is gone). */
const childrenOf = (pid: number): Array<number> => {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) =>
      readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").split(" ").filter((x) => x !== "").map(Number)
    )
  } catch {
    return []
  }
}

/** CPU seconds used so far by a process and its live descendants (websockify serves each client in a forked child). */
export const treeCpuSeconds = (pid: number): number => {
  const own = sampleProc(pid)
  if (own === undefined) return NaN
  let sum = own.cpuSeconds
  for (const child of childrenOf(pid)) {
    const c = treeCpuSeconds(child)
    if (!Number.isNaN(c)) sum += c
  }
  return sum
}

/** CPU use in % of one core between two samples. */
export const cpuPercent = (a: ProcSample, b: ProcSample) => (100 * (b.cpuSeconds - a.cpuSeconds)) / ((b.at - a.at) / 1000)

/** Samples a process every `everyMs` while `during` runs; returns peak/mean RSS and CPU %. */
export const measureProc = async <A>(pid: number, during: () => Promise<A>, everyMs = 250) => {
  const first = sampleProc(pid)
  const rss: Array<number> = []
  const timer = setInterval(() => {
    const s = sampleProc(pid)
    if (s !== undefined) rss.push(s.rssMiB)
  }, everyMs)
  try {
    const value = await during()
    const last = sampleProc(pid)
    if (last !== undefined) rss.push(last.rssMiB)
    return {
      value,
      rssPeakMiB: Math.max(...rss, first?.rssMiB ?? 0),
      rssEndMiB: last?.rssMiB ?? NaN,
      cpuPercent: first !== undefined && last !== undefined ? cpuPercent(first, last) : NaN,
      /** CPU time the process used meanwhile (all its threads). */
      cpuSeconds: first !== undefined && last !== undefined ? last.cpuSeconds - first.cpuSeconds : NaN
    }
  } finally {
    clearInterval(timer)
  }
}

// ---- child processes ------------------------------------------------------------------------------

export interface Proc {
  readonly child: ChildProcess
  readonly pid: number
  readonly output: () => string
  /** Resolves when a line matching `re` appears on stdout or stderr; returns the match. */
  readonly waitFor: (re: RegExp, ms?: number) => Promise<RegExpMatchArray>
  readonly stop: (signal?: NodeJS.Signals, ms?: number) => Promise<void>
  readonly exited: Promise<number | null>
}

export const startProc = (name: string, args: ReadonlyArray<string>, env: Record<string, string>, options: { cwd?: string; keepLog?: number } = {}): Proc => {
  const child = spawn(NODE, args, { cwd: options.cwd ?? ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] })
  let buf = ""
  const keep = options.keepLog ?? 200_000
  const waiters: Array<{ re: RegExp; resolve: (m: RegExpMatchArray) => void }> = []
  const onData = (d: Buffer) => {
    buf += d.toString()
    if (buf.length > keep) buf = buf.slice(buf.length - keep)
    for (const w of [...waiters]) {
      const m = buf.match(w.re)
      if (m !== null) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(m)
      }
    }
  }
  child.stdout!.on("data", onData)
  child.stderr!.on("data", onData)
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  if (process.env.BENCH_DEBUG) {
    child.stdout!.on("data", (d: Buffer) => process.stderr.write(`[${name}] ${d}`))
    child.stderr!.on("data", (d: Buffer) => process.stderr.write(`[${name}] ${d}`))
  }
  return {
    child,
    pid: child.pid!,
    output: () => buf,
    exited,
    waitFor: (re, ms = 30_000) =>
      new Promise((resolve, reject) => {
        const m = buf.match(re)
        if (m !== null) return resolve(m)
        const timer = setTimeout(() => reject(new Error(`${name}: timed out after ${ms} ms waiting for ${re}; output tail:\n${buf.slice(-3000)}`)), ms)
        const w = { re, resolve: (x: RegExpMatchArray) => (clearTimeout(timer), resolve(x)) }
        waiters.push(w)
        exited.then((code) => {
          if (waiters.includes(w)) {
            clearTimeout(timer)
            reject(new Error(`${name} exited with ${code} while waiting for ${re}; output tail:\n${buf.slice(-3000)}`))
          }
        })
      }),
    stop: async (signal = "SIGTERM", ms = 10_000) => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill(signal)
      const timer = setTimeout(() => child.kill("SIGKILL"), ms)
      await exited
      clearTimeout(timer)
    }
  }
}

export const writeJson = (path: string, value: unknown) => {
  mkdirSync(dirname(path), { recursive: true })
  writeFileSync(path, JSON.stringify(value, null, 2) + "\n")
}
