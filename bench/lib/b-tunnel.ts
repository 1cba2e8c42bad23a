// Benchmarks 1-3: the VNC path. Throughput per path, added latency, isolation of a stalled viewer.
import { getStack, paths, type Stack } from "./stack.ts"
import type { BenchResult, Target } from "./util.ts"
import { median, MiB, percentile, round, sampleProc, sleep, treeCpuSeconds } from "./util.ts"

export interface Opts {
  readonly long: boolean
  readonly reps: number
  readonly command: string
}

const MB = 1e6

/** One gauge from a Prometheus /metrics page (NaN when absent or unreachable). */
const gauge = async (url: string, name: string): Promise<number> => {
  try {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(10_000) })).text()
    const line = text.split("\n").find((l) => l.startsWith(`${name} `))
    return line === undefined ? NaN : Number(line.slice(name.length + 1))
  } catch {
    return NaN
  }
}

/** One stream's rate and, for each relaying process of its path, the CPU it spent per MB moved (ms/MB). */
interface StreamRun {
  readonly bytesPerSec: number
  readonly cpuMsPerMB: Record<string, number>
}

const WARMUP_MS = 1000

/**
 * Runs `measure` (which waits WARMUP_MS, then counts bytes for `seconds`) and samples the CPU time of the
 * `relays` processes over the same window: CPU per MB is what a hop costs, whatever the machine's load does to
 * the rate.
 */
const withCpu = async (relays: Record<string, number>, seconds: number, measure: () => Promise<number>): Promise<StreamRun> => {
  const sampleAll = () => Object.fromEntries(Object.entries(relays).map(([name, pid]) => [name, treeCpuSeconds(pid)]))
  const before = sleep(WARMUP_MS).then(sampleAll)
  const bytesPerSec = await measure()
  const after = sampleAll()
  const start = await before
  const mb = (bytesPerSec * seconds) / MB
  return { bytesPerSec, cpuMsPerMB: Object.fromEntries(Object.keys(relays).map((n) => [n, (1000 * (after[n]! - start[n]!)) / mb])) }
}

/** Runs one stream over `spec`. */
const streamOnce = async (s: Stack, spec: unknown, seconds: number, relays: Record<string, number>) => {
  const { group } = await s.viewer.call("viewer.open", { spec, n: 1 })
  try {
    return await withCpu(relays, seconds, async () => (await s.viewer.call("viewer.measure", { group, seconds, warmupMs: WARMUP_MS }))[0].bytesPerSec as number)
  } finally {
    await s.viewer.call("viewer.close", { group })
  }
}

/** The agent hop alone: port-forward -> agent -> fake control plane, counted at the fake control plane. */
const agentHopOnce = async (s: Stack, seconds: number) => {
  const ids = await s.fakecp.call("fakecp.openTunnels", { sessionIds: [s.fakeSessions[0]], blast: true })
  try {
    return await withCpu({ agent: s.agentA.proc.pid }, seconds, async () => (await s.fakecp.call("fakecp.measure", { ids, seconds, warmupMs: WARMUP_MS }))[0].bytesPerSec as number)
  } finally {
    await s.fakecp.call("fakecp.closeTunnels", { ids })
  }
}

/** The processes of ours (or the baseline's) that relay each path's bytes. */
const relaysOf = (s: Stack): Record<string, Record<string, number>> => ({
  websockify: s.websockify !== undefined ? { websockify: s.websockify.pid } : {},
  port_forward: { "kube-testserver": s.kube.pid },
  control_plane: s.cp2 !== undefined ? { "control plane": s.cp2.proc.pid } : {},
  full_path: s.agentB !== undefined && s.cp !== undefined ? { agent: s.agentB.proc.pid, "control plane": s.cp.proc.pid } : {},
  real_full_path: s.real !== undefined ? { agent: s.real.agent.proc.pid, "control plane": s.real.cp.proc.pid } : {}
})

