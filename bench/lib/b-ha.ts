// Benchmarks 9-11 (issue 15, control-plane high availability), each on its own HA test bed (ha.ts: PostgreSQL,
// replicas, balancer):
//   ha-relay   - cross-replica VNC throughput and keystroke-echo latency against same-replica
//   ha-scale   - 3 replicas: agents and sessions spread; dispatch of a burst of 1,000 creates through the balancer
//   ha-restart - rolling restart of 3 replicas (SIGTERM, drain, start): how long each viewer is without frames
import { waitForPromise } from "@streamspace/testbed"
import { enrolSimAgents } from "./b-controlplane.ts"
import { type Cluster, withCluster } from "./ha.ts"
import { spawnWorker, type Worker } from "./rpc.ts"
import { type AgentProc, BOOTSTRAP_TOKEN, ensureTemplate, enrollAgent, runningSession, signJwt, startAgent } from "./system.ts"
import type { BenchResult } from "./util.ts"
import { median, now, percentile, round, sleep } from "./util.ts"

type O = { long: boolean; reps: number; command: string }
const MB = 1e6
const step = (what: string) => console.log(`  [${new Date().toISOString().slice(11, 19)}] ${what}`)

/** target (TCP source/echo) and kube-testserver whose every port-forward reaches it, each in its own process. */
const startKube = async (stops: Array<() => Promise<void>>) => {
  const target = spawnWorker("target")
  stops.push(target.stop)
  const { port } = await target.call<{ port: number }>("target.start")
  const kube = spawnWorker("kube")
  stops.push(kube.stop)
  const info = await kube.call<{ kubeconfig: string }>("kube.start", { startDelayMs: 0, target: { host: "127.0.0.1", port } })
  return { target, kube, kubeconfig: info.kubeconfig }
}

const cleanup = async (stops: Array<() => Promise<void>>) => {
  for (const s of stops.reverse()) await s().catch(() => undefined)
}

const vncSpec = (wsBase: string, session: string, token: string) => ({
  kind: "ws",
  url: `${wsBase}/api/v1/sessions/${session}/vnc`,
  headers: { authorization: `Bearer ${token}` }
})

