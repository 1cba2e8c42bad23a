// Probe (node bench/lib/probe-hop.ts [seconds] [reps] [tunnels]): the agent hop alone (port-forward -> agent ->
// fake control plane), its rate and the agent's CPU time per MB, without the rest of the test bed. For quick
// before/after figures of the agent's byte path; BENCH_PROFILE=<dir> profiles the agent.
import { waitForPromise } from "@streamspace/testbed"
import { spawnWorker } from "./rpc.ts"
import { startAgent } from "./system.ts"
import { median, round, sleep, treeCpuSeconds } from "./util.ts"

const seconds = Number(process.argv[2] ?? 5)
const reps = Number(process.argv[3] ?? 3)
const tunnels = Number(process.argv[4] ?? 1)
const target = spawnWorker("target")
const kube = spawnWorker("kube")
const fake = spawnWorker("fakecp")
const { port } = await target.call("target.start")
const k = await kube.call("kube.start", { startDelayMs: 0, target: { host: "127.0.0.1", port } })
const { url } = await fake.call("fakecp.start", {})
const agent = await startAgent({ id: "probe-hop", controlPlaneUrl: url, kubeconfig: k.kubeconfig })
await waitForPromise("agent connected", async () => (await fake.call("fakecp.connected")).connected, { timeout: 60_000, interval: 50 })
const sessions = Array.from({ length: tunnels }, (_, i) => `probe-hop-${i}`)
await fake.call("fakecp.createSessions", { ids: sessions })
const rates: Array<number> = []
const cpu: Array<number> = []
const frames: Array<number> = []
for (let rep = 0; rep < reps; rep++) {
  const ids = await fake.call("fakecp.openTunnels", { sessionIds: sessions, blast: true })
  const before = sleep(1000).then(() => treeCpuSeconds(agent.proc.pid))
  const r: Array<{ bytesPerSec: number; bytesPerFrame: number }> = await fake.call("fakecp.measure", { ids, seconds, warmupMs: 1000 })
  const used = treeCpuSeconds(agent.proc.pid) - (await before)
  const rate = r.reduce((n, x) => n + x.bytesPerSec, 0)
  rates.push(rate / 1e6)
  frames.push(median(r.map((x) => x.bytesPerFrame)))
  cpu.push((1000 * used) / ((rate * seconds) / 1e6))
  await fake.call("fakecp.closeTunnels", { ids })
}
console.log(JSON.stringify({ tunnels, seconds, mbPerSec: rates.map((x) => round(x, 1)), cpuMsPerMB: cpu.map((x) => round(x, 2)), bytesPerFrame: frames.map((x) => round(x, 0)), median: { mbPerSec: round(median(rates), 1), cpuMsPerMB: round(median(cpu), 2) } }))
await agent.stop()
for (const w of [fake, kube, target]) await w.stop()