export const throughput = async (o: Opts): Promise<BenchResult> => {
  const s = await getStack()
  const seconds = o.long ? 10 : 3
  const specs = paths(s)
  const order = ["raw_tcp", "websockify", "port_forward", "agent_hop", "control_plane", "full_path", "real_port_forward", "kubectl_port_forward", "real_full_path"]
  const relays = relaysOf(s)
  const all = new Map<string, Array<StreamRun>>()
  for (let rep = 0; rep < o.reps; rep++) {
    for (const name of order) {
      let v: StreamRun | undefined
      if (name === "agent_hop") v = await agentHopOnce(s, seconds)
      else if (specs[name] !== undefined) v = await streamOnce(s, specs[name], seconds, relays[name] ?? {})
      if (v !== undefined) all.set(name, [...(all.get(name) ?? []), v])
    }
  }
  const runs = new Map([...all].map(([k, v]) => [k, v.map((r) => r.bytesPerSec)]))
  const med = (n: string) => (runs.has(n) ? median(runs.get(n)!) : NaN)
  /** Median CPU ms per MB of one process over a path's repetitions. */
  const cpu = (n: string, proc: string) => median((all.get(n) ?? []).map((r) => r.cpuMsPerMB[proc] ?? NaN).filter((x) => !Number.isNaN(x)))
  const cpuCell = (n: string) => Object.keys(all.get(n)?.[0]?.cpuMsPerMB ?? {}).map((p) => `${p} ${round(cpu(n, p), 2)}`).join(", ")
  const raw = med("raw_tcp")
  const wsf = med("websockify")
  const labels: Record<string, string> = {
    raw_tcp: "raw loopback TCP (physical limit)",
    websockify: "websockify (TCP -> WS, one hop)",
    port_forward: "kube-testserver port-forward alone",
    agent_hop: "port-forward -> agent -> WS (agent hop)",
    control_plane: "simulated agent -> control plane -> viewer WS",
    full_path: "full path: port-forward -> agent -> CP -> viewer",
    real_port_forward: "real API server port-forward alone (kube-apiserver -> kwok)",
    kubectl_port_forward: "kubectl port-forward alone (real API server)",
    real_full_path: "full path through the real API server's port-forward"
  }
  const table = order.filter((n) => runs.has(n)).map((n) => ({
    path: labels[n]!,
    "MB/s (median)": round(med(n) / MB, 1),
    runs: runs.get(n)!.map((x) => round(x / MB, 0)).join(" / "),
    "x raw TCP": round(med(n) / raw, 3),
    "x websockify": round(med(n) / wsf, 2),
    "CPU ms per MB (median)": cpuCell(n)
  }))
  const wsfCpu = cpu("websockify", "websockify")
  const hopCpu = (name: string, n: string, proc: string): Target => {
    const c = cpu(n, proc)
    return {
      name: `CPU per MB: ${name} <= websockify's single hop`,
      target: "<= 1.0 x websockify's CPU per MB",
      figure: Number.isNaN(c) || Number.isNaN(wsfCpu) ? "not measured" : `${round(c / wsfCpu, 2)} x (${round(c, 2)} vs ${round(wsfCpu, 2)} ms/MB)`,
      met: Number.isNaN(c) || Number.isNaN(wsfCpu) ? undefined : c <= wsfCpu
    }
  }
  const full = med("full_path")
  const realFull = med("real_full_path")
  const kubectl = med("kubectl_port_forward")
  const targets: Array<Target> = [
    hopCpu("the agent hop", "agent_hop", "agent"),
    hopCpu("the control-plane hop", "control_plane", "control plane"),
    {
      name: "full path through the real API server >= kubectl port-forward alone",
      target: ">= 1.0 x kubectl port-forward",
      figure: Number.isNaN(realFull) ? "not measured" : `${round(realFull / kubectl, 2)} x (${round(realFull / MB, 1)} vs ${round(kubectl / MB, 1)} MB/s)`,
      met: Number.isNaN(realFull) || Number.isNaN(kubectl) ? undefined : realFull >= kubectl
    },
    {
      name: "full path >= websockify",
      target: ">= 1.0 x websockify",
      figure: Number.isNaN(full) ? "not measured" : `${round(full / wsf, 2)} x (${round(full / MB, 1)} vs ${round(wsf / MB, 1)} MB/s)`,
      met: Number.isNaN(full) || Number.isNaN(wsf) ? undefined : full >= wsf
    },
    {
      name: "full path >= 30% of raw TCP",
      target: ">= 0.30 x raw TCP",
      figure: Number.isNaN(full) ? "not measured" : `${round(full / raw, 3)} x (${round(full / MB, 1)} vs ${round(raw / MB, 1)} MB/s)`,
      met: Number.isNaN(full) ? undefined : full / raw >= 0.3
    }
  ]
  return {
    name: "throughput",
    title: "1. VNC path throughput (one stream, MB/s = 10^6 bytes/s)",
    command: o.command,
    scale: `${o.reps} repetitions x ${seconds} s per path (after 1 s warm-up), interleaved`,
    table,
    targets,
    figures: Object.fromEntries([...all].map(([k, v]) => [k, { median_bytes_per_sec: median(v.map((r) => r.bytesPerSec)), runs_bytes_per_sec: v.map((r) => r.bytesPerSec), runs_cpu_ms_per_mb: v.map((r) => r.cpuMsPerMB) }])),
    notes: [
      "CPU ms per MB: CPU time (user + system, /proc/<pid>/stat) each relaying process spent while the stream was counted, divided by the MB moved. It is the per-hop cost whatever the machine's load does to the rate. The agent hop's agent and the control-plane hop's control plane are the two hops of the target.",
      "Source: a plain TCP blaster (256 KiB writes, back-pressured) in its own process; the viewer counts raw bytes (no RFB decoding) in another.",
      "Each path runs one stream at a time; repetitions are interleaved so load from other users of the machine hits every path alike.",
      ...s.errors
    ]
  }
}

