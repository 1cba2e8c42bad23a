// 8. Session start with and without a warm pool: the same image, one template without a pool and one with
// `warm_pool: 2`, on a kube-testserver whose kubelet takes a second to start a container (what a warm pod saves).
// Creates alternate between the two, one at a time; before each pooled create the pool is refilled, so every
// pooled create finds a warm pod (the figure is the claim, not a drained pool).
import { waitForPromise } from "@streamspace/testbed"
import { spawnWorker } from "./rpc.ts"
import { enrollAgent, signJwt, startAgent, startControlPlane } from "./system.ts"
import type { BenchResult } from "./util.ts"
import { now, percentile, round, sleep } from "./util.ts"

type O = { long: boolean; reps: number; command: string }

const step = (what: string) => console.log(`  [${new Date().toISOString().slice(11, 19)}] ${what}`)

export const warmPoolStart = async (o: O): Promise<BenchResult> => {
  const startDelayMs = 1000
  const n = o.long ? 30 : 10
  const kube = spawnWorker("kube-warm")
  const stops: Array<() => Promise<void>> = [kube.stop]
  try {
    const kubeInfo = await kube.call<{ kubeconfig: string }>("kube.start", { startDelayMs, target: { host: "127.0.0.1", port: 9 } })
    const cp = await startControlPlane()
    stops.push(cp.stop)
    const agent = await startAgent({ id: "bench-warm", controlPlaneUrl: cp.wsBase, kubeconfig: kubeInfo.kubeconfig, env: { WARM_POOL_INTERVAL: "1s" } })
    stops.push(agent.stop)
    await enrollAgent(cp, "bench-warm")
    for (const [name, warm] of [["cold", 0], ["warm", 2]] as const) {
      const r = await cp.api("POST", "/api/v1/templates", { name, image: "bench/desktop:1", vnc_port: 5900, warm_pool: warm })
      if (r.status !== 201) throw new Error(`template ${name}: ${r.status} ${JSON.stringify(r.json)}`)
    }
    step("waiting for the warm pool")
    const warmReady = () => kube.call<number>("kube.warmReady", { template: "warm" })
    await waitForPromise("two warm pods running", async () => (await warmReady()) >= 2, { timeout: 60_000, interval: 50 })
    const token = signJwt("bench-warm-user", "user")
    const times: Record<"cold" | "warm", Array<number>> = { cold: [], warm: [] }
    const ids: Array<string> = []
    for (let i = 0; i < n; i++) {
      for (const template of ["cold", "warm"] as const) {
        if (template === "warm") await waitForPromise("pool refilled", async () => (await warmReady()) >= 1, { timeout: 60_000, interval: 20 })
        const t0 = now()
        const r = await cp.api("POST", "/api/v1/sessions", { template }, token)
        if (r.status !== 201) throw new Error(`create: ${r.status} ${JSON.stringify(r.json)}`)
        ids.push(r.json.id)
        let state = r.json.state
        while (state !== "running") {
          if (state === "failed") throw new Error(`session ${r.json.id} failed: ${r.json.reason}`)
          if (now() - t0 > 30_000) throw new Error(`session ${r.json.id} not running after 30 s`)
          await sleep(5)
          state = (await cp.api("GET", `/api/v1/sessions/${r.json.id}`, undefined, token)).json.state
        }
        times[template].push(now() - t0)
      }
    }
    for (const id of ids) await cp.api("DELETE", `/api/v1/sessions/${id}`, undefined, token)
    const p = (xs: Array<number>, q: number) => round(percentile(xs, q), 1)
    const warmP95 = percentile(times.warm, 95)
    return {
      name: "warmpool",
      title: "8. Session start with and without a warm pool (POST /sessions -> running, kubelet start 1 s)",
      command: o.command,
      scale: `${n} creates per template, alternating, one at a time; real control plane + real agent (WARM_POOL_INTERVAL 1s) + kube-testserver with startDelayMs ${startDelayMs}`,
      table: [
        { template: "no pool (warm_pool 0)", "p50 ms": p(times.cold, 50), "p95 ms": p(times.cold, 95), "max ms": round(Math.max(...times.cold), 1) },
        { template: "warm pool (warm_pool 2)", "p50 ms": p(times.warm, 50), "p95 ms": p(times.warm, 95), "max ms": round(Math.max(...times.warm), 1) }
      ],
      targets: [{ name: "session start from a warm pool p95", target: "< 1000 ms", figure: `${round(warmP95, 1)} ms (without a pool p50 ${p(times.cold, 50)} ms)`, met: warmP95 < 1000 }],
      figures: { cold_ms: times.cold, warm_ms: times.warm, start_delay_ms: startDelayMs },
      notes: [
        "A pooled create is the agent relabelling a running warm pod (one replace) and creating the session's Service; a cold one waits for the kubelet's start delay too.",
        "The pool is refilled before each pooled create, so the figures are for a pool that has a pod ready; a burst larger than the pool falls back to cold starts.",
        "The state is polled every 5 ms with GET /sessions/:id, which adds up to ~5 ms plus one request to each figure."
      ]
    }
  } finally {
    for (const s of stops.reverse()) await s().catch(() => undefined)
  }
}
