// An in-memory AgentHub for unit tests: agents are set by the test, sent messages and binary frames are
// recorded, tunnel sinks are kept so the test can play the agent, and events are published on demand.
import type { AgentId, Capacity, TunnelId } from "@streamspace/protocol"
import { Effect, Layer, Option, PubSub, Stream } from "effect"
import { AgentHub, AgentHubError, type AgentHubShape, type AgentView, type HubEvent, type TunnelSink } from "../../src/AgentHub.ts"

export interface FakeHub extends AgentHubShape {
  readonly agents: Map<string, AgentView>
  readonly sent: Array<{ readonly agentId: string; readonly type: string; readonly payload: unknown }>
  readonly binary: Array<{ readonly agentId: string; readonly frame: Uint8Array }>
  readonly tunnels: Map<string, TunnelSink>
  readonly emit: (event: HubEvent) => Effect.Effect<void>
  readonly addAgent: (id: string, over?: Partial<AgentView>) => AgentView
  /** Called on every sendBinary (after recording); lets a test react like an agent would. */
  onBinary: (agentId: string, frame: Uint8Array) => Effect.Effect<void>
}

export const defaultCapacity: Capacity = { cpu: "8", memory: "16Gi", max_sessions: 10 }

export const makeFakeHub = Effect.gen(function*() {
  const pubsub = yield* PubSub.unbounded<HubEvent>()
  const agents = new Map<string, AgentView>()
  const tunnels = new Map<string, TunnelSink>()
  const sent: FakeHub["sent"] = []
  const binary: FakeHub["binary"] = []
  const need = (id: AgentId) => {
    const a = agents.get(id)
    return a === undefined ? Effect.fail(new AgentHubError({ reason: "NotFound", message: `no agent ${id}` })) : Effect.succeed(a)
  }
  const update = (id: AgentId, f: (a: AgentView) => AgentView) =>
    Effect.map(need(id), (a) => {
      const next = f(a)
      agents.set(id, next)
      return next
    })
  // Spread, so the fake keeps compiling whether or not the contract has this additive member.
  const extras = { droppedFrames: Effect.succeed(0) }
  const hub: FakeHub = {
    ...extras,
    agents,
    sent,
    binary,
    tunnels,
    onBinary: () => Effect.void,
    addAgent: (id, over = {}) => {
      const view: AgentView = {
        id: id as AgentId,
        platform: "kubernetes",
        region: "eu",
        version: "0.1.0",
        status: "online",
        enrollment: "approved",
        connected: true,
        draining: false,
        capacity: defaultCapacity,
        activeSessions: 0,
        activeTunnels: 0,
        lastHeartbeat: new Date(0),
        ...over
      }
      agents.set(id, view)
      return view
    },
    emit: (event) => PubSub.publish(pubsub, event).pipe(Effect.asVoid),
    list: Effect.sync(() => [...agents.values()]),
    get: (id) => Effect.sync(() => Option.fromNullishOr(agents.get(id))),
    send: (agentId, type, payload) =>
      Effect.flatMap(need(agentId), (a) =>
        a.connected
          ? Effect.sync(() => void sent.push({ agentId, type, payload }))
          : Effect.fail(new AgentHubError({ reason: "NotConnected", message: `agent ${agentId} is not connected` }))),
    sendBinary: (agentId, frame) =>
      Effect.flatMap(need(agentId), (a) =>
        a.connected
          ? Effect.suspend(() => {
            binary.push({ agentId, frame: frame.slice() })
            return hub.onBinary(agentId, frame)
          })
          : Effect.fail(new AgentHubError({ reason: "NotConnected", message: `agent ${agentId} is not connected` }))),
    registerTunnel: (agentId: AgentId, tunnelId: TunnelId, sink: TunnelSink) =>
      Effect.acquireRelease(
        Effect.sync(() => void tunnels.set(`${agentId}/${tunnelId}`, sink)),
        () => Effect.sync(() => void tunnels.delete(`${agentId}/${tunnelId}`))
      ),
    events: Stream.fromPubSub(pubsub),
    setDraining: (id, draining) => update(id, (a) => ({ ...a, draining, status: draining ? "draining" : "online" })),
    approve: (id) => update(id, (a) => ({ ...a, enrollment: "approved" })),
    reject: (id) => update(id, (a) => ({ ...a, enrollment: "rejected" })),
    rotate: (id) => need(id),
    revoke: (id) => update(id, (a) => ({ ...a, enrollment: "revoked", connected: false, status: "offline" }))
  }
  return hub
})

export const fakeHubLayer = (hub: FakeHub) => Layer.succeed(AgentHub, hub)