export const latency = async (o: Opts): Promise<BenchResult> => {
  const s = await getStack()
  const specs = paths(s)
  const count = o.long ? 1000 : 200
  const direct = specs.raw_tcp
  const full = specs.full_path
  const loadSpec = full ?? specs.port_forward
  const results: Record<string, Array<Array<number>>> = { direct_idle: [], full_idle: [], direct_load: [], full_load: [], kubectl_idle: [], real_pf_idle: [], real_idle: [] }
  for (let rep = 0; rep < o.reps; rep++) {
    results.direct_idle!.push(await s.viewer.call("viewer.echo", { spec: direct, count }))
    if (full !== undefined) results.full_idle!.push(await s.viewer.call("viewer.echo", { spec: full, count }))
    // Through the real API server's port-forward: alone (as a WebSocket client, and as kubectl), and ours end to end.
    if (specs.real_port_forward !== undefined) results.real_pf_idle!.push(await s.viewer.call("viewer.echo", { spec: specs.real_port_forward, count }))
    if (specs.kubectl_port_forward !== undefined) results.kubectl_idle!.push(await s.viewer.call("viewer.echo", { spec: specs.kubectl_port_forward, count }))
    if (specs.real_full_path !== undefined) results.real_idle!.push(await s.viewer.call("viewer.echo", { spec: specs.real_full_path, count }))
  }
  // Under load: 20 other tunnels on the same agent stream at full speed (from another process).
  let loadRate = NaN
  if (full !== undefined) {
    const { group } = await s.loadViewer.call("viewer.open", { spec: loadSpec, n: 20 })
    try {
      await sleep(1000)
      const rates = s.loadViewer.call("viewer.measure", { group, seconds: 3 })
      // Under load a round trip waits behind the other tunnels' windows of bytes: fewer, slower samples.
      const loadCount = o.long ? 200 : 50
      for (let rep = 0; rep < o.reps; rep++) {
        results.direct_load!.push(await s.viewer.call("viewer.echo", { spec: direct, count: loadCount, warmup: 5 }))
        results.full_load!.push(await s.viewer.call("viewer.echo", { spec: full, count: loadCount, warmup: 5 }))
      }
      loadRate = (await rates).reduce((n: number, r: any) => n + r.bytesPerSec, 0)
    } finally {
      await s.loadViewer.call("viewer.close", { group })
    }
  }
  const stat = (k: string, p: number) => median(results[k]!.map((r) => percentile(r, p)))
  const row = (label: string, k: string) =>
    results[k]!.length === 0 ? undefined : { case: label, "p50 ms": round(stat(k, 50), 3), "p99 ms": round(stat(k, 99), 3), "max ms": round(median(results[k]!.map((r) => Math.max(...r))), 2) }
  const table = [
    row("direct TCP, idle", "direct_idle"),
    row("full path, idle", "full_idle"),
    row("direct TCP, 20 tunnels streaming", "direct_load"),
    row("full path, 20 tunnels streaming", "full_load"),
    row("real API server port-forward alone, idle", "real_pf_idle"),
    row("kubectl port-forward (real API server), idle", "kubectl_idle"),
    row("full path through the real API server, idle", "real_idle")
  ].filter((r) => r !== undefined)
  const addedIdle50 = stat("full_idle", 50) - stat("direct_idle", 50)
  const addedIdle99 = stat("full_idle", 99) - stat("direct_idle", 99)
  const addedLoad50 = stat("full_load", 50) - stat("direct_load", 50)
  const addedLoad99 = stat("full_load", 99) - stat("direct_load", 99)
  table.push({ case: "added by the full path, idle", "p50 ms": round(addedIdle50, 3), "p99 ms": round(addedIdle99, 3), "max ms": "" as never })
  table.push({ case: "added by the full path, under load", "p50 ms": round(addedLoad50, 3), "p99 ms": round(addedLoad99, 3), "max ms": "" as never })
  if (results.real_idle!.length > 0 && results.real_pf_idle!.length > 0) {
    table.push({
      case: "added by our two hops over the real port-forward alone, idle",
      "p50 ms": round(stat("real_idle", 50) - stat("real_pf_idle", 50), 3),
      "p99 ms": round(stat("real_idle", 99) - stat("real_pf_idle", 99), 3),
      "max ms": "" as never
    })
  }
  return {
    name: "latency",
    title: "2. Added latency (30-byte echo round trips: 3 RFB FramebufferUpdateRequests)",
    command: o.command,
    scale: `${o.reps} repetitions x ${count} round trips per idle case, ${o.long ? 200 : 50} under load (warm-up round trips dropped); median of per-repetition percentiles`,
    table,
    targets: [
      { name: "added p50, idle", target: "<= 1 ms", figure: `${round(addedIdle50, 3)} ms`, met: Number.isNaN(addedIdle50) ? undefined : addedIdle50 <= 1 },
      { name: "added p99, under load", target: "<= 10 ms", figure: `${round(addedLoad99, 3)} ms`, met: Number.isNaN(addedLoad99) ? undefined : addedLoad99 <= 10 }
    ],
    figures: { results_ms: results, load_bytes_per_sec: loadRate },
    notes: [
      `Load: 20 viewers in a separate process streaming through the same agent and control plane (${round(loadRate / MB, 1)} MB/s together).`,
      "Direct TCP is measured under the same load, so the 'added' row is what the path adds, not what the busy CPU adds.",
      ...s.errors
    ]
  }
}

