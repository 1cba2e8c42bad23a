// A rolling restart of three control-plane processes on one PostgreSQL (issue 15), as Kubernetes does it: behind a
// balancer that sends new connections only to ready replicas (like a Service), each replica in turn gets SIGTERM
// (it drains: readiness false, its agents told to go elsewhere, its viewers told to reconnect with 4307), exits,
// and starts again on its port, while a user's API calls go on in a loop and a viewer streams a session (as the
// web viewer: a new ticket and a new socket whenever its socket closes). No API call fails twice in a row (a
// client retries once), no session is lost, the agent and the viewer are back after each restart. The time the
// viewer is without frames at each restart is printed (the generous 30 s bound is the only timed check).
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { startBalancer } from "../support/balancer.ts"
import * as R from "../support/replicaProcesses.ts"
import * as S from "../support/stack.ts"

const ready = (url: string) => fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) }).then((r) => r.status === 200, () => false)

layer(S.SystemDb.postgres, S.layerOptions)("rolling restart of three control-plane processes", (it) => {
  it.effect("under API load and a streaming viewer: no failed call beyond one retry, no lost session, the viewer back after each restart", () =>
    Effect.gen(function*() {
      const env = R.replicaEnv(yield* (yield* S.SystemDb).fresh)
      const replicas = yield* R.startReplicaProcesses(3, env)
      yield* R.dumpOnFailure(() => replicas, Effect.gen(function*() {
        // Only the first replica behind the balancer until the agent is enrolled there, then all three.
        let behind: ReadonlyArray<R.ReplicaProcess> = [replicas[0]!]
        const lb = yield* startBalancer(() => behind)
        const cluster = yield* S.makeCluster()
        yield* S.startApprovedAgent(replicas[0]!, S.agentEnv(cluster, lb.wsUrl, "agent-rolling"))
        behind = replicas
        const token = S.userToken("rita")
        const onLb = S.api(lb.url, token)
        const ids: Array<string> = []
        for (let i = 0; i < 3; i++) {
          const created = yield* onLb.post("/sessions", { template: "demo" })
          assert.strictEqual(created.status, 201, created.text)
          ids.push(created.body.id)
        }
        for (const id of ids) yield* S.waitForSession(onLb, id, ["running"], 30_000)

        // The load: a user's API calls in a loop through the balancer, a session created now and then.
        const client = R.retryingClient(() => lb.url, token)
        let loading = true
        let calls = 0
        const unexpected: Array<string> = []
        const load = (async () => {
          for (let n = 0; loading; n++) {
            const list = await client.call("GET", "/sessions")
            if (list.status !== 0 && list.status !== 200) unexpected.push(`GET /sessions: ${list.status} ${list.text}`)
            const one = await client.call("GET", `/sessions/${ids[n % ids.length]}`)
            if (one.status !== 0 && one.status !== 200) unexpected.push(`GET /sessions/id: ${one.status} ${one.text}`)
            calls += 2
            if (n % 25 === 24 && ids.length < 12) {
              const created = await client.call("POST", "/sessions", { template: "demo" })
              calls++
              if (created.status === 201) ids.push(created.body.id)
              else if (created.status !== 0) unexpected.push(`POST /sessions: ${created.status} ${created.text}`)
            }
            // paces the loop (about 20 calls a second), it is not a wait for a condition
            await new Promise((r) => setTimeout(r, 100))
          }
        })()
        yield* Effect.addFinalizer(() => Effect.sync(() => {
          loading = false
        }))

        const viewer = yield* R.streamingViewer(() => lb.url, () => lb.wsUrl, ids[0]!, token)
        yield* viewer.moreFrames(3)

        for (const replica of replicas) {
          const gapsBefore = viewer.gaps().length
          const callsBefore = calls
          const code = yield* replica.kill("SIGTERM")
          assert.strictEqual(code, 0, `replica ${replica.index} exits cleanly on SIGTERM`)
          yield* replica.restart
          yield* S.waitFor(`replica ${replica.index} ready again`, Effect.promise(() => ready(replica.url)), { timeout: 30_000, interval: 100 })
          yield* S.waitForOnline({ admin: S.api(lb.url, S.adminToken()) }, "agent-rolling", 30_000)
          yield* viewer.moreFrames(3, 30_000)
          yield* S.waitFor("API calls going on", Effect.sync(() => calls >= callsBefore + 10), { timeout: 30_000, interval: 50 })
          const gaps = viewer.gaps().slice(gapsBefore)
          console.log(`restart of replica ${replica.index}: viewer without frames for ${gaps.length === 0 ? "no reconnect" : gaps.map((g) => `${g} ms`).join(", ")}`)
          for (const g of gaps) assert.isBelow(g, 30_000)
        }

        loading = false
        yield* Effect.promise(() => load)
        console.log(
          `rolling restart: ${calls} API calls, ${client.retried().length} retried once, ${client.failed().length} failed; ` +
            `viewer reconnects ${viewer.connects() - 1}, closes ${viewer.closes().map((c) => c.code).join(", ")}, gaps ${viewer.gaps().join(", ")} ms`
        )
        if (client.retried().length > 0) console.log(`retried calls:\n${client.retried().join("\n")}`)
        assert.deepStrictEqual(client.failed(), [], "no API call failed after its retry")
        assert.deepStrictEqual(unexpected, [], "no API call answered an error")
        // No session lost: every one created (before and during the restarts) runs, and has its pod.
        const all = yield* onLb.get("/sessions")
        assert.strictEqual(all.status, 200, all.text)
        for (const id of ids) yield* S.waitForSession(onLb, id, ["running"], 30_000)
        const pods = S.sessionIdsIn(cluster)
        for (const id of ids) assert.include(pods, id)
        // The viewer still streams once the load stopped.
        yield* viewer.moreFrames(2)
      }))
    }), 400_000)
})
