// An in-memory AgentHub for unit tests: agents are set by the test, sent messages are recorded, the subscribed
// consumers get the reports the test plays as an agent, and tunnels are opened, answered and closed the way
// the real hub does it, with every open and close recorded.
import type { AgentId, Capacity, CommandErrorCode, PayloadOf, SessionStatus, TunnelId } from "@streamspace/protocol"
import { Deferred, Duration, Effect, Layer, Option, PubSub, Stream } from "effect"
import {
  AgentHub,
  AgentHubError,
  type AgentHubShape,
  type AgentReports,
  type AgentView,
  type CommandReport,
  type PresenceEvent,
  type TunnelRequest,
  type TunnelSink
} from "../../src/AgentHub.ts"

export interface TunnelOpen {
  readonly agentId: AgentId
  readonly tunnelId: TunnelId
  readonly request: TunnelRequest
}

/** How the fake agent answers a tunnel: the window it grants, or a refusal. */
export type TunnelAnswer = { readonly window: number } | { readonly error: { readonly code: CommandErrorCode; readonly message: string } }

export interface FakeHub extends AgentHubShape {
  readonly agents: Map<string, AgentView>
  readonly sent: Array<{ readonly agentId: string; readonly type: string; readonly payload: unknown }>
  /** Frames sent through tunnels. */
  readonly binary: Array<{ readonly agentId: string; readonly frame: Uint8Array }>
  /** Registered sinks by `${agentId}/${tunnelId}`. */
  readonly tunnels: Map<string, TunnelSink>
  /** Every tunnel asked for (vnc_connect), in order. */
  readonly opens: Array<TunnelOpen>
  /** Every tunnel closed on the agent (vnc_disconnect), in order. */
  readonly closes: Array<{ readonly agentId: string; readonly tunnelId: TunnelId }>
  /** Answers a tunnel at once; undefined leaves it waiting for `answerTunnel`. */
  tunnelResponder: (open: TunnelOpen) => TunnelAnswer | undefined
  readonly answerTunnel: (tunnelId: TunnelId, answer: TunnelAnswer) => Effect.Effect<void>
  /** Plays the agent: `vnc_closed` for a tunnel. */
  readonly agentClosed: (agentId: string, tunnelId: TunnelId, reason: PayloadOf<"vnc_closed">["reason"]) => Effect.Effect<void>
  /** Plays the agent's link going away: its tunnels end. */
  readonly agentGone: (agentId: string) => Effect.Effect<void>
  /** Plays an approved agent connecting with `hello`: the subscribed consumers run, in order. */
  readonly connected: (agentId: string, hello: PayloadOf<"hello">) => Effect.Effect<void>
  readonly sessionStatus: (agentId: string, status: SessionStatus) => Effect.Effect<void>
  readonly commandReport: (agentId: string, report: CommandReport) => Effect.Effect<void>
  readonly addAgent: (id: string, over?: Partial<AgentView>) => AgentView
  /** Called on every tunnel frame sent (after recording); lets a test react like an agent would. */
  onBinary: (agentId: string, frame: Uint8Array) => Effect.Effect<void>
}

export const defaultCapacity: Capacity = { cpu: "8", memory: "16Gi", max_sessions: 10 }