export const isolation = async (o: Opts): Promise<BenchResult> => {
  const s = await getStack()
  const specs = paths(s)
  const spec = specs.full_path
  if (spec === undefined || s.cp === undefined || s.agentB === undefined) {
    return { name: "isolation", title: "3. Isolation", command: o.command, scale: "", table: [], targets: [{ name: "others keep >= 90%", target: ">= 0.90", figure: "not measured", met: undefined }], figures: {}, notes: ["full path unavailable", ...s.errors] }
  }
  const others = 3
  const seconds = o.long ? 8 : 3
  const solo: Array<number> = []
  const stalledRuns: Array<number> = []
  const held: Array<{ heldBytes: number; viewerBytes: number; sourceBytes: number; cpHeldMax: number; agentHeldMax: number; cpRssDeltaMiB: number; agentRssDeltaMiB: number; kubeRssDeltaMiB: number }> = []
  const agentMetrics = `http://127.0.0.1:${s.agentB.metricsPort}/metrics`
  const cpMetrics = `${s.cp.base}/metrics`
  for (let rep = 0; rep < o.reps; rep++) {
    const { group } = await s.viewer.call("viewer.open", { spec, n: others })
    try {
      const a = await s.viewer.call("viewer.measure", { group, seconds, warmupMs: 1000 })
      solo.push(a.reduce((n: number, r: any) => n + r.bytesPerSec, 0) / others)
      // One more viewer on the same agent, which stops reading after its first bytes.
      const cpBefore = sampleProc(s.cp.proc.pid)!.rssMiB
      const agBefore = sampleProc(s.agentB.proc.pid)!.rssMiB
      const kubeBefore = sampleProc(s.kube.pid)!.rssMiB
      const stalled = await s.loadViewer.call("viewer.open", { spec, n: 1 })
      await sleep(300)
      await s.loadViewer.call("viewer.pause", { group: stalled.group, index: 0, paused: true })
      await sleep(1500)
      const measuring = s.viewer.call("viewer.measure", { group, seconds, warmupMs: 0 })
      // What each process says it holds, sampled while the others stream and the stalled one stays stalled.
      let cpHeldMax = 0
      let agentHeldMax = 0
      for (let i = 0; i < 5; i++) {
        await sleep((seconds * 1000) / 6)
        cpHeldMax = Math.max(cpHeldMax, await gauge(cpMetrics, "streamspace_control_plane_vnc_buffered_bytes_max"))
        agentHeldMax = Math.max(agentHeldMax, await gauge(agentMetrics, "streamspace_agent_vnc_tunnel_buffered_bytes_max"))
      }
      const b = await measuring
      stalledRuns.push(b.reduce((n: number, r: any) => n + r.bytesPerSec, 0) / others)
      const st = await s.loadViewer.call("viewer.pause", { group: stalled.group, index: 0, paused: true })
      const source = await s.target.call("target.written", { tag: st.tag })
      held.push({
        heldBytes: source - st.bytes,
        viewerBytes: st.bytes,
        sourceBytes: source,
        cpHeldMax,
        agentHeldMax,
        cpRssDeltaMiB: sampleProc(s.cp.proc.pid)!.rssMiB - cpBefore,
        agentRssDeltaMiB: sampleProc(s.agentB.proc.pid)!.rssMiB - agBefore,
        kubeRssDeltaMiB: sampleProc(s.kube.pid)!.rssMiB - kubeBefore
      })
      await s.loadViewer.call("viewer.close", { group: stalled.group })
    } finally {
      await s.viewer.call("viewer.close", { group })
    }
  }
  const ratio = median(stalledRuns) / median(solo)
  const h = held[Math.floor(held.length / 2)]!
  const heldMed = median(held.map((x) => x.heldBytes))
  const window = 1024 * 1024
  const cpHeld = Math.max(...held.map((x) => x.cpHeldMax))
  const agentHeld = Math.max(...held.map((x) => x.agentHeldMax))
  return {
    name: "isolation",
    title: "3. Isolation: one stalled viewer among several tunnels on one agent",
    command: o.command,
    scale: `${o.reps} repetitions; ${others} streaming viewers, ${seconds} s each phase; window 1 MiB`,
    table: [
      { case: `${others} viewers alone`, "MB/s per viewer": round(median(solo) / MB, 1), runs: solo.map((x) => round(x / MB, 0)).join(" / ") },
      { case: `${others} viewers + 1 stalled viewer`, "MB/s per viewer": round(median(stalledRuns) / MB, 1), runs: stalledRuns.map((x) => round(x / MB, 0)).join(" / ") },
      { case: "ratio", "MB/s per viewer": round(ratio, 3), runs: "" },
      { case: "largest buffer held for one tunnel (gauges, max over samples): control plane / agent", "MB/s per viewer": `${round(cpHeld / MiB, 2)} / ${round(agentHeld / MiB, 2)} MiB`, runs: held.map((x) => `${round(x.cpHeldMax / MiB, 2)}/${round(x.agentHeldMax / MiB, 2)}`).join(" ; ") },
      { case: "stalled tunnel: source bytes not delivered (all buffers, incl. kernel)", "MB/s per viewer": `${round(heldMed / MiB, 2)} MiB`, runs: held.map((x) => round(x.heldBytes / MiB, 2)).join(" / ") },
      { case: "RSS change during the stall: control plane / agent", "MB/s per viewer": `${round(h.cpRssDeltaMiB, 1)} / ${round(h.agentRssDeltaMiB, 1)} MiB`, runs: held.map((x) => `${round(x.cpRssDeltaMiB, 1)}/${round(x.agentRssDeltaMiB, 1)}`).join(" ; ") },
      { case: "RSS change during the stall: kube-testserver (port-forward server)", "MB/s per viewer": `${round(h.kubeRssDeltaMiB, 1)} MiB`, runs: held.map((x) => round(x.kubeRssDeltaMiB, 1)).join(" / ") }
    ],
    targets: [
      { name: "others keep >= 90% of solo throughput", target: ">= 0.90", figure: `${round(ratio, 3)}`, met: ratio >= 0.9 },
      {
        name: "stalled viewer's memory within its window",
        target: "agent and control plane each hold at most the 1 MiB window for any tunnel (their buffered-bytes gauges)",
        figure: Number.isNaN(cpHeld) || Number.isNaN(agentHeld)
          ? "gauges not readable"
          : `largest held: CP ${round(cpHeld / 1024, 0)} KiB, agent ${round(agentHeld / 1024, 0)} KiB (RSS change of the median run: CP ${round(h.cpRssDeltaMiB, 1)} MiB, agent ${round(h.agentRssDeltaMiB, 1)} MiB)`,
        met: Number.isNaN(cpHeld) || Number.isNaN(agentHeld) ? undefined : cpHeld <= window && agentHeld <= window
      }
    ],
    figures: { solo_bytes_per_sec: solo, with_stalled_bytes_per_sec: stalledRuns, held },
    notes: [
      "The stalled viewer is a separate process that pauses its socket: the control plane's send to it backs up, it stops returning credit, and the agent stops reading that port-forward.",
      "The memory check reads what the processes report: streamspace_agent_vnc_tunnel_buffered_bytes_max (port-forward bytes read and not yet sent, plus bytes for the session not yet written) and streamspace_control_plane_vnc_buffered_bytes_max (bytes relayed to a viewer and not yet written to its socket, plus a viewer's bytes waiting for credit), sampled five times during each stall. RSS changes are shown too but are dominated by garbage-collector noise while other tunnels stream.",
      "Undelivered bytes = bytes the source wrote on the stalled connection minus bytes the viewer read: kernel buffers on four loopback sockets plus whatever any process buffers; kube-testserver (test infrastructure standing in for the kubelet) keeps reading the source while the agent has paused the port-forward WebSocket, so they pile up there (see its RSS row).",
      ...s.errors
    ]
  }
}