// ================================================================================================
// 9. cross-replica VNC relay against same-replica
// ================================================================================================
export const haRelay = (o: O): Promise<BenchResult> =>
  withCluster(2, async (c) => {
    const stops: Array<() => Promise<void>> = []
    try {
      const { kubeconfig } = await startKube(stops)
      const viewer = spawnWorker("viewer")
      stops.push(viewer.stop)
      const [a, b] = c.replicas as [Cluster["lb"], Cluster["lb"]]
      step("agent on replica A (dialled directly), enrolling it and creating a session")
      const agent = await startAgent({ id: "ha-relay-agent", controlPlaneUrl: a.wsBase, kubeconfig })
      stops.push(agent.stop)
      await enrollAgent(a, agent.id)
      await ensureTemplate(a)
      const token = signJwt("bench-ha-user", "user")
      const session = await runningSession(a, token)
      const holder = c.holders().get(agent.id)
      if (holder !== 0) throw new Error(`the agent should be on replica A (0), agent_presence says ${holder}`)
      const specs = { same: vncSpec(a.wsBase, session, token), cross: vncSpec(b.wsBase, session, token) }
      const seconds = o.long ? 10 : 3
      const count = o.long ? 1000 : 200
      const mbps: Record<string, Array<number>> = { same: [], cross: [] }
      const echo: Record<string, Array<Array<number>>> = { same: [], cross: [] }
      for (let rep = 0; rep < o.reps; rep++) {
        for (const k of ["same", "cross"] as const) {
          const { group } = await viewer.call("viewer.open", { spec: specs[k], n: 1 })
          try {
            mbps[k]!.push((await viewer.call("viewer.measure", { group, seconds, warmupMs: 1000 }))[0].bytesPerSec)
          } finally {
            await viewer.call("viewer.close", { group })
          }
        }
        for (const k of ["same", "cross"] as const) echo[k]!.push(await viewer.call("viewer.echo", { spec: specs[k], count }))
        step(`rep ${rep + 1}: same ${round(mbps.same!.at(-1)! / MB, 1)} MB/s, cross ${round(mbps.cross!.at(-1)! / MB, 1)} MB/s`)
      }
      const stat = (k: string, p: number) => median(echo[k]!.map((r) => percentile(r, p)))
      const ratio = median(mbps.cross!) / median(mbps.same!)
      const added50 = stat("cross", 50) - stat("same", 50)
      const added99 = stat("cross", 99) - stat("same", 99)
      const row = (label: string, k: string) => ({
        path: label,
        "MB/s (median)": round(median(mbps[k]!) / MB, 1),
        runs: mbps[k]!.map((x) => round(x / MB, 0)).join(" / "),
        "echo p50 ms": round(stat(k, 50), 3),
        "echo p99 ms": round(stat(k, 99), 3)
      })
      return {
        name: "ha-relay",
        title: "9. Cross-replica VNC relay against same-replica (2 replicas on PostgreSQL)",
        command: o.command,
        scale: `${o.reps} interleaved repetitions: one stream for ${seconds} s per path (after 1 s warm-up), then ${count} echo round trips of 30 bytes (3 RFB FramebufferUpdateRequests) per path`,
        table: [
          row("same replica: viewer on A, agent on A", "same"),
          row("cross replica: viewer on B -> peer relay -> A -> agent", "cross"),
          { path: "cross / same", "MB/s (median)": round(ratio, 3), runs: "", "echo p50 ms": round(added50, 3), "echo p99 ms": round(added99, 3) }
        ],
        targets: [
          { name: "cross-replica throughput >= half of same-replica", target: ">= 0.5 x same replica", figure: `${round(ratio, 2)} x (${round(median(mbps.cross!) / MB, 1)} vs ${round(median(mbps.same!) / MB, 1)} MB/s)`, met: ratio >= 0.5 },
          { name: "latency added by the peer hop, p50 idle", target: "<= 1 ms", figure: `${round(added50, 3)} ms (p99 ${added99 >= 0 ? "+" : ""}${round(added99, 3)} ms)`, met: added50 <= 1 }
        ],
        figures: { bytes_per_sec: mbps, echo_ms: echo },
        notes: [
          "Both paths are the whole product path: target <- kube-testserver port-forward <- real agent -> replica A; the cross path adds B's peer WebSocket to A (authenticated with a CLUSTER_SECRET peer token).",
          "The 'cross / same' row: MB/s column is the throughput ratio; the echo columns are what the peer hop adds (cross minus same).",
          "Each replica, the agent, kube-testserver, the target and the viewer are separate processes; PostgreSQL is Debian's, on the same machine."
        ]
      }
    } finally {
      await cleanup(stops)
    }
  })

