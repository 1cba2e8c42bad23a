// Two control-plane replicas on one PostgreSQL database (issue 15): the agent's socket is on replica A, the viewer
// reaches replica B. B authenticates the viewer (user JWT, or a ticket A issued: tickets are signed with
// CLUSTER_SECRET, so any replica checks them, and single use across replicas) and relays it over A's replica-to-replica endpoint, which opens the
// tunnel to its agent as for a local viewer. Frames flow to the viewer, its input reaches the VNC server, a viewer
// on B that stops reading holds the agent at one tunnel window, and the peer endpoint refuses every credential
// but a peer token signed with the cluster secret. B finds the agent on A through the replica registry (presence in
// PostgreSQL).
import { assert, layer } from "@effect/vitest"
import { PEER_HEADER } from "@streamspace/control-plane"
import { CloseCode } from "@streamspace/protocol"
import { RfbClient } from "@streamspace/vnc-testserver"
import { Effect } from "effect"
import { createHmac } from "node:crypto"
import { createWebSocketStream, WebSocket } from "ws"
import * as S from "../support/stack.ts"
import * as V from "../support/systemVnc.ts"

const WINDOW = 128 * 1024

/** Replica A holding agent `agentId`, replica B, one database, one running session. */
const twoReplicas = (agentId: string, user: string) =>
  Effect.gen(function*() {
    const db = yield* (yield* S.SystemDb).fresh
    const env = { ...S.SYSTEM_ENV, ...db, VNC_TUNNEL_WINDOW: String(WINDOW) }
    const a = yield* S.startControlPlane(env)
    const b = yield* S.startControlPlane(env)
    const cluster = yield* S.makeCluster()
    yield* S.startApprovedAgent(a, S.agentEnv(cluster, a.wsUrl, agentId, { VNC_TUNNEL_WINDOW: String(WINDOW) }))
    const token = S.userToken(user)
    const onA = S.api(a.url, token)
    const created = yield* onA.post("/sessions", { template: "demo" })
    assert.strictEqual(created.status, 201, created.text)
    const id: string = created.body.id
    yield* S.waitForSession(onA, id, ["running"])
    return { a, b, cluster, token, onA, onB: S.api(b.url, token), id }
  })

/** The HTTP status a WebSocket upgrade is answered with (101 when it opened). */
const upgradeStatus = (url: string, headers: Record<string, string> = {}) =>
  Effect.callback<number>((resume) => {
    const ws = new WebSocket(url, ["streamspace.peer.v1"], { headers })
    ws.on("open", () => {
      ws.terminate()
      resume(Effect.succeed(101))
    })
    ws.on("unexpected-response", (_req, res) => {
      res.resume()
      resume(Effect.succeed(res.statusCode ?? 0))
    })
    ws.on("error", () => resume(Effect.succeed(-1)))
  })

const metric = (cpUrl: string, re: RegExp) =>
  Effect.map(S.request(cpUrl, "GET", "/metrics"), (r) => {
    const m = re.exec(r.text)
    return m === null ? 0 : Number(m[1])
  })
const toViewerBytes = (cpUrl: string) => metric(cpUrl, /streamspace_control_plane_vnc_bytes_total\{[^}]*direction="to_viewer"[^}]*\} (\d+(?:\.\d+)?(?:e\+\d+)?)/)
const bufferedMax = (cpUrl: string) => metric(cpUrl, /^streamspace_control_plane_vnc_buffered_bytes_max (\d+)$/m)

