// Summarises a V8 .cpuprofile (from node --cpu-prof): self time by function and by file, top N.
//   node bench/lib/profile-summary.ts <file.cpuprofile> [N] [--from S] [--to S] [--timeline]
// --from/--to keep only the samples between S seconds after the profile's start (one phase of a run, the burst
// of the control-plane benchmark, say); --timeline prints the busy share of each second, to find the phases.
import { readFileSync } from "node:fs"

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: Array<number>
}

export interface Window {
  readonly fromS?: number | undefined
  readonly toS?: number | undefined
}

export const summarize = (path: string, top = 25, window: Window = {}, timeline = false) => {
  const p = JSON.parse(readFileSync(path, "utf8")) as { nodes: Array<Node>; samples: Array<number>; timeDeltas: Array<number> }
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  // Percentages are of the busy time: an idle relay waiting for its peers says nothing about its cost.
  const idle = new Set(p.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id))
  const from = (window.fromS ?? 0) * 1e6
  const to = (window.toS ?? Infinity) * 1e6
  const self = new Map<number, number>()
  const perSecond: Array<{ busy: number; all: number }> = []
  let at = 0
  for (let i = 0; i < p.samples.length; i++) {
    const dt = p.timeDeltas[i] ?? 0
    at += dt
    const id = p.samples[i]!
    const s = (perSecond[Math.floor(at / 1e6)] ??= { busy: 0, all: 0 })
    s.all += dt
    if (!idle.has(id)) s.busy += dt
    if (at >= from && at < to) self.set(id, (self.get(id) ?? 0) + dt)
  }
  for (const id of idle) self.delete(id)
  const total = [...self.values()].reduce((a, b) => a + b, 0)
  const fn = new Map<string, number>()
  const file = new Map<string, number>()
  for (const [id, t] of self) {
    const n = byId.get(id)!
    const url = n.callFrame.url.replace(/^file:\/\/.*?\/(node_modules|packages)\//, "$1/")
    const key = `${n.callFrame.functionName || "(anonymous)"} ${url}:${n.callFrame.lineNumber + 1}`
    fn.set(key, (fn.get(key) ?? 0) + t)
    const f = url === "" ? `(${n.callFrame.functionName})` : url.replace(/\/[^/]*$/, (m) => m)
    file.set(f, (file.get(f) ?? 0) + t)
  }
  const fmt = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, t]) => `${((100 * t) / total).toFixed(1).padStart(5)} %  ${k}`).join("\n")
  const span = window.fromS === undefined && window.toS === undefined ? "" : ` between ${window.fromS ?? 0} s and ${window.toS ?? "the end"}`
  const line = timeline
    ? `-- busy share per second --\n${perSecond.map((s, i) => `${String(i).padStart(5)} s ${((100 * s.busy) / Math.max(1, s.all)).toFixed(0).padStart(4)} %`).join("\n")}\n`
    : ""
  return `${line}busy ${(total / 1e6).toFixed(2)} s sampled${span} (idle left out)\n-- self time by function --\n${fmt(fn)}\n-- self time by file --\n${fmt(file)}`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2)
  const flag = (name: string) => {
    const i = args.indexOf(name)
    return i < 0 ? undefined : Number(args.splice(i, 2)[1])
  }
  const fromS = flag("--from")
  const toS = flag("--to")
  const timeline = args.includes("--timeline")
  const [file, n] = args.filter((a) => a !== "--timeline")
  console.log(summarize(file!, Number(n ?? 25), { fromS, toS }, timeline))
}
