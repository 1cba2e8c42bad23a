// Probe (node bench/lib/probe-multi.ts [n ...]): aggregate throughput of n concurrent streams per path, with the
// CPU share of each process while they run. Localises where many tunnels slow down (FINDINGS F2b).
import { getStack, paths, stopStack } from "./stack.ts"
import { round, sampleProc } from "./util.ts"
const ns = process.argv.slice(2).map(Number).filter((n) => n > 0)
const s = await getStack()
const specs = paths(s)
const procs: Record<string, number | undefined> = { kube: s.kube.pid, agentB: s.agentB?.proc.pid, cp: s.cp?.proc.pid, viewer: s.viewer.pid, target: s.target.pid, cp2: s.cp2?.proc.pid, sim: s.simAgents?.pid }
for (const path of ["port_forward", "control_plane", "full_path"]) {
  for (const n of ns.length > 0 ? ns : [1, 5, 20]) {
    const { group } = await s.viewer.call("viewer.open", { spec: specs[path], n })
    const before = Object.fromEntries(Object.entries(procs).map(([k, pid]) => [k, pid === undefined ? undefined : sampleProc(pid)]))
    const r = await s.viewer.call("viewer.measure", { group, seconds: 3, warmupMs: 1000 })
    const cpu = Object.fromEntries(Object.entries(procs).map(([k, pid]) => {
      const a = before[k]; const b = pid === undefined ? undefined : sampleProc(pid)
      return [k, a && b ? round((b.cpuSeconds - a.cpuSeconds) / ((b.at - a.at) / 1000), 2) : null]
    }))
    await s.viewer.call("viewer.close", { group })
    const total = r.reduce((x: number, y: any) => x + y.bytesPerSec, 0)
    console.log(JSON.stringify({ path, n, MBps: round(total / 1e6, 1), min: round(Math.min(...r.map((y: any) => y.bytesPerSec)) / 1e6, 2), cpu }))
  }
}
await stopStack()
process.exit(0)
