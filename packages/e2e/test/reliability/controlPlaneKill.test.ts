// The control plane is SIGKILLed (main.ts as a child process on a PGlite DATA_DIR) while it has a completed
// command, one the agent acked and is still running, one sent but never received, and a viewer open; it is
// restarted on the same database and port. What must hold: the agent redials with backoff and comes back; every
// unfinished command completes exactly once (one pod created per session, ever), a command queued while the
// agent is still away is delivered when it returns, every session record ends in its true state, the viewer can
// reconnect, and the restarted control plane's log and metrics say what happened.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { makeFaultProxy } from "../support/faultsProxy.ts"
import { dumpDatabase, leakedSecrets, sha256 } from "../support/securityClients.ts"
import * as S from "../support/stack.ts"

const AGENT = "agent-cpkill"

describe("control plane killed and restarted on the same database", () => {
  it.live("commands in every lifecycle state complete once; sessions stay right; agents and viewers come back", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const podsAdded = new Map<string, number>()
      cluster.kube.onChange((type, resource, obj: any) => {
        const sid = obj?.metadata?.labels?.["streamspace.io/session-id"] ?? obj?.metadata?.name
        if (resource === "pods" && type === "ADDED") podsAdded.set(sid, (podsAdded.get(sid) ?? 0) + 1)
      })
      const port = yield* S.freePort
      const env = { DATA_DIR: join(cluster.dir, "cp-data"), COMMAND_TIMEOUT: "2m" }
      let cp = yield* S.startControlPlaneProcess(port, env)
      const proxy = yield* makeFaultProxy({ host: "127.0.0.1", port })
      yield* S.startAgent(S.agentEnv(cluster, proxy.wsUrl, AGENT))
      yield* S.approveAgent(cp, AGENT)
      const aliceToken = S.userToken("alice")
      let alice = S.api(cp.url, aliceToken)
      const create = (client: ReturnType<typeof S.api>) =>
        Effect.map(client.post("/sessions", { template: "demo" }), (r) => {
          assert.strictEqual(r.status, 201, r.text)
          return r.body as { id: string; create_command_id: string }
        })
      const commandState = (id: string) => Effect.map(cp.admin.get(`/commands/${id}`), (r) => r.body?.state as string | undefined)

      // completed: s1 runs and has a viewer; s3 runs too
      const s1 = yield* create(alice)
      const s3 = yield* create(alice)
      yield* S.waitForSession(alice, s1.id, ["running"])
      yield* S.waitForSession(alice, s3.id, ["running"])
      const viewer = yield* S.openViewer(cp.wsUrl, s1.id, aliceToken)
      yield* Effect.promise(() => viewer.client.update(false))

      // ack: s2's pod create hangs in the Kubernetes API for a while
      cluster.kube.addFault({ method: "POST", path: `/api/v1/namespaces/${S.NAMESPACE}/pods`, latencyMs: 2500, times: 1 })
      const s2 = yield* create(alice)
      yield* S.waitFor("s2's create to be acked", Effect.map(commandState(s2.create_command_id), (s) => s === "ack"))

      // sent: the link goes silent, then s3 is deleted: the control plane sends a command the agent never gets
      proxy.setMode("blackhole")
      const del3 = yield* alice.del(`/sessions/${s3.id}`)
      assert.strictEqual(del3.status, 202, del3.text)
      const s3Delete = del3.body.delete_command_id as string
      yield* S.waitFor("s3's delete to be sent", Effect.map(commandState(s3Delete), (s) => s === "sent"))

      // SIGKILL: no goodbye, no flush beyond what was committed
      yield* cp.kill("SIGKILL")
      const viewerClosed = yield* Effect.promise(() => viewer.client.closed.then(() => true, () => true))
      assert.isTrue(viewerClosed, "the viewer's socket ended with the control plane")
      // what a crash leaves on disk: the agent's credential only as its SHA-256, no token in the clear
      const dump = yield* dumpDatabase(env.DATA_DIR)
      const credential = readFileSync(join(cluster.dir, `credential-${AGENT}`), "utf8").trim()
      assert.strictEqual(dump.agents!.find((r) => r.id === AGENT)!.credential_hash, sha256(credential))
      assert.deepStrictEqual(leakedSecrets(JSON.stringify(dump), { credential, bootstrap: S.BOOTSTRAP_TOKEN }), [])
      proxy.setMode("pass")
      proxy.refuse(true) // keep the agent away until a command is queued for it
      proxy.resetAll()

      cp = yield* S.startControlPlaneProcess(port, env)
      alice = S.api(cp.url, aliceToken)
      assert.include(["sent", "ack"], yield* commandState(s3Delete), "the unfinished delete survived the crash")
      assert.include(["sent", "ack", "completed"], yield* commandState(s2.create_command_id))
      // pending: s2 is deleted while its agent is away
      const del2 = yield* alice.del(`/sessions/${s2.id}`)
      assert.include([200, 202], del2.status, del2.text)
      const s2Delete = del2.body.delete_command_id as string
      if (s2Delete !== null) assert.strictEqual(yield* commandState(s2Delete), "pending")
      const dialsBefore = proxy.accepted()
      yield* S.waitFor("the agent to keep redialling with backoff", Effect.sync(() => proxy.accepted() >= dialsBefore + 2))
      proxy.refuse(false)
      yield* S.waitForOnline(cp, AGENT, 30_000)

      // every command completes, exactly once
      for (const id of [s1.create_command_id, s2.create_command_id, s3Delete, ...(s2Delete === null ? [] : [s2Delete])]) {
        yield* S.waitFor(`command ${id} completed`, Effect.map(commandState(id), (s) => s === "completed"), { timeout: 20_000 })
      }
      yield* S.waitForSession(alice, s1.id, ["running"])
      yield* S.waitForSession(alice, s2.id, ["terminated"])
      yield* S.waitForSession(alice, s3.id, ["terminated"])
      yield* S.waitFor("only s1's pod left", Effect.sync(() => S.sessionPods(cluster).length === 1))
      for (const s of [s1, s2, s3]) assert.strictEqual(podsAdded.get(s.id) ?? podsAdded.get(`session-${s.id}`), 1, `one pod ever for ${s.id}: ${JSON.stringify([...podsAdded])}`)

      // the viewer reconnects and sees the desktop again
      const again = yield* S.openViewer(cp.wsUrl, s1.id, aliceToken)
      yield* Effect.promise(() => again.client.update(false))

      // what the restarted control plane says about it
      const metrics = yield* S.request(cp.url, "GET", "/metrics")
      assert.match(metrics.text, /streamspace_control_plane_commands_total\{[^}]*outcome="completed"/)
      const log = cp.output()
      assert.include(log, "command delete_session completed")
    }), 150_000)
})
