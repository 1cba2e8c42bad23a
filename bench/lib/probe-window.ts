// Probe (node bench/lib/probe-window.ts): agent-hop throughput for a 1 MiB vs a 4 MiB window granted by a
// fake control plane, interleaved, 3 runs each. Evidence for FINDINGS F2 (credit round trips).
import { waitForPromise } from "@streamspace/testbed"
import { spawnWorker } from "./rpc.ts"
import { startAgent } from "./system.ts"
import { median } from "./util.ts"
const target = spawnWorker("t"); const kube = spawnWorker("k")
const { port } = await target.call("target.start")
const ki = await kube.call("kube.start", { startDelayMs: 0, target: { host: "127.0.0.1", port } })
const res: Record<string, number[]> = {}
const cps: any[] = []
for (const w of [1, 4]) {
  const f = spawnWorker(`f${w}`); const { url } = await f.call("fakecp.start", { window: w * 1048576 })
  const a = await startAgent({ id: `probe-${w}`, controlPlaneUrl: url, kubeconfig: ki.kubeconfig })
  await waitForPromise("conn", async () => (await f.call("fakecp.connected")).connected, { timeout: 60_000, interval: 50 })
  await f.call("fakecp.createSessions", { ids: [`probe-s-${w}`] })
  cps.push({ w, f, a })
}
for (let rep = 0; rep < 3; rep++) for (const { w, f } of cps) {
  const ids = await f.call("fakecp.openTunnels", { sessionIds: [`probe-s-${w}`], blast: true })
  const r = await f.call("fakecp.measure", { ids, seconds: 3, warmupMs: 1000 })
  await f.call("fakecp.closeTunnels", { ids })
  ;(res[`${w} MiB`] ??= []).push(Math.round(r[0].bytesPerSec / 1e5) / 10)
}
console.log(JSON.stringify(Object.fromEntries(Object.entries(res).map(([k, v]) => [k, { runs: v, median: median(v) }]))))
for (const { f, a } of cps) { await a.stop(); await f.stop() }
await kube.stop(); await target.stop()