// ================================================================================================
// 10. control-plane scale with 3 replicas
// ================================================================================================
export const haScale = (o: O): Promise<BenchResult> =>
  withCluster(3, async (c) => {
    const agentsN = o.long ? 1000 : 300
    const burstN = 1000
    const workers: Array<Worker> = []
    try {
      await ensureTemplate(c.lb)
      // Enrolment on replica 0, then every agent dials the balancer with its credential, as deployed. On PostgreSQL
      // about a third of the agents are approved in the first minute and the rest stay pending, unlisted (see
      // bench/FINDINGS.md), so enrolment gets 60 s and the burst runs on the agents enrolled by then.
      step(`enrolling ${agentsN} simulated agents on replica 0 (60 s budget)`)
      const enrol = await enrolSimAgents(c.replicas[0]!, agentsN, "ha", 2, 60_000)
      workers.push(...enrol.workers)
      step(`${enrol.connected} agents enrolled in ${round(enrol.enrolMs / 1000, 1)} s; redialling them through the balancer`)
      const t0 = now()
      for (const w of workers) {
        const credentials = await w.call<Record<string, string>>("agents.credentials")
        await w.call("agents.stop")
        await w.call("agents.start", { url: c.lb.wsBase, ids: Object.keys(credentials), token: BOOTSTRAP_TOKEN, credentials, heartbeatMs: 5000, reconnectBaseMs: 1000, rampMs: 3000 })
      }
      const connected = async () => (await Promise.all(workers.map((w) => w.call("agents.status")))).reduce((n, st) => n + st.connected, 0)
      const connectBy = Date.now() + 120_000
      while ((await connected()) < enrol.connected && Date.now() < connectBy) await sleep(250)
      const redialMs = now() - t0
      const back = await connected()
      step(`${back} agents connected through the balancer in ${round(redialMs / 1000, 1)} s`)
      await sleep(3000)
      const agentsBy = [0, 0, 0]
      for (const r of c.holders().values()) if (r >= 0) agentsBy[r]!++

      const users = Array.from({ length: 20 }, (_, i) => signJwt(`bench-ha-user-${i}`, "user"))
      const sent: Array<number> = []
      const answered: Array<number> = []
      const ids: Array<string | undefined> = []
      const errors = new Map<string, number>()
      const before = new Map(c.set.balancer.counts())
      step(`burst: ${burstN} creates at once through the balancer`)
      await Promise.all(Array.from({ length: burstN }, async (_, i) => {
        sent[i] = now()
        const r = await c.lb.api("POST", "/api/v1/sessions", { template: "bench" }, users[i % users.length], 300_000)
          .catch((e: Error) => ({ status: 0, json: { error: { code: e.name } } }))
        answered[i] = now()
        if (r.status === 201) ids[i] = r.json.id
        else errors.set(`${r.status} ${r.json?.error?.code ?? ""}`, (errors.get(`${r.status} ${r.json?.error?.code ?? ""}`) ?? 0) + 1)
      }))
      await sleep(2000)
      const seen = await Promise.all(workers.map((w) => w.call<Array<number | null>>("agents.sessionTimes", { ids: ids.map((x) => x ?? "none") })))
      const dispatch: Array<number> = []
      let unseen = 0
      for (let i = 0; i < burstN; i++) {
        if (ids[i] === undefined) continue
        const t = seen.map((s) => s[i]).find((x) => x !== null && x !== undefined)
        if (t === undefined || t === null) unseen++
        else dispatch.push(t - sent[i]!)
      }
      const apiLat = answered.map((a, i) => a - sent[i]!)
      const conns = c.set.replicas.map((r) => (c.set.balancer.counts().get(`127.0.0.1:${r.port}`) ?? 0) - (before.get(`127.0.0.1:${r.port}`) ?? 0))
      const idList = ids.filter((x) => x !== undefined).map((x) => `'${x}'`).join(",")
      const sessionsBy = [0, 0, 0]
      if (idList.length > 0) {
        const h = c.holders()
        for (const [agent] of c.sql(`SELECT agent_id FROM sessions WHERE id IN (${idList}) AND agent_id IS NOT NULL`)) {
          const r = h.get(agent!)
          if (r !== undefined && r >= 0) sessionsBy[r]!++
        }
      }
      const created = ids.filter((x) => x !== undefined).length
      const share = (xs: Array<number>) => {
        const total = xs.reduce((a, b) => a + b, 0)
        return total === 0 ? NaN : Math.max(...xs.map((x) => Math.abs(x / (total / xs.length) - 1)))
      }
      const p99 = percentile(dispatch, 99)
      const spreadOk = share(agentsBy) <= 0.5 && share(sessionsBy) <= 0.5
      return {
        name: "ha-scale",
        title: "10. Control-plane scale with 3 replicas on PostgreSQL (through the balancer)",
        command: o.command,
        scale: `${agentsN} simulated agents (2 processes) enrolling on replica 0 for up to 60 s, then those enrolled dialling the balancer; a burst of ${burstN} POST /sessions at once through the balancer, as 20 users`,
        table: [
          { what: "agents held (replica 0 / 1 / 2, agent_presence)", figure: agentsBy.join(" / ") },
          { what: "burst sessions placed on agents held by replica 0 / 1 / 2", figure: sessionsBy.join(" / ") },
          { what: "burst API connections answered by replica 0 / 1 / 2 (balancer)", figure: conns.join(" / ") },
          { what: "enrolment on replica 0, then connected through the balancer", figure: `${enrol.connected}/${agentsN} in ${round(enrol.enrolMs / 1000, 1)} s, then ${back} in ${round(redialMs / 1000, 1)} s` },
          { what: "burst: created / errors", figure: `${created} / ${burstN - created}${errors.size > 0 ? ` (${[...errors].map(([k, n]) => `${k} x${n}`).join(", ")})` : ""}` },
          { what: "burst dispatch (POST sent -> create_session at the agent) p50 / p99 / max ms", figure: `${round(percentile(dispatch, 50), 1)} / ${round(p99, 1)} / ${round(Math.max(...dispatch), 1)}` },
          { what: "burst API response p50 / p99 ms", figure: `${round(percentile(apiLat, 50), 1)} / ${round(percentile(apiLat, 99), 1)}` },
          { what: "created but not seen by an agent within 2 s of the last answer", figure: String(unseen) }
        ],
        targets: [
          { name: "agents and sessions spread over the 3 replicas", target: "each replica within +-50 % of an even share of agents and of sessions", figure: `agents ${agentsBy.join("/")}, sessions ${sessionsBy.join("/")}`, met: spreadOk },
          { name: "burst dispatch p99 with 3 replicas", target: "<= 100 ms", figure: `${round(p99, 1)} ms (p50 ${round(percentile(dispatch, 50), 1)} ms)`, met: dispatch.length > 0 && p99 <= 100 }
        ],
        figures: { agentsBy, sessionsBy, conns, dispatch_ms: dispatch, api_ms: apiLat, unseen, errors: Object.fromEntries(errors) },
        notes: [
          "A create is answered by the replica its connection reached; the command goes to the agent's socket on whichever replica holds it (a NOTIFY wakes the holder when it is another one).",
          "The balancer is the testbed's TCP round-robin (like a Kubernetes Service) and runs in the orchestrating process.",
          "Sessions per replica count the burst's sessions by the replica holding their agent when measured."
        ]
      }
    } finally {
      for (const w of workers) await w.call("agents.stop").catch(() => undefined)
      for (const w of workers) await w.stop().catch(() => undefined)
    }
  })

