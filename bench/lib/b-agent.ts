// Benchmark 4: the agent process's footprint. A dedicated agent (its own process) against a fake control
// plane (another process) and the shared kube-testserver/target: idle, 100 sessions, 50 tunnels streaming,
// then a soak of tunnel open/close churn comparing RSS at its start and end. The agent runs as it ships
// (agent-launch.ts: the bundle with docker/agent/Dockerfile's node flags and ENV); RSS is split into what is
// private to the process (anonymous memory) and what is the node binary's pages (file-backed, shared).
import { waitForPromise } from "@streamspace/testbed"
import { agentLaunch } from "./agent-launch.ts"
import { spawnWorker } from "./rpc.ts"
import { getStack } from "./stack.ts"
import { startAgent } from "./system.ts"
import type { BenchResult } from "./util.ts"
import { measureProc, median, memorySplit, round, sampleProc, sleep } from "./util.ts"

const MB = 1e6

export const agentFootprint = async (o: { long: boolean; reps: number; command: string }): Promise<BenchResult> => {
  const s = await getStack()
  const fakecp = spawnWorker("fakecp-footprint")
  const { url } = await fakecp.call<{ url: string }>("fakecp.start", {})
  const agent = await startAgent({ id: "bench-agent-c", controlPlaneUrl: url, kubeconfig: s.kubeInfo.kubeconfig })
  try {
    await waitForPromise("agent C connected", async () => (await fakecp.call("fakecp.connected")).connected, { timeout: 60_000, interval: 50 })
    const pid = agent.proc.pid
    const window = o.long ? 15_000 : 5_000
    await sleep(2000)
    const idle = await measureProc(pid, () => sleep(window))

    const ids = Array.from({ length: 100 }, (_, i) => `bench-c-${i}`)
    const created = await fakecp.call("fakecp.createSessions", { ids, concurrency: 10 })
    if (created.failures.length > 0) throw new Error(`creating 100 sessions: ${created.failures.slice(0, 3).join("; ")}`)
    await sleep(1000)
    const hundred = await measureProc(pid, () => sleep(window))

    const tunnels: Array<number> = await fakecp.call("fakecp.openTunnels", { sessionIds: ids.slice(0, 50), blast: true })
    await sleep(1000)
    const streaming = await measureProc(pid, () => fakecp.call("fakecp.measure", { ids: tunnels, seconds: window / 1000 }))
    const streamingSplit = memorySplit(pid)
    const aggregate = (streaming.value as Array<{ bytesPerSec: number }>).reduce((n, r) => n + r.bytesPerSec, 0)
    const perTunnel = (streaming.value as Array<{ bytesPerSec: number }>).map((r) => r.bytesPerSec)
    await fakecp.call("fakecp.closeTunnels", { ids: tunnels })
    await sleep(1000)
    const after = sampleProc(pid)!

    // Soak: tunnels opened and closed in a loop (10 at a time, streaming for 1 s each round).
    const soakMs = o.long ? 600_000 : 60_000
    const rss: Array<{ t: number; rss: number }> = []
    const t0 = Date.now()
    let rounds = 0
    const cpu0 = sampleProc(pid)!
    while (Date.now() - t0 < soakMs) {
      const batch = ids.slice((rounds * 10) % 100, ((rounds * 10) % 100) + 10)
      const open: Array<number> = await fakecp.call("fakecp.openTunnels", { sessionIds: batch, blast: true })
      await sleep(1000)
      await fakecp.call("fakecp.closeTunnels", { ids: open })
      rounds++
      rss.push({ t: Date.now() - t0, rss: sampleProc(pid)!.rssMiB })
    }
    const cpu1 = sampleProc(pid)!
    const tenth = Math.max(1, Math.floor(rss.length / 10))
    // The first rounds warm up (JIT, pools); compare the second tenth with the last tenth.
    const startRss = median(rss.slice(tenth, 2 * tenth).map((x) => x.rss))
    const endRss = median(rss.slice(-tenth).map((x) => x.rss))
    const growth = (endRss - startRss) / startRss
    const soakCpu = (100 * (cpu1.cpuSeconds - cpu0.cpuSeconds)) / ((cpu1.at - cpu0.at) / 1000)
    const split = memorySplit(pid)
    await fakecp.call("fakecp.deleteSessions", { ids })

    const loaded = Math.max(hundred.rssPeakMiB, streaming.rssPeakMiB)
    return {
      name: "agent",
      title: "4. Agent footprint (one agent process)",
      command: o.command,
      scale: `${window / 1000} s per phase; soak ${soakMs / 1000} s of open/close churn (${rounds} rounds of 10 tunnels x 1 s)${o.long ? "" : " — the 10-minute soak runs with --long"}`,
      table: [
        { phase: "idle (connected, no sessions)", "RSS MiB (peak)": round(idle.rssPeakMiB, 1), "CPU % of a core": round(idle.cpuPercent, 1), notes: "" },
        { phase: "100 sessions, no tunnels", "RSS MiB (peak)": round(hundred.rssPeakMiB, 1), "CPU % of a core": round(hundred.cpuPercent, 1), notes: `created in ${round(created.ms / 1000, 1)} s` },
        {
          phase: "100 sessions, 50 tunnels streaming",
          "RSS MiB (peak)": round(streaming.rssPeakMiB, 1),
          "CPU % of a core": round(streaming.cpuPercent, 1),
          notes: `${streamingSplit === undefined ? "" : `at the end: ${streamingSplit.anonMiB} anon + ${streamingSplit.fileMiB} file MiB; `}${round(aggregate / MB, 1)} MB/s total; per tunnel min/median/max ${round(Math.min(...perTunnel) / MB, 2)}/${round(median(perTunnel) / MB, 2)}/${round(Math.max(...perTunnel) / MB, 2)} MB/s`
        },
        { phase: "tunnels closed again", "RSS MiB (peak)": round(after.rssMiB, 1), "CPU % of a core": "", notes: "" },
        { phase: "soak: start -> end (median of 2nd and last tenth)", "RSS MiB (peak)": `${round(startRss, 1)} -> ${round(endRss, 1)}`, "CPU % of a core": round(soakCpu, 1), notes: `${round(growth * 100, 1)} % growth` }
      ],
      targets: [
        { name: "RSS with 100 sessions and 50 active tunnels", target: "<= 100 MB", figure: `${round(loaded, 1)} MiB`, met: loaded <= 100 },
        { name: "RSS growth over the soak", target: "< 5 %", figure: `${round(growth * 100, 1)} % over ${soakMs / 1000} s`, met: growth < 0.05 }
      ],
      figures: { launch: agentLaunch().describe, rss_split_streaming: streamingSplit, rss_split_after_soak: split, idle, hundred, streaming: { ...streaming, value: undefined, aggregate_bytes_per_sec: aggregate, per_tunnel: perTunnel }, after, soak: { rss, startRss, endRss, growth, rounds, cpu: soakCpu } },
      notes: [
        `Agent command: ${agentLaunch().describe}.`,
        "RSS from /proc/<pid>/status (VmRSS), sampled every 250 ms; CPU from /proc/<pid>/stat over the phase.",
        ...(split === undefined ? [] : [`RSS at the end of the soak: ${split.anonMiB} MiB anonymous (private to the agent) + ${split.fileMiB} MiB file-backed (mostly the node binary's pages, shared and reclaimable).`]),
        "The fake control plane returns credit as soon as bytes arrive (an instantly reading viewer), so the 50 tunnels run as fast as the agent can move bytes.",
        ...(o.long ? [] : ["Default run: 60 s soak. The issue's 10-minute soak: `npm run bench -- agent --long`."])
      ]
    }
  } finally {
    await agent.stop()
    await fakecp.stop()
  }
}
