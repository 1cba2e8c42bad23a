// Resource exhaustion: an agent at MAX_SESSIONS, many tunnels on one agent link, and a viewer that never reads.
// What must hold: the session over the limit is refused with a typed error and leaves no record, the limit frees
// up when a session ends; many viewers all work and all tunnels are released afterwards; a stalled viewer pins at
// most its credit window (the bytes sent towards it stop growing far below what it asked for) while another
// viewer on the same agent keeps getting frames and the agent stays online.
import { MAX_TUNNELS_PER_CONNECTION } from "@streamspace/protocol"
import { RfbClient } from "@streamspace/vnc-testserver"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { createWebSocketStream, WebSocket } from "ws"
import * as S from "../support/stack.ts"

const AGENT = "agent-full"

const toViewerBytes = (cpUrl: string) =>
  Effect.map(S.request(cpUrl, "GET", "/metrics"), (r) => {
    const m = /streamspace_control_plane_vnc_bytes_total\{[^}]*direction="to_viewer"[^}]*\} (\d+(?:\.\d+)?(?:e\+\d+)?)/.exec(r.text)
    return m === null ? 0 : Number(m[1])
  })

describe("resource exhaustion", () => {
  it.live("MAX_SESSIONS: the one over the limit is refused cleanly; 24 viewers at once all work and are all released", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      // The agent's MAX_SESSIONS and link's tunnels are under test here, not the per-user limits (24 viewers of one
      // user; creates retried until a slot frees, which every refused attempt counts against the create rate).
      const cp = yield* S.startControlPlane({ MAX_VIEWERS_PER_SESSION: "0", MAX_VIEWERS_PER_USER: "0", SESSION_CREATES_PER_MINUTE: "0" })
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, AGENT, { MAX_SESSIONS: "2" }))
      yield* S.approveAgent(cp, AGENT)
      const token = S.userToken("alice")
      const alice = S.api(cp.url, token)
      const a = yield* alice.post("/sessions", { template: "demo" })
      const b = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(a.status, 201)
      assert.strictEqual(b.status, 201)
      yield* S.waitForSession(alice, a.body.id, ["running"])
      yield* S.waitForSession(alice, b.body.id, ["running"])
      const over = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(over.status, 503, over.text)
      assert.strictEqual(over.body.error.code, "no_eligible_agent")
      assert.strictEqual((yield* alice.get("/sessions")).body.sessions.filter((s: any) => s.state !== "terminated").length, 2, "no record for the refused one")
      assert.strictEqual(S.sessionPods(cluster).length, 2)

      // many tunnels on one agent link, all at once
      const n = Math.min(24, MAX_TUNNELS_PER_CONNECTION)
      const viewers = yield* Effect.forEach(Array.from({ length: n }, (_, i) => (i % 2 === 0 ? a : b).body.id as string), (id) => S.openViewer(cp.wsUrl, id, token), { concurrency: 10 })
      yield* Effect.forEach(viewers, (v) => Effect.promise(() => v.client.update(false)), { concurrency: "unbounded" })
      for (const v of viewers) v.client.close()
      yield* S.waitFor("every tunnel released on the agent", Effect.map(S.agentView(cp, AGENT), (v) => v.active_tunnels === 0), { timeout: 15_000 })
      yield* S.waitFor("no viewer left on the control plane", Effect.map(S.request(cp.url, "GET", "/metrics"), (r) => /streamspace_control_plane_vnc_viewers(\{[^}]*\})? 0\b/.test(r.text)))

      // the limit frees up when a session ends
      yield* alice.del(`/sessions/${a.body.id}`)
      yield* S.waitForSession(alice, a.body.id, ["terminated"])
      const c = yield* S.waitFor("a free slot", Effect.map(alice.post("/sessions", { template: "demo" }), (r) => (r.status === 201 ? r.body : undefined)), {
        timeout: 30_000,
        interval: 100
      })
      yield* S.waitForSession(alice, c.id, ["running"])
    }), 120_000)

  it.live("a viewer that never reads pins at most its window; another viewer on the same agent is unaffected", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane({ VNC_TUNNEL_WINDOW: String(256 * 1024) })
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, AGENT, { VNC_TUNNEL_WINDOW: String(256 * 1024) }))
      yield* S.approveAgent(cp, AGENT)
      const token = S.userToken("alice")
      const alice = S.api(cp.url, token)
      const s1 = (yield* alice.post("/sessions", { template: "demo" })).body.id as string
      const s2 = (yield* alice.post("/sessions", { template: "demo" })).body.id as string
      yield* S.waitForSession(alice, s1, ["running"])
      yield* S.waitForSession(alice, s2, ["running"])

      // the stalled viewer: handshake, ask for 3000 full frames (64x48x4 bytes each: ~37 MB), then stop reading
      const stalled = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const ws = new WebSocket(`${cp.wsUrl}/api/v1/sessions/${s1}/vnc`, ["binary"], { headers: { authorization: `Bearer ${token}` } })
          const client = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
          await client.update(false)
          const frameBytes = client.width * client.height * 4
          ;(ws as unknown as { _socket: { pause(): void } })._socket.pause()
          for (let i = 0; i < 3000; i++) client.requestUpdate(false)
          return { ws, client, asked: 3000 * frameBytes }
        }),
        (v) => Effect.sync(() => v.ws.terminate())
      )
      const before = yield* toViewerBytes(cp.url)
      // the other viewer keeps getting frames meanwhile
      const other = yield* S.openViewer(cp.wsUrl, s2, token)
      for (let i = 0; i < 20; i++) yield* Effect.promise(() => other.client.update(false))
      // the bytes sent towards viewers settle: the stalled one is held back by its window
      let last = -1
      const settled = yield* S.waitFor("bytes towards viewers to stop growing", Effect.gen(function*() {
        const now = yield* toViewerBytes(cp.url)
        const done = now === last
        last = now
        return done ? now : undefined
      }), { timeout: 20_000, interval: 300 })
      const towardsStalled = settled - before
      assert.isBelow(towardsStalled, stalled.asked / 4, `sent ${towardsStalled} of ${stalled.asked} requested bytes`)
      // and the control plane says what it holds for it: within the window, whatever the kernel buffers took
      const metrics = (yield* S.request(cp.url, "GET", "/metrics")).text
      const held = /^streamspace_control_plane_vnc_buffered_bytes_max (\d+)$/m.exec(metrics)
      assert.isNotNull(held, "the buffered-bytes gauge is exported")
      assert.isAtMost(Number(held![1]), 256 * 1024)
      const agent = yield* S.agentView(cp, AGENT)
      assert.isTrue(agent.connected)
      assert.strictEqual(agent.status, "online")
      yield* Effect.promise(() => other.client.update(false))
    }), 120_000)
})
