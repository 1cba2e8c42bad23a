// Three control-plane replicas as separate processes on one PostgreSQL database (issue 15), nothing stubbed: the
// replicas learn which one holds an agent's socket from the presence rows in PostgreSQL (fenced by the holder's
// lease), wake it with NOTIFY to send commands, and relay viewers to it over the replica-to-replica endpoint.
// A real agent (in this process) runs sessions on kube-testserver whose pods port-forward to a vnc-testserver.
// - the agent on A, a session created through B's API, its viewer on C: frames reach the viewer and its input
//   reaches the VNC server;
// - A SIGKILLed while a viewer on C streams the agent's desktop: the agent redials through the balancer to a
//   survivor, the viewer reconnects with a new ticket (as the web viewer does on 1006 or 4307) and streams
//   again, and no session is lost.
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { startBalancer } from "../support/balancer.ts"
import * as R from "../support/replicaProcesses.ts"
import * as S from "../support/stack.ts"
import * as V from "../support/systemVnc.ts"

const metric = (cpUrl: string, re: RegExp) =>
  Effect.map(S.request(cpUrl, "GET", "/metrics"), (r) => {
    const m = re.exec(r.text)
    return m === null ? 0 : Number(m[1])
  })
const toViewerBytes = (cpUrl: string) => metric(cpUrl, /streamspace_control_plane_vnc_bytes_total\{[^}]*direction="to_viewer"[^}]*\} (\d+(?:\.\d+)?(?:e\+\d+)?)/)

layer(S.SystemDb.postgres, S.layerOptions)("three control-plane processes on one PostgreSQL", (it) => {
  it.effect("the agent on A, a session created through B, its viewer on C: frames reach the viewer, its input reaches the desktop", () =>
    Effect.gen(function*() {
      const env = R.replicaEnv(yield* (yield* S.SystemDb).fresh)
      const replicas = yield* R.startReplicaProcesses(3, env)
      const [a, b, c] = replicas
      yield* R.dumpOnFailure(() => replicas, Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      yield* S.startApprovedAgent(a!, S.agentEnv(cluster, a!.wsUrl, "agent-abc"))
      const token = S.userToken("abby")
      const onB = S.api(b!.url, token)
      const created = yield* onB.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201, created.text)
      const id: string = created.body.id
      yield* S.waitForSession(onB, id, ["running"], 30_000)

      yield* Effect.scoped(Effect.gen(function*() {
        const { client } = yield* V.openRfb(c!.wsUrl, id, { token })
        assert.strictEqual(client.name, "system desktop")
        yield* Effect.promise(() => client.update(false))
        assert.isTrue(client.framebuffer.some((x) => x !== 0), "the desktop was drawn")
        // The desktop keeps changing (its frame counter): incremental updates keep coming through the relay.
        for (let i = 0; i < 3; i++) yield* Effect.promise(() => client.update(true))
        client.type("typed on C")
        yield* S.waitFor("the text typed on C at the VNC server", Effect.map(cluster.vnc.state, (st) => st.typedText.includes("typed on C")), { timeout: 15_000 })
        // The tunnel is A's (the agent reports it there); A relayed the bytes, C only bridged them, B saw none.
        yield* S.waitForAgent(a!, "agent-abc", "reporting the tunnel", (x) => x.active_tunnels === 1)
        assert.isAbove(yield* toViewerBytes(a!.url), 12_288)
        assert.strictEqual(yield* toViewerBytes(c!.url), 0)
        assert.strictEqual(yield* toViewerBytes(b!.url), 0)
      }))
      yield* S.waitForAgent(a!, "agent-abc", "with the tunnel closed after the viewer left C", (x) => x.active_tunnels === 0)
      }))
    }), 240_000)

  it.effect("SIGKILL of the agent's replica while a viewer streams through another: the agent and the viewer are back, no session lost", () =>
    Effect.gen(function*() {
      const env = R.replicaEnv(yield* (yield* S.SystemDb).fresh)
      const replicas = yield* R.startReplicaProcesses(3, env)
      const [a, b, c] = replicas
      yield* R.dumpOnFailure(() => replicas, Effect.gen(function*() {
      // Only A behind the balancer until the agent is on it: then every replica takes connections.
      let behind: ReadonlyArray<R.ReplicaProcess> = [a!]
      const lb = yield* startBalancer(() => behind)
      const cluster = yield* S.makeCluster()
      yield* S.startApprovedAgent(a!, S.agentEnv(cluster, lb.wsUrl, "agent-kill"))
      behind = replicas
      const token = S.userToken("kim")
      const onB = S.api(b!.url, token)
      const ids: Array<string> = []
      for (let i = 0; i < 2; i++) {
        const created = yield* onB.post("/sessions", { template: "demo" })
        assert.strictEqual(created.status, 201, created.text)
        ids.push(created.body.id)
      }
      for (const id of ids) yield* S.waitForSession(onB, id, ["running"], 30_000)

      // The viewer's page is served by C: tickets from C, the socket to C, relayed to A.
      const viewer = yield* R.streamingViewer(() => c!.url, () => c!.wsUrl, ids[0]!, token)
      yield* viewer.moreFrames(3)
      yield* S.waitForAgent(a!, "agent-kill", "holding the viewer's tunnel on A", (x) => x.active_tunnels === 1)
      const connects = viewer.connects()

      yield* a!.kill("SIGKILL")
      // The agent redials through the balancer (to B or C) within its backoff.
      yield* S.waitForOnline(b!, "agent-kill", 30_000)
      // The viewer's socket closed when A's end of the relay vanished; it reconnected with a new ticket and streams.
      yield* viewer.moreFrames(3, 30_000)
      assert.isAbove(viewer.connects(), connects)
      const closedWith = viewer.closes().map((x) => x.code)
      assert.isNotEmpty(closedWith)
      console.log(`SIGKILL of the agent's replica: viewer closed with ${closedWith.join(", ")}, frames back after ${viewer.gaps().join(", ")} ms`)

      // No session lost: both are running, seen through either survivor, and their pods are there.
      for (const cp of [b!, c!]) {
        for (const id of ids) yield* S.waitForSession(S.api(cp.url, token), id, ["running"], 30_000)
      }
      const pods = S.sessionIdsIn(cluster)
      for (const id of ids) assert.include(pods, id)
      // And the survivors still run commands on the agent: a new session through C.
      const after = yield* S.api(c!.url, token).post("/sessions", { template: "demo" })
      assert.strictEqual(after.status, 201, after.text)
      yield* S.waitForSession(S.api(c!.url, token), after.body.id, ["running"], 30_000)
      }))
    }), 300_000)
})