// ================================================================================================
// 11. rolling restart of 3 replicas
// ================================================================================================
interface Report {
  readonly tag: string
  readonly gaps: Array<{ start: number; end: number }>
  readonly closes: Array<string>
  readonly connects: number
  readonly sinceLastMs: number
}

export const haRestart = (o: O): Promise<BenchResult> =>
  withCluster(3, async (c) => {
    const stops: Array<() => Promise<void>> = []
    try {
      const { kubeconfig } = await startKube(stops)
      const viewers = spawnWorker("followers")
      stops.push(viewers.stop)
      await ensureTemplate(c.lb)
      const agents: Array<AgentProc> = []
      step("3 real agents dialling the balancer")
      for (let i = 0; i < 3; i++) {
        const a = await startAgent({ id: `ha-restart-${i}`, controlPlaneUrl: c.lb.wsBase, kubeconfig })
        stops.push(a.stop)
        agents.push(a)
        await enrollAgent(c.replicas[0]!, a.id)
      }
      const token = signJwt("bench-ha-viewer", "user")
      const nSessions = 6
      const sessions: Array<string> = []
      // Through the balancer; a create refused or failed is retried (up to 5 times) and counted.
      const createFailures: Array<string> = []
      for (let i = 0; i < nSessions; i++) {
        for (let attempt = 0; ; attempt++) {
          try {
            sessions.push(await runningSession(c.lb, token, "bench", 30_000))
            break
          } catch (e) {
            createFailures.push((e as Error).message.slice(0, 200))
            if (attempt >= 4) throw e
          }
        }
      }
      const { group } = await viewers.call("follow.open", {
        urls: sessions.map((s) => `${c.lb.wsBase}/api/v1/sessions/${s}/vnc`),
        headers: { authorization: `Bearer ${token}` },
        tagPrefix: "rr"
      })
      const report = () => viewers.call<Array<Report>>("follow.report", { group })
      const allFlowing = async () => (await report()).every((r) => r.sinceLastMs < 100 && r.connects > 0)
      await waitForPromise("every viewer receiving frames", allFlowing, { timeout: 60_000, interval: 100 })
      await sleep(2000)
      const placement = (await Promise.all(sessions.map((s) => c.lb.api("GET", `/api/v1/sessions/${s}`, undefined, token)))).map((r) => r.json.agent_id as string)
      const rows: Array<Record<string, string | number>> = []
      const windows: Array<{ pass: number; replica: number; start: number; end: number; stopMs: number; startMs: number; agentsBefore: string; agentsAfter: string; notBack: Array<string> }> = []
      const all = c.set.replicas.map((r) => ({ host: "127.0.0.1", port: r.port }))
      for (let pass = 1; pass <= o.reps; pass++) for (const r of c.set.replicas) {
        const h0 = c.holders()
        const agentsBefore = agents.map((a) => h0.get(a.id) ?? "-").join("/")
        step(`restarting replica ${r.index} (holds agents ${agents.filter((a) => h0.get(a.id) === r.index).map((a) => a.id).join(", ") || "none"})`)
        const start = now()
        // As a Kubernetes Service does when a pod terminates: no new connections to it, then SIGTERM.
        c.set.balancer.setBackends(all.filter((b) => b.port !== r.port))
        await r.kill("SIGTERM")
        const stopped = now()
        await r.start()
        const started = now()
        c.set.balancer.setBackends(all)
        // Up to 30 s for every viewer to have frames again; one that has not is recorded as not back (and why).
        const backBy = Date.now() + 30_000
        while (!(await allFlowing()) && Date.now() < backBy) await sleep(50)
        await sleep(3000)
        const notBack = (await report()).filter((v) => v.sinceLastMs >= 100).map((v) => `${v.tag} (last close: ${v.closes.at(-1) ?? "none"})`)
        if (notBack.length > 0) step(`not back 33 s after the restart: ${notBack.join(", ")}`)
        const h1 = c.holders()
        windows.push({ pass, replica: r.index, start, end: now(), stopMs: stopped - start, startMs: started - stopped, agentsBefore, agentsAfter: agents.map((a) => h1.get(a.id) ?? "-").join("/"), notBack })
      }
      const final = await report()
      const perRestart = windows.map((w) => {
        const without = final.map((v) => v.gaps.filter((g) => g.end > w.start && g.start < w.end).reduce((n, g) => n + (g.end - g.start), 0))
        const closes = final.map((v) => v.closes.length)
        return { w, without, closes }
      })
      for (const { w, without } of perRestart) {
        rows.push({
          pass: w.pass,
          "replica restarted": w.replica,
          "replica holding agent 0/1/2 (before -> after)": `${w.agentsBefore} -> ${w.agentsAfter}`,
          "SIGTERM -> exit s": round(w.stopMs / 1000, 2),
          "start -> healthy s": round(w.startMs / 1000, 2),
          "ms without frames, per viewer": without.map((x) => round(x, 0)).join(" / "),
          "viewers interrupted": without.filter((x) => x > 0).length,
          "max ms": round(Math.max(...without), 0),
          "not back after 33 s": w.notBack.length
        })
      }
      const worst = Math.max(...perRestart.flatMap((p) => p.without))
      const errorLines = c.set.replicas.flatMap((r) => r.output().split("\n").filter((l) => /level=error/.test(l)).map((l) => `replica ${r.index}: ${(/msg="([^"]*)"/.exec(l)?.[1] ?? l).slice(0, 200)}`))
      const stuck = windows.flatMap((w) => w.notBack.map((v) => `pass ${w.pass}, restart of replica ${w.replica}: ${v}`))
      const closes = final.flatMap((v) => v.closes)
      const closeKinds = new Map<string, number>()
      for (const k of closes) closeKinds.set(k.split(" ")[0]!, (closeKinds.get(k.split(" ")[0]!) ?? 0) + 1)
      return {
        name: "ha-restart",
        title: "11. Rolling restart of 3 replicas: time each viewer is without frames",
        command: o.command,
        scale: `3 replicas on PostgreSQL, 3 real agents and ${nSessions} viewers (one per session) through the balancer; frames of 8 KiB every 20 ms; ${o.reps} rolling restarts in a row; each replica in turn: out of the balancer, SIGTERM (drain), start, back in, then 3 s steady`,
        table: rows,
        targets: [
          {
            name: "rolling restart: longest time a viewer is without frames",
            target: "<= 3 s per restart, every viewer back",
            figure: `${round(worst / 1000, 2)} s${stuck.length > 0 ? `; ${stuck.length} viewer(s) not back` : ""}`,
            met: Number.isFinite(worst) && worst <= 3000 && stuck.length === 0
          }
        ],
        figures: { windows, viewers: final, placement },
        notes: [
          `Sessions on agents ${placement.join(", ")}; the 'replica holding' column is from agent_presence.`,
          "A viewer reconnects as soon as its socket closes (then every 250 ms while refused), so these are the system's pauses; the web UI waits 0.8-1.2 s before its first retry, which a user sees on top.",
          `Viewer socket closes over the run, by code: ${[...closeKinds].map(([k, n]) => `${k} x${n}`).join(", ") || "none"} (4307 = reconnect: the replica is draining; 4503 = the agent is gone from the replica the viewer was on).`,
          "A pause is any interval over 100 ms between frames; the figure per viewer is the sum of its pauses inside the restart's window (a viewer not back is counted until the window ends, 33 s after the replica is healthy).",
          ...stuck.map((x) => `Not back: ${x}.`),
          ...(createFailures.length > 0 ? [`Session creates through the balancer that failed and were retried: ${createFailures.length} (first: ${createFailures[0]})`] : []),
          ...[...new Set(errorLines)].slice(0, 5).map((x) => `Error logged by ${x}`)
        ]
      }
    } finally {
      await cleanup(stops)
    }
  })
