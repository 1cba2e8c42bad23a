// Summarises a V8 .cpuprofile (from node --cpu-prof): self time by function and by file, top N.
//   node bench/lib/profile-summary.ts <file.cpuprofile> [N] [from-seconds to-seconds]
// The window (seconds since the profile started) leaves out start-up, so a relay's profile shows its streaming.
import { readFileSync } from "node:fs"

interface Node {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: Array<number>
}

export const summarize = (path: string, top = 25, window: readonly [number, number] = [0, Infinity]) => {
  const p = JSON.parse(readFileSync(path, "utf8")) as { nodes: Array<Node>; samples: Array<number>; timeDeltas: Array<number> }
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  let at = 0
  for (let i = 0; i < p.samples.length; i++) {
    at += p.timeDeltas[i] ?? 0
    if (at < window[0] * 1e6 || at > window[1] * 1e6) continue
    self.set(p.samples[i]!, (self.get(p.samples[i]!) ?? 0) + (p.timeDeltas[i] ?? 0))
  }
  // Percentages are of the busy time: an idle relay waiting for its peers says nothing about its cost.
  const idle = new Set(p.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id))
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
  return `busy ${(total / 1e6).toFixed(2)} s sampled (idle left out)\n-- self time by function --\n${fmt(fn)}\n-- self time by file --\n${fmt(file)}`
}

if (import.meta.url === `file://${process.argv[1]}`) {
  console.log(summarize(process.argv[2]!, Number(process.argv[3] ?? 25), [Number(process.argv[4] ?? 0), Number(process.argv[5] ?? Infinity)]))
}
