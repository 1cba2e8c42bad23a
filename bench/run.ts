// npm run bench [-- <names...>] [--long] [--reps N]   (--readme-only: regenerate bench/README.md from results)
// Runs the benchmarks of issue 8 (then warmpool, issue 16, the HA ones, issue 15: `ha` picks those three, and footprint, issue 20) in sequence; each prints a table, writes bench/results/<name>.json, and
// bench/README.md is regenerated from every results file. Only 127.0.0.1; everything stops by itself.
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { isolation, latency, throughput } from "./lib/b-tunnel.ts"
import { agentFootprint } from "./lib/b-agent.ts"
import { controlPlaneScale, reconnectStorm, sessionStart } from "./lib/b-controlplane.ts"
import { renderReadme } from "./lib/readme.ts"
import { warmPoolStart } from "./lib/b-warmpool.ts"
import { footprint } from "./lib/b-footprint.ts"
import { haRelay, haRestart, haScale } from "./lib/b-ha.ts"
import { stopStack } from "./lib/stack.ts"
import { BENCH_DIR, type BenchResult, record } from "./lib/util.ts"

const ALL = ["throughput", "latency", "isolation", "agent", "controlplane", "sessionstart", "reconnect", "warmpool", "ha-relay", "ha-scale", "ha-restart", "footprint"] as const
type Name = (typeof ALL)[number]

const argv = process.argv.slice(2)
const writeReadme = () => {
  const results = readdirSync(join(BENCH_DIR, "results"))
    .filter((f) => f.endsWith(".json"))
    .map((f) => JSON.parse(readFileSync(join(BENCH_DIR, "results", f), "utf8")))
  writeFileSync(join(BENCH_DIR, "README.md"), renderReadme(results, ALL))
}
if (argv.includes("--readme-only")) {
  writeReadme()
  process.exit(0)
}
const long = argv.includes("--long")
const repsArg = argv.indexOf("--reps")
const reps = repsArg >= 0 ? Number(argv[repsArg + 1]) : long ? 5 : 3
const HA: ReadonlyArray<Name> = ["ha-relay", "ha-scale", "ha-restart"]
const named = argv.filter((a, i) => !a.startsWith("--") && !(repsArg >= 0 && i === repsArg + 1)).flatMap((a): ReadonlyArray<string> => (a === "ha" ? HA : [a]))
const unknown = named.filter((n) => !(ALL as ReadonlyArray<string>).includes(n))
if (unknown.length > 0 || argv.includes("--help")) {
  console.log(`usage: npm run bench -- [${ALL.join("|")}|ha ...] [--long] [--reps N]
  ha       the three HA benchmarks (ha-relay ha-scale ha-restart)
  --long   full scale and durations (10-minute soak, 1,000 agents / 10,000 sessions, longer streams)`)
  process.exit(unknown.length > 0 ? 2 : 0)
}
// Run order: the benchmarks that share the tunnel test bed first, so it is built once.
const RUN_ORDER: ReadonlyArray<Name> = ["throughput", "latency", "isolation", "agent", "sessionstart", "controlplane", "reconnect", "warmpool", "ha-relay", "ha-scale", "ha-restart", "footprint"]
const selected: ReadonlyArray<Name> = RUN_ORDER.filter((n) => named.length === 0 || named.includes(n))
const command = `npm run bench${argv.length > 0 ? ` -- ${argv.join(" ")}` : ""}`
const opts = { long, reps, command }

const runners: Record<Name, () => Promise<BenchResult>> = {
  throughput: () => throughput(opts),
  latency: () => latency(opts),
  isolation: () => isolation(opts),
  agent: () => agentFootprint(opts),
  controlplane: () => controlPlaneScale(opts),
  sessionstart: () => sessionStart(opts),
  reconnect: () => reconnectStorm(opts),
  warmpool: () => warmPoolStart(opts),
  "ha-relay": () => haRelay(opts),
  "ha-scale": () => haScale(opts),
  "ha-restart": () => haRestart(opts),
  footprint: () => footprint(opts)
}
// The shared tunnel test bed is only needed by these.
const usesStack = new Set<Name>(["throughput", "latency", "isolation", "agent", "sessionstart"])

const hardStop = setTimeout(() => {
  console.error("bench: overall time limit reached; stopping")
  process.exit(3)
}, (long ? 90 : 30) * 60_000)
hardStop.unref()

let failed = 0
const t0 = Date.now()
for (const name of selected) {
  const started = new Date()
  console.log(`\n=== ${name} (${started.toISOString()}) ===`)
  try {
    record(await runners[name](), started)
  } catch (e) {
    failed++
    console.error(`bench ${name} failed: ${(e as Error).stack ?? e}`)
  }
  console.log(`(${name}: ${Math.round((Date.now() - started.getTime()) / 1000)} s)`)
  const rest = selected.slice(selected.indexOf(name) + 1)
  if (!rest.some((n) => usesStack.has(n))) await stopStack()
}
await stopStack()

writeReadme()
console.log(`\nbench: ${selected.length - failed}/${selected.length} benchmarks done in ${Math.round((Date.now() - t0) / 1000)} s; bench/README.md updated`)
process.exit(failed > 0 ? 1 : 0)
