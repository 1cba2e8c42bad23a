// Tunnels that outlive their viewers: every way a viewer can go releases its tunnel on the control plane and on
// the agent, and a desktop that goes away closes its viewers with a reason. The cluster's port-forward behaves
// like the real API server's here (`portForwardUpstreamClose: "onWrite"`: a closed pod side is silent until the
// next write); packages/e2e/test/real-cluster/vnc.test.ts runs the same cases through a real one.
import { assert, describe, it } from "@effect/vitest"
import { Metrics } from "@streamspace/agent"
import { RfbClient, VncTestServer } from "@streamspace/vnc-testserver"
import { Context, Effect, Layer, Metric } from "effect"
import { createWebSocketStream, WebSocket } from "ws"
import * as S from "../support/stack.ts"

const setup = (agentId: string) =>
  Effect.gen(function*() {
    const cluster = yield* S.makeCluster({ portForwardUpstreamClose: "onWrite" })
    // A desktop large enough that a viewer that stops reading leaves the agent out of credit with bytes buffered.
    const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 800, height: 600, frameRate: 30, name: "streaming desktop" })), VncTestServer)
    cluster.kube.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
    const cp = yield* S.startControlPlane({ HEARTBEAT_INTERVAL: "500ms" })
    const agent = yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, agentId))
    yield* S.approveAgent(cp, agentId)
    const token = S.userToken("ann")
    const ann = S.api(cp.url, token)
    const created = yield* ann.post("/sessions", { template: "demo" })
    assert.strictEqual(created.status, 201, created.text)
    const id: string = created.body.id
    yield* S.waitForSession(ann, id, ["running"])
    return { cluster, cp, agent, token, ann, id }
  })

/** A viewer through the proxy that has done the RFB handshake and streams full-screen updates. */
const streamingViewer = (cpWsUrl: string, id: string, token: string) =>
  Effect.gen(function*() {
    const ws = new WebSocket(`${cpWsUrl}/api/v1/sessions/${id}/vnc`, ["binary"], { headers: { authorization: `Bearer ${token}` } })
    ws.on("error", () => {})
    const client = yield* Effect.promise(() => RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 }))
    yield* Effect.promise(() => client.update(false))
    return { ws, client }
  })

const gauge = Effect.map(Metric.value(Metrics.vncTunnelsActive), (s) => s.value)

