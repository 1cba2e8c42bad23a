// Probe (node bench/lib/probe-latency.ts): full-path throughput alone, then echo round trips while 20 other
// tunnels stream, on one test bed. For quick before/after checks of the tunnel path (FINDINGS F2b).
import { getStack, paths, stopStack } from "./stack.ts"
import { median, percentile, round, sleep } from "./util.ts"
const s = await getStack()
const specs = paths(s)
const one = async () => {
  const { group } = await s.viewer.call("viewer.open", { spec: specs.full_path, n: 1 })
  const r = await s.viewer.call("viewer.measure", { group, seconds: 3, warmupMs: 1000 })
  await s.viewer.call("viewer.close", { group })
  return r[0].bytesPerSec / 1e6
}
const single = [await one(), await one()]
const idle = await s.viewer.call("viewer.echo", { spec: specs.full_path, count: 200 })
const { group } = await s.loadViewer.call("viewer.open", { spec: specs.full_path, n: 20 })
await sleep(1000)
const rates = s.loadViewer.call("viewer.measure", { group, seconds: 3 })
const load = await s.viewer.call("viewer.echo", { spec: specs.full_path, count: 50, warmup: 5 })
const r = await rates
await s.loadViewer.call("viewer.close", { group })
console.log(JSON.stringify({
  // The control plane (started by the test bed with this process's environment) reads AGENT_LINK_WINDOW.
  linkWindow: process.env.AGENT_LINK_WINDOW ?? "default",
  singleMBps: single.map((x) => round(x, 1)),
  idle: { p50: round(median(idle), 2), p99: round(percentile(idle, 99), 2) },
  load: { p50: round(median(load), 2), p99: round(percentile(load, 99), 2), max: round(Math.max(...load), 2) },
  loadMBps: round(r.reduce((n: number, x: any) => n + x.bytesPerSec, 0) / 1e6, 1),
  loadMinMBps: round(Math.min(...r.map((x: any) => x.bytesPerSec)) / 1e6, 2)
}))
await stopStack()
process.exit(0)
