// Tunnel reconciliation on heartbeats: the ids an agent lists are compared with the hub's tunnels of it. An id
// the hub does not know (a viewer that left without its vnc_disconnect arriving, a tunnel from before a control
// plane restart) is closed with vnc_disconnect; an open tunnel the agent left out of two beats in a row has its
// viewer closed. Heartbeats without `tunnel_ids` (older agents) change nothing.
import { assert, layer } from "@effect/vitest"
import type { AgentId, BinaryFrame, PayloadOf, SessionId, TunnelId } from "@streamspace/protocol"
import { Effect, Exit, Fiber, Scope } from "effect"
import { waitFor } from "@streamspace/testbed"
import type { TunnelSink } from "../src/AgentHub.ts"
import { Store } from "../src/Store.ts"
import { connectAndHello, connectApproved, heartbeatPayload, openTunnel, startHub, withTestClock } from "./support/fakeAgent.ts"

const recordingSink = () => {
  const frames: Array<BinaryFrame> = []
  const closed: Array<PayloadOf<"vnc_closed">> = []
  const sink: TunnelSink = {
    onFrame: (f) => void frames.push(f),
    onClosed: (c) => Effect.sync(() => void closed.push(c)),
    onAgentGone: Effect.void
  }
  return { sink, closed }
}

const commands = (agent: { readonly pending: () => ReadonlyArray<{ readonly type: string; readonly payload: any }> }) =>
  agent.pending().filter((m) => m.type === "command").map((m) => [m.payload.action, m.payload.args])

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("AgentHub tunnel reconciliation", (it) => {
  it.effect("a tunnel the agent lists and the hub does not know is closed with vnc_disconnect; known ones are left alone", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "rec-orphan")
      const t = recordingSink()
      const tunnel = yield* openTunnel(cp.hub, agent, "rec-orphan", t.sink)
      yield* agent.send("heartbeat", heartbeatPayload({ active_tunnels: 3, tunnel_ids: [tunnel.id, 4000 as TunnelId, 4001 as TunnelId] }))
      const first = (yield* agent.next("command")).payload
      const second = (yield* agent.next("command")).payload
      assert.deepStrictEqual(
        [[first.action, first.args], [second.action, second.args]],
        [["vnc_disconnect", { tunnel_id: 4000 }], ["vnc_disconnect", { tunnel_id: 4001 }]]
      )
      assert.deepStrictEqual(t.closed, [])
      // The agent answers; its next beat lists only the viewer's tunnel, and nothing more is sent.
      yield* agent.send("command_completed", { command_id: first.command_id, result: { action: "vnc_disconnect", tunnel_id: 4000 as TunnelId } })
      yield* agent.send("command_completed", { command_id: second.command_id, result: { action: "vnc_disconnect", tunnel_id: 4001 as TunnelId } })
      yield* agent.send("heartbeat", heartbeatPayload({ active_tunnels: 1, tunnel_ids: [tunnel.id] }))
      yield* cp.hub.send("rec-orphan" as AgentId, "drain", { draining: false })
      yield* agent.next("drain")
      assert.deepStrictEqual(commands(agent), [])
    }).pipe(Effect.scoped, withTestClock))

  it.effect("a viewer whose tunnel the agent left out of two beats in a row is closed; one miss is not enough; no tunnel_ids, no verdict", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "rec-lost")
      const scope = yield* Scope.make()
      const t = recordingSink()
      const tunnel = yield* openTunnel(cp.hub, agent, "rec-lost", t.sink).pipe(Scope.provide(scope))
      const sync = Effect.gen(function*() {
        yield* cp.hub.send("rec-lost" as AgentId, "drain", { draining: false })
        yield* agent.next("drain")
      })
      // An older agent sends no ids: nothing is judged.
      for (let i = 0; i < 3; i++) yield* agent.send("heartbeat", heartbeatPayload())
      yield* sync
      assert.deepStrictEqual(t.closed, [])
      // One beat without it (composed before the agent opened it, say), then one with it: the count starts over.
      yield* agent.send("heartbeat", heartbeatPayload({ tunnel_ids: [] }))
      yield* agent.send("heartbeat", heartbeatPayload({ active_tunnels: 1, tunnel_ids: [tunnel.id] }))
      yield* agent.send("heartbeat", heartbeatPayload({ tunnel_ids: [] }))
      yield* sync
      assert.deepStrictEqual(t.closed, [])
      // The second miss in a row: the viewer is told, and closing its scope sends no vnc_disconnect.
      yield* agent.send("heartbeat", heartbeatPayload({ tunnel_ids: [] }))
      yield* waitFor("the viewer told", Effect.sync(() => t.closed.length === 1))
      assert.deepStrictEqual(t.closed[0], { tunnel_id: tunnel.id, session_id: "s-tunnel" as SessionId, reason: "error", message: "the agent no longer has this tunnel" })
      yield* Scope.close(scope, Exit.void)
      yield* sync
      assert.deepStrictEqual(commands(agent), [])
    }).pipe(Effect.scoped, withTestClock))

  it.effect("a tunnel still being opened is never taken for an orphan or for lost", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "rec-opening")
      const t = recordingSink()
      const opening = yield* Effect.forkChild(cp.hub.openTunnel("rec-opening" as AgentId, { sessionId: "s-x" as SessionId, window: 65536 }, t.sink))
      const connect = (yield* agent.next("command")).payload
      if (connect.action !== "vnc_connect") throw new Error("expected vnc_connect")
      // The agent already lists it (it opens the port-forward before it answers), then leaves it out twice.
      yield* agent.send("heartbeat", heartbeatPayload({ active_tunnels: 1, tunnel_ids: [connect.args.tunnel_id] }))
      yield* agent.send("heartbeat", heartbeatPayload({ tunnel_ids: [] }))
      yield* agent.send("heartbeat", heartbeatPayload({ tunnel_ids: [] }))
      yield* cp.hub.send("rec-opening" as AgentId, "drain", { draining: false })
      yield* agent.next("drain")
      assert.deepStrictEqual(commands(agent), [])
      assert.deepStrictEqual(t.closed, [])
      yield* Fiber.interrupt(opening)
    }).pipe(Effect.scoped, withTestClock))

  it.effect("on reconnect: the first beat of the new link lists a tunnel of the old one, and it is closed on the agent", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent, credential } = yield* connectApproved(cp, "rec-again")
      const t = recordingSink()
      const scope = yield* Scope.make()
      const tunnel = yield* openTunnel(cp.hub, agent, "rec-again", t.sink).pipe(Scope.provide(scope))
      // The link drops (the viewer is told the agent went away); the agent comes back still holding the tunnel.
      yield* agent.close(4000)
      yield* Scope.close(scope, Exit.void)
      const again = yield* connectAndHello(cp.url, credential, "rec-again")
      yield* again.agent.send("heartbeat", heartbeatPayload({ active_tunnels: 1, tunnel_ids: [tunnel.id] }))
      const disconnect = (yield* again.agent.next("command")).payload
      assert.deepStrictEqual([disconnect.action, disconnect.args], ["vnc_disconnect", { tunnel_id: tunnel.id }])
    }).pipe(Effect.scoped, withTestClock))
})