export const makeFakeHub = Effect.gen(function*() {
  const presence = yield* PubSub.unbounded<PresenceEvent>()
  const agents = new Map<string, AgentView>()
  const tunnels = new Map<string, TunnelSink>()
  const consumers: Array<AgentReports> = []
  const answers = new Map<number, Deferred.Deferred<TunnelAnswer>>()
  const done = new Set<string>() // tunnels the agent closed or lost: nothing to close on it
  let nextTunnel = 0
  const need = (id: AgentId) => {
    const a = agents.get(id)
    return a === undefined ? Effect.fail(new AgentHubError({ reason: "NotFound", message: `no agent ${id}` })) : Effect.succeed(a)
  }
  const connectedAgent = (id: AgentId) =>
    Effect.flatMap(need(id), (a) => (a.connected ? Effect.succeed(a) : Effect.fail(new AgentHubError({ reason: "NotConnected", message: `agent ${id} is not connected` }))))
  const update = (id: AgentId, f: (a: AgentView) => AgentView) =>
    Effect.map(need(id), (a) => {
      const next = f(a)
      agents.set(id, next)
      return next
    })
  const each = (f: (c: AgentReports) => Effect.Effect<void> | undefined) => Effect.forEach(consumers, (c) => f(c) ?? Effect.void, { discard: true })

  const hub: FakeHub = {
    agents,
    sent: [],
    binary: [],
    tunnels,
    opens: [],
    closes: [],
    tunnelResponder: () => ({ window: 65536 }),
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
        createdAt: new Date(0),
        updatedAt: new Date(0),
        enrollmentChangedAt: undefined,
        ...over
      }
      agents.set(id, view)
      return view
    },
    connected: (agentId, hello) => each((c) => c.onConnected?.(agentId as AgentId, hello)),
    sessionStatus: (agentId, status) => each((c) => c.onSessionStatus?.(agentId as AgentId, status)),
    commandReport: (agentId, report) => each((c) => c.onCommandReport?.(agentId as AgentId, report)),
    answerTunnel: (tunnelId, answer) =>
      Effect.suspend(() => {
        const d = answers.get(tunnelId)
        return d === undefined ? Effect.die(new Error(`no tunnel ${tunnelId} waits for an answer`)) : Deferred.succeed(d, answer).pipe(Effect.asVoid)
      }),
    agentClosed: (agentId, tunnelId, reason) =>
      Effect.suspend(() => {
        const key = `${agentId}/${tunnelId}`
        const sink = tunnels.get(key)
        if (sink === undefined) return Effect.void
        done.add(key)
        return sink.onClosed({ tunnel_id: tunnelId, reason })
      }),
    agentGone: (agentId) =>
      Effect.forEach([...tunnels].filter(([key]) => key.startsWith(`${agentId}/`)), ([key, sink]) => {
        done.add(key)
        return sink.onAgentGone
      }, { discard: true }),
    list: Effect.sync(() => [...agents.values()]),
    get: (id) => Effect.sync(() => Option.fromNullishOr(agents.get(id))),
    send: (agentId, type, payload) => Effect.flatMap(connectedAgent(agentId), () => Effect.sync(() => void hub.sent.push({ agentId, type, payload }))),
    subscribe: (reports) =>
      Effect.acquireRelease(Effect.sync(() => consumers.push(reports)), () => Effect.sync(() => consumers.splice(consumers.indexOf(reports), 1))),
    presence: Stream.fromPubSub(presence),
    openTunnel: (agentId, request, sink) =>
      Effect.gen(function*() {
        yield* connectedAgent(agentId)
        const tunnelId = ++nextTunnel as TunnelId
        const key = `${agentId}/${tunnelId}`
        const open: TunnelOpen = { agentId, tunnelId, request }
        const answer = yield* Deferred.make<TunnelAnswer>()
        answers.set(tunnelId, answer)
        let opened = false
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            tunnels.set(key, sink)
            hub.opens.push(open)
          }),
          () =>
            Effect.sync(() => {
              tunnels.delete(key)
              if (opened && !done.has(key)) hub.closes.push({ agentId, tunnelId })
            })
        )
        const now = hub.tunnelResponder(open)
        if (now !== undefined) yield* Deferred.succeed(answer, now)
        const reply = yield* Deferred.await(answer)
        if ("error" in reply) return yield* new AgentHubError({ reason: "TunnelRefused", code: reply.error.code, message: reply.error.message })
        opened = true
        return {
          id: tunnelId,
          window: reply.window,
          send: (frame: Uint8Array) =>
            Effect.flatMap(connectedAgent(agentId), () =>
              Effect.suspend(() => {
                hub.binary.push({ agentId, frame: frame.slice() })
                return hub.onBinary(agentId, frame)
              }))
        }
      }),
    setDraining: (id, draining) => update(id, (a) => ({ ...a, draining, status: draining ? "draining" : "online" })),
    approve: (id) => update(id, (a) => ({ ...a, enrollment: "approved" })),
    reject: (id) => update(id, (a) => ({ ...a, enrollment: "rejected" })),
    rotate: (id) => need(id),
    revoke: (id) => update(id, (a) => ({ ...a, enrollment: "revoked", connected: false, status: "offline" })),
    droppedFrames: Effect.succeed(0),
    issueEnrollmentToken: (_id, ttl) => Effect.succeed({ token: "fake-enrollment-token", expiresAt: new Date(Date.now() + Duration.toMillis(ttl)) }),
    remove: (id) =>
      Effect.flatMap(need(id), (a) =>
        a.enrollment === "rejected"
          ? Effect.sync(() => void agents.delete(id))
          : Effect.fail(new AgentHubError({ reason: "InvalidTransition", message: `agent ${id} is ${a.enrollment}: only rejected agents are deleted` })))
  }
  return hub
})

export const fakeHubLayer = (hub: FakeHub) => Layer.succeed(AgentHub, hub)
