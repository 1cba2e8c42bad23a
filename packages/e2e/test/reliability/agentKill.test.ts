// The agent process (main.ts) is SIGKILLed in the middle of a create (Service made, Pod call still in flight), in
// the middle of a delete (pod terminating) and with a viewer's tunnel open; a session is deleted while it is
// away; then it is restarted with the same credential. What must hold: it adopts what exists, finishes or cleans
// up the half-made session, reports the true inventory (the control plane's records match the cluster), every
// command completes exactly once, the viewer can reconnect, and nothing of a deleted session is left behind.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"

const AGENT = "agent-kill"
const LABEL = "streamspace.io/session-id"

describe("agent killed and restarted", () => {
  it.live("mid-create, mid-delete and with a tunnel open: adopts, cleans up and reports the truth", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane()
      const healthPort = yield* S.freePort
      const env = S.agentEnv(cluster, cp.wsUrl, AGENT, { HEALTH_PORT: String(healthPort), METRICS_ENABLED: "false" })
      const first = yield* S.spawnNode("packages/agent/src/main.ts", env)
      yield* S.approveAgent(cp, AGENT).pipe(Effect.tapError(() => Effect.sync(() => console.error(first.output()))))
      const aliceToken = S.userToken("alice")
      const alice = S.api(cp.url, aliceToken)
      const create = Effect.map(alice.post("/sessions", { template: "demo" }), (r) => {
        assert.strictEqual(r.status, 201, r.text)
        return r.body as { id: string; create_command_id: string }
      })
      const commandState = (id: string) => Effect.map(cp.admin.get(`/commands/${id}`), (r) => r.body?.state as string)
      const objectsOf = (resource: string, id: string) => cluster.kube.list(resource, S.NAMESPACE).filter((o: any) => o.metadata?.labels?.[LABEL] === id)
      const podsCreated = new Map<string, number>()
      cluster.kube.onChange((type, resource, obj: any) => {
        const id = obj?.metadata?.labels?.[LABEL]
        if (resource === "pods" && type === "ADDED" && id !== undefined) podsCreated.set(id, (podsCreated.get(id) ?? 0) + 1)
      })

      // s1 runs with a viewer; s3 runs and will be mid-delete
      const s1 = yield* create
      const s3 = yield* create
      yield* S.waitForSession(alice, s1.id, ["running"])
      yield* S.waitForSession(alice, s3.id, ["running"])
      const viewer = yield* S.openViewer(cp.wsUrl, s1.id, aliceToken)
      yield* Effect.promise(() => viewer.client.update(false))

      // mid-delete: s3's pod takes a while to terminate
      cluster.kube.configureKubelet({ terminationDelayMs: 5000 })
      const del3 = yield* alice.del(`/sessions/${s3.id}`)
      yield* S.waitFor("s3's pod to be terminating", Effect.sync(() => objectsOf("pods", s3.id).some((p: any) => p.metadata.deletionTimestamp !== undefined)))
      // mid-create: s2's Service exists, its Pod call hangs in the API
      cluster.kube.addFault({ method: "POST", path: `/api/v1/namespaces/${S.NAMESPACE}/pods`, latencyMs: 60_000, times: 1 })
      const s2 = yield* create
      yield* S.waitFor("s2 half made (Service, no Pod)", Effect.sync(() => objectsOf("services", s2.id).length === 1 && objectsOf("pods", s2.id).length === 0))

      yield* first.kill("SIGKILL")
      yield* Effect.promise(() => viewer.client.closed.then(() => undefined, () => undefined))
      yield* S.waitFor("the control plane to see the agent gone", Effect.map(S.agentView(cp, AGENT), (a) => a.connected === false), { timeout: 15_000 })
      cluster.kube.clearFaults()
      cluster.kube.configureKubelet({ terminationDelayMs: 10 })
      // the half-made s2 is deleted while its agent is away: queued
      const del2 = yield* alice.del(`/sessions/${s2.id}`)
      assert.include([200, 202], del2.status, del2.text)

      const second = yield* S.spawnNode("packages/agent/src/main.ts", env)
      yield* S.waitForOnline(cp, AGENT, 60_000).pipe(Effect.tapError(() => Effect.sync(() => console.error(second.output()))))

      yield* S.waitForSession(alice, s1.id, ["running"])
      yield* S.waitForSession(alice, s2.id, ["terminated"], 20_000)
      yield* S.waitForSession(alice, s3.id, ["terminated"], 20_000)
      for (const id of [s1.create_command_id, del3.body.delete_command_id, ...(del2.body.delete_command_id === null ? [] : [del2.body.delete_command_id])]) {
        yield* S.waitFor(`command ${id} completed`, Effect.map(commandState(id), (s) => s === "completed"), { timeout: 20_000 })
      }
      assert.include(["completed", "failed"], yield* commandState(s2.create_command_id), "the interrupted create has an outcome")
      // nothing of s2 or s3 is left; s1 is whole and was never re-created
      yield* S.waitFor("s2 and s3 objects gone", Effect.sync(() =>
        [s2.id, s3.id].every((id) => objectsOf("pods", id).length === 0 && objectsOf("services", id).length === 0)), { timeout: 20_000 }).pipe(
        Effect.tapError(() => Effect.sync(() => console.error("LEFT", JSON.stringify([s2.id, s3.id].map((id) => [id, objectsOf("pods", id).map((p: any) => [p.metadata.name, p.metadata.deletionTimestamp, p.status?.phase]), objectsOf("services", id).map((p: any) => p.metadata.name)])))))
      )
      assert.strictEqual(objectsOf("pods", s1.id).length, 1)
      assert.strictEqual(podsCreated.get(s1.id), 1, "s1 was adopted, not re-created")
      assert.isAtMost(podsCreated.get(s2.id) ?? 0, 1)
      // the agent's report matches the cluster
      const view = yield* S.waitFor("a heartbeat with the true count", Effect.map(S.agentView(cp, AGENT), (a) => a.active_sessions === 1 ? a : undefined))
      assert.deepStrictEqual(view.unknown_sessions, [])
      const again = yield* S.openViewer(cp.wsUrl, s1.id, aliceToken)
      yield* Effect.promise(() => again.client.update(false))
    }), 150_000)
})
