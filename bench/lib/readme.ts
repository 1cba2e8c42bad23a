// Regenerates bench/README.md from bench/results/*.json: the latest table of each benchmark, the command
// that produced it, and every target marked met / NOT MET with its figure. Findings are kept in
// bench/FINDINGS.md (hand-written: profiles, causes, proposed fixes) and included verbatim.
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { BENCH_DIR, formatTable, formatTargets } from "./util.ts"

export const renderReadme = (results: Array<any>, order: ReadonlyArray<string>): string => {
  const byName = new Map(results.map((r) => [r.name, r]))
  const sorted = [...order].map((n) => byName.get(n)).filter((r) => r !== undefined)
  const allTargets = sorted.flatMap((r) => (r.targets as Array<any>).map((t) => ({ benchmark: r.name, ...t })))
  const lines: Array<string> = []
  lines.push("# StreamSpace benchmarks")
  lines.push("")
  lines.push("`npm run bench` runs all seven benchmarks of issue 8 in sequence (about 15 minutes on a 2-core machine), then")
  lines.push("`warmpool` (issue 16: session start with and without a template's warm pool, about a minute), then the three")
  lines.push("control-plane high-availability benchmarks of issue 15 (`ha-relay`, `ha-scale`, `ha-restart`; `npm run bench -- ha` runs")
  lines.push("just those, about 5 minutes; each starts its own PostgreSQL, Debian's, and replicas as `node src/main.ts` processes);")
  lines.push("`npm run bench -- throughput latency` picks some; `--long` uses the full durations and scale (10-minute soak,")
  lines.push("1,000 agents / 10,000 sessions, longer streams); `--reps N` sets the repetitions (default 3, 5 with `--long`).")
  lines.push("Each benchmark prints its table and writes `bench/results/<name>.json` (figures, environment, date, commit);")
  lines.push("this file is regenerated from those files after every run. `bench/setup.sh` installs websockify when missing")
  lines.push("(`bench/run.ts` calls it). `footprint` (issue 20, about 2 minutes) measures the idle memory of the quick start and of")
  lines.push("the control plane alone with one agent. Benchmarks are not part of `npm test`; everything runs on 127.0.0.1 and stops by itself.")
  lines.push("")
  lines.push("Method: every part of the system under test runs in its own process (control plane, agent, kube-testserver,")
  lines.push("the TCP source, viewers and simulated agents), so CPU and RSS are per process. Machines are shared and noisy,")
  lines.push("so every comparison is a ratio measured in the same run, over several interleaved repetitions, and the median")
  lines.push("is reported. The agent runs as it ships: the bundle `packages/agent/dist/main.mjs` with the flags and environment of")
  lines.push("`docker/agent/Dockerfile` (bench/lib/agent-launch.ts builds it when stale; `BENCH_AGENT=source` runs `src/main.ts`); the control plane as")
  lines.push("`packages/control-plane/src/main.ts` (the whole `ControlPlane` layer, as the image runs it), each configured through its")
  lines.push("environment like a deployment.")
  lines.push("`BENCH_PROFILE=<dir>` makes both write `node --cpu-prof` profiles; `node bench/lib/profile-summary.ts <file> [N] [--from S] [--to S] [--timeline]` summarises one (busy time only, optionally one phase).")
  lines.push("`BENCH_REAL=0` leaves the real API server's paths out of the tunnel test bed; `BENCH_CP_SESSIONS=<n>` runs `controlplane` with fewer sessions. Probes of one hop alone: `node bench/lib/probe-hop.ts [seconds] [reps] [tunnels]` (agent), `node bench/lib/probe-cphop.ts [seconds] [reps]` (control plane), both with CPU per MB.")
  lines.push("")
  lines.push("## Targets")
  lines.push("")
  lines.push(formatTable(allTargets.map((t) => ({
    benchmark: t.benchmark,
    target: t.name,
    wanted: t.target,
    measured: t.figure,
    status: t.met === undefined || t.met === null ? "not measured" : t.met ? "met" : "NOT MET"
  }))))
  lines.push("")
  for (const r of sorted) {
    lines.push(`## ${r.title}`)
    lines.push("")
    lines.push(`Command: \`${r.command}\` — ${r.date} — commit \`${r.commit}\``)
    lines.push("")
    lines.push(`Scale: ${r.scale}`)
    lines.push("")
    lines.push(`Environment: Node ${r.environment.node}, ${r.environment.cpu}, ${r.environment.cores} cores, ${r.environment.memory_total_mib} MiB RAM, load average ${r.environment.load_average.join(" / ")}`)
    lines.push("")
    lines.push(formatTable(r.table))
    lines.push("")
    if (r.targets.length > 0) {
      lines.push(formatTargets(r.targets))
      lines.push("")
    }
    for (const n of r.notes) lines.push(`- ${n}`)
    if (r.notes.length > 0) lines.push("")
  }
  const missing = order.filter((n) => !byName.has(n))
  if (missing.length > 0) {
    lines.push(`Not yet recorded: ${missing.join(", ")}.`)
    lines.push("")
  }
  const findings = join(BENCH_DIR, "FINDINGS.md")
  if (existsSync(findings)) lines.push(readFileSync(findings, "utf8"))
  return lines.join("\n") + "\n"
}
