// A VNC session end to end: a WebSocket viewer -> the control plane's VncProxy -> the agent link -> the real
// agent's TunnelPool -> a kube-testserver port-forward -> vnc-testserver. The RFB handshake is read byte by byte
// as it comes through; input typed by a viewer reaches the VNC server; tickets, other users and sessions that
// are not running are answered clearly; closing a viewer closes its tunnel on the agent.
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"
import * as V from "../support/systemVnc.ts"

const u16 = (b: Buffer, at: number) => b.readUInt16BE(at)
const u32 = (b: Buffer, at: number) => b.readUInt32BE(at)

layer(S.SharedControlPlane.layer(), S.layerOptions)("VNC through the proxy", (it) => {
  it.effect("a viewer reads the real RFB 3.8 handshake and framebuffer from vnc-testserver; typed keys arrive; closing frees the tunnel", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const cluster = yield* S.makeCluster()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-vnc"))
      const token = S.userToken("vera")
      const vera = S.api(cp.url, token)
      const id: string = (yield* vera.post("/sessions", { template: "demo" })).body.id
      yield* S.waitForSession(vera, id, ["running"])

      yield* Effect.scoped(Effect.gen(function*() {
        const raw = yield* V.openRaw(cp.wsUrl, id, { token })
        // ProtocolVersion, from the server first.
        assert.strictEqual((yield* raw.read(12)).toString("latin1"), "RFB 003.008\n")
        yield* raw.write(Buffer.from("RFB 003.008\n", "latin1"))
        // Security types: one type, None (1).
        const count = (yield* raw.read(1))[0]!
        const types = [...(yield* raw.read(count))]
        assert.deepStrictEqual(types, [1])
        yield* raw.write(Uint8Array.of(1))
        assert.strictEqual(u32(yield* raw.read(4), 0), 0, "SecurityResult OK")
        yield* raw.write(Uint8Array.of(1)) // ClientInit: shared
        // ServerInit: width, height, 16-byte pixel format, name length, name.
        const init = yield* raw.read(24)
        assert.strictEqual(u16(init, 0), 64)
        assert.strictEqual(u16(init, 2), 48)
        assert.include([8, 16, 32], init[4], "bits per pixel")
        assert.strictEqual(init[7], 1, "true colour")
        const name = (yield* raw.read(u32(init, 20))).toString("utf8")
        assert.strictEqual(name, "system desktop")
        // A full FramebufferUpdateRequest is answered with a FramebufferUpdate (message type 0).
        yield* raw.write(Uint8Array.from([3, 0, 0, 0, 0, 0, 0, 64, 0, 48]))
        const header = yield* raw.read(4)
        assert.strictEqual(header[0], 0)
        assert.isAtLeast(u16(header, 2), 1)
      }))

      // The vnc-testserver's own client through the same path: pixels decoded, input delivered.
      yield* Effect.scoped(Effect.gen(function*() {
        const { client } = yield* V.openRfb(cp.wsUrl, id, { token })
        assert.strictEqual(client.version, "3.8")
        assert.strictEqual(client.name, "system desktop")
        yield* Effect.promise(() => client.update(false))
        assert.strictEqual(client.framebuffer.length, 64 * 48 * 4)
        assert.isTrue(client.framebuffer.some((b) => b !== 0), "the desktop was drawn")
        client.type("hello")
        yield* S.waitFor("typed text at the VNC server", Effect.map(cluster.vnc.state, (st) => st.typedText.includes("hello")))
        yield* S.waitForAgent(cp, "agent-vnc", "reporting the tunnel", (a) => a.active_tunnels >= 1)
      }))
      // Both viewers closed: the agent closes its tunnels.
      yield* S.waitForAgent(cp, "agent-vnc", "with no tunnel left", (a) => a.active_tunnels === 0)
      yield* vera.del(`/sessions/${id}`)
      yield* S.waitForSession(vera, id, ["terminated"])
    }), 90_000)

  it.effect("several viewers, a single-use ticket, other users and sessions that are not running are answered clearly", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const cluster = yield* S.makeCluster()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-vnc2"))
      const token = S.userToken("walt")
      const walt = S.api(cp.url, token)
      const id: string = (yield* walt.post("/sessions", { template: "demo" })).body.id
      yield* S.waitForSession(walt, id, ["running"])

      // Two viewers on one session at once, one by header and one by ticket.
      const ticket = yield* walt.post(`/sessions/${id}/vnc-ticket`)
      assert.strictEqual(ticket.status, 201, ticket.text)
      assert.include(ticket.body.url, `/api/v1/sessions/${id}/vnc?ticket=`)
      const one = yield* V.openRfb(cp.wsUrl, id, { token })
      const two = yield* V.openRfb(cp.wsUrl, id, { path: ticket.body.url })
      yield* Effect.promise(() => Promise.all([one.client.update(false), two.client.update(false)]))
      assert.strictEqual(two.client.width, 64)
      yield* S.waitForAgent(cp, "agent-vnc2", "reporting two tunnels", (a) => a.active_tunnels === 2)

      // The ticket was single-use.
      const reused = yield* Effect.flip(Effect.scoped(V.openRaw(cp.wsUrl, id, { path: ticket.body.url })))
      assert.strictEqual(reused.status, 401, reused.body)
      assert.strictEqual(JSON.parse(reused.body).error.code, "unauthorized")
      // No credentials at all, or a bad token.
      assert.strictEqual((yield* Effect.flip(Effect.scoped(V.openRaw(cp.wsUrl, id, {})))).status, 401)
      assert.strictEqual((yield* Effect.flip(Effect.scoped(V.openRaw(cp.wsUrl, id, { token: "not.a.jwt" })))).status, 401)
      // Someone else's session looks like no session at all.
      const other = yield* Effect.scoped(Effect.flatMap(V.openRaw(cp.wsUrl, id, { token: S.userToken("eve") }), (v) => v.closed()))
      assert.strictEqual(other.code, 4404)
      assert.include(other.reason, "no session")
      // A session that is not running: a close code and reason saying so; the running viewers are unaffected.
      const gone = yield* Effect.scoped(Effect.flatMap(V.openRaw(cp.wsUrl, "s-000000000000", { token }), (v) => v.closed()))
      assert.strictEqual(gone.code, 4404)
      yield* Effect.promise(() => one.client.update(true))

      // Deleting the session ends its viewers with a reason.
      yield* walt.del(`/sessions/${id}`)
      yield* S.waitForSession(walt, id, ["terminated"])
      const ended = yield* Effect.scoped(Effect.flatMap(V.openRaw(cp.wsUrl, id, { token }), (v) => v.closed()))
      assert.strictEqual(ended.code, 4409)
      assert.include(ended.reason, "not running")
      yield* Effect.promise(() => Promise.all([one.client.closed, two.client.closed]).then(() => undefined, () => undefined))
      yield* S.waitForAgent(cp, "agent-vnc2", "with no tunnel left", (a) => a.active_tunnels === 0)
    }), 90_000)
})