layer(S.SystemDb.postgres, S.layerOptions)("two replicas on one PostgreSQL", (it) => {
  it.effect("a viewer on B streams frames from the agent on A; its input reaches the VNC server; a ticket from A works on B", () =>
    Effect.gen(function*() {
      const t = yield* twoReplicas("agent-peer", "vera")
      yield* Effect.scoped(Effect.gen(function*() {
        const { client } = yield* V.openRfb(t.b.wsUrl, t.id, { token: t.token })
        assert.strictEqual(client.name, "system desktop")
        yield* Effect.promise(() => client.update(false))
        assert.isTrue(client.framebuffer.some((x) => x !== 0), "the desktop was drawn")
        client.type("across replicas")
        yield* S.waitFor("typed text at the VNC server", Effect.map(t.cluster.vnc.state, (st) => st.typedText.includes("across replicas")))
        // The tunnel is A's: the agent reports it to A, A relayed the bytes, B only bridged them.
        yield* S.waitForAgent(t.a, "agent-peer", "reporting the tunnel on A", (x) => x.active_tunnels === 1)
        assert.isAbove(yield* toViewerBytes(t.a.url), 12_288)
        assert.strictEqual(yield* toViewerBytes(t.b.url), 0)
      }))
      yield* S.waitForAgent(t.a, "agent-peer", "with the tunnel closed after the viewer left B", (x) => x.active_tunnels === 0)

      // A ticket issued by A, redeemed on B (single use there).
      const ticket = yield* t.onA.post(`/sessions/${t.id}/vnc-ticket`)
      assert.strictEqual(ticket.status, 201, ticket.text)
      const path = `/api/v1/sessions/${t.id}/vnc?ticket=${encodeURIComponent(ticket.body.ticket)}`
      yield* Effect.scoped(Effect.gen(function*() {
        const { client } = yield* V.openRfb(t.b.wsUrl, t.id, { path })
        yield* Effect.promise(() => client.update(false))
      }))
      // Used on B: refused on B and on A (its use is a row in the shared database).
      for (const cp of [t.b, t.a]) {
        const again = yield* Effect.flip(Effect.scoped(V.openRaw(cp.wsUrl, t.id, { path })))
        assert.strictEqual(again.status, 401)
        assert.include(again.body, "already used")
      }
    }), 120_000)

  it.effect("a viewer on B that stops reading holds the agent at its window: bytes towards it settle, A and B buffer a bounded amount", () =>
    Effect.gen(function*() {
      const t = yield* twoReplicas("agent-peer-stall", "walt")
      const stalled = yield* Effect.acquireRelease(
        Effect.promise(async () => {
          const ws = new WebSocket(`${t.b.wsUrl}/api/v1/sessions/${t.id}/vnc`, ["binary"], { headers: { authorization: `Bearer ${t.token}` } })
          const client = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
          await client.update(false)
          const frameBytes = client.width * client.height * 4
          ;(ws as unknown as { _socket: { pause(): void } })._socket.pause()
          for (let i = 0; i < 12000; i++) client.requestUpdate(false)
          return { ws, asked: 12000 * frameBytes }
        }),
        (v) => Effect.sync(() => v.ws.terminate())
      )
      let last = -1
      const settled = yield* S.waitFor("bytes A relays towards B's viewer to stop growing", Effect.gen(function*() {
        const now = yield* toViewerBytes(t.a.url)
        const done = now === last
        last = now
        return done ? now : undefined
      }), { timeout: 30_000, interval: 400 })
      assert.isAbove(settled, 0)
      // Far below what it asked for: what is relayed sits in the hops' kernel socket buffers (several MB each, tuned
      // by the kernel), a bounded amount whatever the viewer asks.
      assert.isBelow(settled, stalled.asked / 4, `A relayed ${settled} of ${stalled.asked} requested bytes`)
      // What each replica holds for the viewer: A within the tunnel window, B within its high-water mark (one
      // window) plus one message; the rest waits in kernel buffers and, mostly, unread at the VNC server.
      assert.isAtMost(yield* bufferedMax(t.a.url), WINDOW)
      assert.isAtMost(yield* bufferedMax(t.b.url), 2 * WINDOW)
      const agent = yield* S.agentView(t.a, "agent-peer-stall")
      assert.isTrue(agent.connected)
    }), 120_000)

  it.effect("the replica-to-replica endpoint refuses user JWTs, agent tokens, tickets and tokens signed with another secret", () =>
    Effect.gen(function*() {
      const t = yield* twoReplicas("agent-peer-auth", "xena")
      const url = `${t.a.wsUrl}/internal/v1/peer/sessions/${t.id}/vnc`
      const ticket = (yield* t.onA.post(`/sessions/${t.id}/vnc-ticket`)).body.ticket as string
      assert.strictEqual(yield* upgradeStatus(url), 401, "no credential")
      assert.strictEqual(yield* upgradeStatus(url, { authorization: `Bearer ${t.token}` }), 401, "a user JWT")
      assert.strictEqual(yield* upgradeStatus(url, { authorization: `Bearer ${S.adminToken()}` }), 401, "an admin JWT")
      assert.strictEqual(yield* upgradeStatus(url, { authorization: `Bearer ${S.BOOTSTRAP_TOKEN}` }), 401, "the agent bootstrap token")
      assert.strictEqual(yield* upgradeStatus(`${url}?ticket=${encodeURIComponent(ticket)}`), 401, "a ticket in the query")
      assert.strictEqual(yield* upgradeStatus(url, { [PEER_HEADER]: ticket }), 401, "a ticket in the peer header")
      assert.strictEqual(yield* upgradeStatus(url, { [PEER_HEADER]: t.token }), 401, "a user JWT in the peer header")
      // A well-formed peer token signed with another cluster secret.
      const body = Buffer.from(JSON.stringify({ typ: "peer-vnc", sid: t.id, uid: "xena", role: "admin", exp: Date.now() + 30_000 })).toString("base64url")
      const forgedKey = createHmac("sha256", "another-cluster-secret-0123456789abcdef0123").update("streamspace/peer-vnc").digest()
      const forged = `${body}.${createHmac("sha256", forgedKey).update(body).digest("base64url")}`
      assert.strictEqual(yield* upgradeStatus(url, { [PEER_HEADER]: forged }), 401, "a token signed with another secret")
      // No tunnel was opened by any of them.
      const agent = yield* S.agentView(t.a, "agent-peer-auth")
      assert.strictEqual(agent.active_tunnels, 0)
    }), 120_000)

  it.effect("A draining: B's viewers relayed to A are told to reconnect (4307), and so are new ones while A refuses relays", () =>
    Effect.gen(function*() {
      const t = yield* twoReplicas("agent-peer-drain", "yuri")
      const viewer = yield* V.openRaw(t.b.wsUrl, t.id, { token: t.token })
      assert.strictEqual((yield* viewer.read(12)).toString("latin1"), "RFB 003.008\n")
      yield* t.a.drain.start
      assert.deepStrictEqual(yield* viewer.closed(), { code: CloseCode.reconnect, reason: "this replica is stopping: reconnect" })
      // A late viewer on B: relayed to A while A's presence row stands (A refuses: reconnect), or, once the agent
      // has left A (it dials A only in this test, so it has nowhere to go), told the agent is gone. The web viewer
      // retries both.
      const late = yield* V.openRaw(t.b.wsUrl, t.id, { token: t.token })
      assert.include([CloseCode.reconnect, 4503], (yield* late.closed()).code)
    }), 120_000)
})
