// Probe (node bench/lib/probe-cphop.ts [seconds] [reps]): the control-plane hop alone (simulated agent -> control
// plane -> viewer WebSocket), its rate and the control plane's CPU time per MB, without the rest of the test bed.
// For quick before/after figures of the control plane's byte path; BENCH_PROFILE=<dir> profiles the control plane.
import { waitForPromise } from "@streamspace/testbed"
import { spawnWorker } from "./rpc.ts"
import { BOOTSTRAP_TOKEN, ensureTemplate, runningSession, signJwt, startControlPlane } from "./system.ts"
import { median, round, sleep, treeCpuSeconds } from "./util.ts"

const seconds = Number(process.argv[2] ?? 5)
const reps = Number(process.argv[3] ?? 3)
// PROBE_CP_ARGS: extra node flags for the control plane (e.g. --trace-gc; its output is printed at the end).
const cp = await startControlPlane({ args: (process.env.PROBE_CP_ARGS ?? "").split(" ").filter((a) => a !== "") })
const sim = spawnWorker("sim-agent")
const viewer = spawnWorker("viewer")
try {
  await ensureTemplate(cp)
  await sim.call("agents.start", { url: cp.wsBase, ids: ["probe-sim-0"], token: BOOTSTRAP_TOKEN })
  await waitForPromise("sim agent pending", async () => (await cp.api("GET", "/api/v1/agents/probe-sim-0")).status === 200, { timeout: 30_000, interval: 50 })
  await cp.api("POST", "/api/v1/agents/probe-sim-0/approve")
  await waitForPromise("sim agent connected", async () => (await sim.call("agents.status")).connected === 1, { timeout: 30_000, interval: 50 })
  const user = signJwt("probe-user", "user")
  const session = await runningSession(cp, user)
  const spec = { kind: "ws", url: `${cp.wsBase}/api/v1/sessions/${session}/vnc`, headers: { authorization: `Bearer ${user}` } }
  const rates: Array<number> = []
  const cpu: Array<number> = []
  for (let rep = 0; rep < reps; rep++) {
    const { group } = await viewer.call("viewer.open", { spec, n: 1 })
    const before = sleep(1000).then(() => treeCpuSeconds(cp.proc.pid))
    const r: Array<{ bytesPerSec: number }> = await viewer.call("viewer.measure", { group, seconds, warmupMs: 1000 })
    const used = treeCpuSeconds(cp.proc.pid) - (await before)
    await viewer.call("viewer.close", { group })
    rates.push(r[0]!.bytesPerSec / 1e6)
    cpu.push((1000 * used) / (r[0]!.bytesPerSec * seconds / 1e6))
  }
  if (process.env.PROBE_CP_ARGS !== undefined) console.log(cp.proc.output())
  console.log(JSON.stringify({ seconds, mbPerSec: rates.map((x) => round(x, 1)), cpuMsPerMB: cpu.map((x) => round(x, 2)), median: { mbPerSec: round(median(rates), 1), cpuMsPerMB: round(median(cpu), 2) } }))
} finally {
  await viewer.stop()
  await sim.stop()
  await cp.stop()
}