describe("a viewer that goes away releases its tunnel on both sides", () => {
  it.live("viewers killed mid-stream (socket destroyed or reset, no close frame) while the agent is out of credit: the agent's tunnels drop to 0", () =>
    Effect.gen(function*() {
      const s = yield* setup("agent-viewer-kill")
      const viewers = [
        yield* streamingViewer(s.cp.wsUrl, s.id, s.token),
        yield* streamingViewer(s.cp.wsUrl, s.id, s.token),
        yield* streamingViewer(s.cp.wsUrl, s.id, s.token)
      ]
      yield* S.waitFor("three tunnels on the agent", Effect.map(s.agent.tunnels.active, (n) => n === 3))
      // Each asks for many full screens and stops reading: the proxy's window fills, the agent stalls with its
      // port-forward paused and bytes buffered (as a viewer process that froze, then was killed, leaves it).
      for (const v of viewers) {
        for (let i = 0; i < 20; i++) v.client.requestUpdate(false)
        ;(v.ws as any)._socket.pause()
      }
      yield* S.waitFor("the agent holding bytes for stalled viewers", Effect.map(s.agent.tunnels.buffered, (b) => b.total > 0))
      // kill -9: the kernel closes the sockets; with unread bytes that is a reset.
      ;(viewers[0]!.ws as any)._socket.destroy()
      ;(viewers[1]!.ws as any)._socket.resetAndDestroy()
      ;(viewers[2]!.ws as any)._socket.resetAndDestroy()
      yield* S.waitFor("no tunnel left on the agent", Effect.map(s.agent.tunnels.active, (n) => n === 0), { timeout: 10_000 })
      assert.deepStrictEqual(yield* s.agent.tunnels.ids, [])
      assert.strictEqual((yield* s.agent.tunnels.buffered).total, 0)
      yield* S.waitFor("the agent's vnc_tunnels_active at 0", Effect.map(gauge, (n) => n === 0))
      yield* S.waitForAgent(s.cp, "agent-viewer-kill", "reporting no tunnel", (a) => a.active_tunnels === 0)
      // The session still serves a new viewer.
      const again = yield* streamingViewer(s.cp.wsUrl, s.id, s.token)
      again.client.close()
      yield* S.waitFor("its tunnel released too", Effect.map(s.agent.tunnels.active, (n) => n === 0), { timeout: 10_000 })
    }), 90_000)

  it.live("a refused ticket or token at the upgrade opens no tunnel", () =>
    Effect.gen(function*() {
      const s = yield* setup("agent-viewer-auth")
      const ticket = yield* s.ann.post(`/sessions/${s.id}/vnc-ticket`)
      assert.strictEqual(ticket.status, 201, ticket.text)
      const attempt = (url: string, headers: Record<string, string> = {}) =>
        Effect.callback<number>((resume) => {
          const ws = new WebSocket(url, ["binary"], { headers })
          ws.on("unexpected-response", (_req, res) => {
            resume(Effect.succeed(res.statusCode ?? 0))
            ws.terminate()
          })
          ws.on("open", () => {
            resume(Effect.succeed(101))
            ws.terminate()
          })
          ws.on("error", () => {})
        })
      const base = `${s.cp.wsUrl}/api/v1/sessions/${s.id}/vnc`
      // A ticket for the session, used once properly and then replayed, and a wrong token.
      assert.strictEqual(yield* attempt(`${s.cp.wsUrl}${ticket.body.url}`), 101)
      assert.strictEqual(yield* attempt(`${s.cp.wsUrl}${ticket.body.url}`), 401)
      assert.strictEqual(yield* attempt(`${base}?ticket=forged`), 401)
      assert.strictEqual(yield* attempt(base, { authorization: "Bearer not.a.jwt" }), 401)
      // The one that got in and left at once released its tunnel, and the refused ones never opened any.
      yield* S.waitFor("no tunnel on the agent", Effect.map(s.agent.tunnels.active, (n) => n === 0), { timeout: 10_000 })
      yield* S.waitForAgent(s.cp, "agent-viewer-auth", "reporting no tunnel", (a) => a.active_tunnels === 0)
    }), 90_000)

  it.live("the desktop going away (its pod no longer Ready) closes the viewer within a second, with the reason", () =>
    Effect.gen(function*() {
      const s = yield* setup("agent-desktop-gone")
      const v = yield* streamingViewer(s.cp.wsUrl, s.id, s.token)
      let closed: { code: number; reason: string; at: number } | undefined
      v.ws.on("close", (code, reason) => {
        closed = { code, reason: reason.toString(), at: Date.now() }
      })
      const pod = s.cluster.kube.get("pods", S.NAMESPACE, s.id)!
      const at = Date.now()
      s.cluster.kube.put("pods", {
        ...pod,
        status: {
          ...pod.status,
          conditions: (pod.status.conditions ?? []).map((c: any) => c.type === "Ready" || c.type === "ContainersReady" ? { ...c, status: "False" } : c),
          containerStatuses: (pod.status.containerStatuses ?? []).map((c: any) => ({ ...c, ready: false }))
        }
      })
      yield* S.waitFor("the viewer closed", Effect.sync(() => closed), { timeout: 5_000 })
      assert.isAtMost(closed!.at - at, 1_000)
      assert.strictEqual(closed!.code, 1000)
      assert.include(closed!.reason, "not ready")
      yield* S.waitFor("no tunnel on the agent", Effect.map(s.agent.tunnels.active, (n) => n === 0))
    }), 90_000)
})
