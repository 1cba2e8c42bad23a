// 12. Memory at idle (issue 20): (a) the quick start (`npm start`: control plane, agent and the simulated demo
// cluster in one process, embedded PGlite) on a fresh data directory, and (b) the control plane alone as the
// image runs it (`node packages/control-plane/src/main.ts`, embedded PGlite) with one real agent (its own
// process, as it ships) connected and approved, against a kube-testserver in a bench worker. Each process is
// left to settle, then sampled once a second; the figure is the median RSS with its anonymous / file-backed
// split (RssAnon: the process's own memory; RssFile: mapped files, mostly the node binary, shared with other
// node processes) and the peak since the process started (VmHWM).
import { join } from "node:path"
import { spawnWorker } from "./rpc.ts"
import { enrollAgent, freePort, startAgent, startControlPlane, tmp } from "./system.ts"
import { type BenchResult, median, memorySplit, ROOT, round, sleep, startProc } from "./util.ts"

type O = { long: boolean; reps: number; command: string }

const QUICK_START_TARGET_MIB = 300
const CONTROL_PLANE_TARGET_MIB = 150

const step = (what: string) => console.log(`  [${new Date().toISOString().slice(11, 19)}] ${what}`)

interface Idle {
  readonly rssMiB: number
  readonly anonMiB: number
  readonly fileMiB: number
  readonly peakMiB: number
  readonly samples: ReadonlyArray<number>
}

/** Waits `settleMs`, then samples `pid` once a second `n` times: medians of RSS, anon and file, and VmHWM at the end. */
const idleOf = async (pid: number, settleMs: number, n: number): Promise<Idle> => {
  await sleep(settleMs)
  const xs: Array<NonNullable<ReturnType<typeof memorySplit>>> = []
  for (let i = 0; i < n; i++) {
    const m = memorySplit(pid)
    if (m === undefined) throw new Error(`process ${pid} is gone`)
    xs.push(m)
    await sleep(1000)
  }
  const med = (f: (m: (typeof xs)[number]) => number) => round(median(xs.map(f)), 1)
  return { rssMiB: med((m) => m.rssMiB), anonMiB: med((m) => m.anonMiB), fileMiB: med((m) => m.fileMiB), peakMiB: Math.max(...xs.map((m) => m.peakMiB)), samples: xs.map((m) => m.rssMiB) }
}

const quickStart = async (settleMs: number, n: number): Promise<Idle> => {
  const proc = startProc("quickstart", [join(ROOT, "packages", "e2e", "src", "quickstart.ts")], {
    PORT: String(await freePort()),
    DATA_DIR: join(tmp("quickstart"), "data"),
    LOG_LEVEL: "warn"
  })
  try {
    await proc.waitFor(/StreamSpace is running/, 120_000)
    if (!/Agent: +local \(online/.test(proc.output())) throw new Error(`the quick start's agent is not online:\n${proc.output().slice(-2000)}`)
    return await idleOf(proc.pid, settleMs, n)
  } finally {
    await proc.stop("SIGTERM", 15_000)
  }
}

const controlPlaneWithAgent = async (settleMs: number, n: number): Promise<{ cp: Idle; agent: Idle }> => {
  const kube = spawnWorker("kube-footprint")
  const stops: Array<() => Promise<void>> = [kube.stop]
  try {
    const kubeInfo = await kube.call<{ kubeconfig: string }>("kube.start", { startDelayMs: 0, target: { host: "127.0.0.1", port: 9 } })
    const cp = await startControlPlane()
    stops.push(cp.stop)
    const agent = await startAgent({ id: "bench-footprint", controlPlaneUrl: cp.wsBase, kubeconfig: kubeInfo.kubeconfig })
    stops.push(agent.stop)
    await enrollAgent(cp, "bench-footprint")
    const [cpIdle, agentIdle] = await Promise.all([idleOf(cp.proc.pid, settleMs, n), idleOf(agent.proc.pid, settleMs, n)])
    return { cp: cpIdle, agent: agentIdle }
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined)
  }
}

export const footprint = async (o: O): Promise<BenchResult> => {
  const settleMs = 20_000
  const n = 10
  const runs = o.long ? o.reps : 1
  const quick: Array<Idle> = []
  const alone: Array<{ cp: Idle; agent: Idle }> = []
  for (let i = 0; i < runs; i++) {
    step(`quick start (run ${i + 1}/${runs})`)
    quick.push(await quickStart(settleMs, n))
    step(`control plane alone with one agent (run ${i + 1}/${runs})`)
    alone.push(await controlPlaneWithAgent(settleMs, n))
  }
  const row = (what: string, xs: ReadonlyArray<Idle>, target: number | undefined) => ({
    process: what,
    "idle RSS MiB": round(median(xs.map((x) => x.rssMiB)), 1),
    "anon MiB": round(median(xs.map((x) => x.anonMiB)), 1),
    "file MiB": round(median(xs.map((x) => x.fileMiB)), 1),
    "peak MiB (VmHWM)": round(median(xs.map((x) => x.peakMiB)), 1),
    runs: xs.map((x) => x.rssMiB).join(" / "),
    target: target === undefined ? "" : `<= ${target}`
  })
  const qs = row("quick start (npm start: CP + agent + demo cluster)", quick, QUICK_START_TARGET_MIB)
  const cp = row("control plane alone (src/main.ts), one agent connected", alone.map((a) => a.cp), CONTROL_PLANE_TARGET_MIB)
  const agent = row("  its agent (the shipped bundle)", alone.map((a) => a.agent), undefined)
  const target = (name: string, r: typeof qs, limit: number) => ({
    name,
    target: `<= ${limit} MB`,
    figure: `${r["idle RSS MiB"]} MiB (anon ${r["anon MiB"]}, file ${r["file MiB"]}; peak ${r["peak MiB (VmHWM)"]})`,
    met: r["idle RSS MiB"] * 1.048576 <= limit
  })
  return {
    name: "footprint",
    title: "12. Memory at idle (RSS after start, settled)",
    command: o.command,
    scale: `${runs} run(s) of each; each process settles ${settleMs / 1000} s after it is ready, then ${n} samples 1 s apart (median)`,
    table: [qs, cp, agent],
    targets: [
      target("quick start idle RSS", qs, QUICK_START_TARGET_MIB),
      target("control plane alone with one agent, idle RSS", cp, CONTROL_PLANE_TARGET_MIB)
    ],
    figures: { quick, alone },
    notes: [
      "The quick start runs on a fresh data directory (the database is unpacked from the per-user PGlite template cache); the control plane alone is started by bench/lib/system.ts as in the other benchmarks.",
      "anon is the process's own memory (V8 heaps, WebAssembly memory, malloc); file is mapped files, mostly the node binary, shared by every node process on the machine.",
      "Targets are in MB (10^6 bytes); the table is in MiB."
    ]
  }
}
