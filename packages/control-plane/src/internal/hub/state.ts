// The hub's state and the primitives every hub module uses: the agents by id (each with its record and, while
// connected, its live link), the one hub lock, writes through to the Store one at a time per agent, presence
// events, the report consumers, and the tables of open tunnels and pending tunnel requests.
import type { AgentId, CommandError, CommandId, CommandResult, MessageType, PayloadOf, SessionId, SessionStatus, TunnelId } from "@streamspace/protocol"
import { encodeText, makeMessage } from "@streamspace/protocol"
import type { Cause, Deferred, Queue, Result } from "effect"
import { Clock, Effect, FiberSet, PubSub, Semaphore } from "effect"
import { randomUUID } from "node:crypto"
import type { WebSocket } from "ws"
import type { ControlPlaneConfigShape } from "../../ControlPlaneConfig.ts"
import type { ReplicasShape } from "../../Replicas.ts"
import type { StoreShape } from "../../Store.ts"
import { makeKeyedLock } from "../keyedLock.ts"
import type { AgentRecord } from "../store/agents.ts"
import type { TokenHash } from "../token.ts"
import type { SendQueue } from "../ws.ts"
import type { AgentHubError, AgentReports, AgentView, CommandReport, PresenceEvent, TunnelSink } from "./model.ts"

/** A report of one connection, queued for its consumers. */
export type Report =
  | { readonly _tag: "Connected"; readonly hello: PayloadOf<"hello"> }
  | { readonly _tag: "CommandReport"; readonly report: CommandReport }
  | { readonly _tag: "SessionStatus"; readonly status: SessionStatus }

/** One accepted, handshaken socket. `ended` once it is replaced, revoked, timed out or closed: its frames are ignored. */
export interface Live {
  readonly ws: WebSocket
  /** The peer address of the socket, and the fingerprint of its hello (helloFingerprint), shown to administrators. */
  readonly remoteAddress: string
  readonly fingerprint: string
  readonly out: SendQueue
  readonly approved: boolean
  ended: boolean
  /** When the last heartbeat was read (liveness counts from here, not from when it was applied). */
  lastBeatMs: number
  /** Tunnel data bytes read off this socket and not yet credited back to the agent's link window. */
  linkUnreturned: number
  readonly inbox: Queue.Queue<Report, Cause.Done>
  /** The latest heartbeat not yet applied to the record; one applier runs per socket at a time. */
  pendingBeat: { readonly hb: PayloadOf<"heartbeat">; readonly atMs: number } | undefined
  applyingBeats: boolean
  /** A heartbeat for the store to save; one writer runs per socket at a time and saves the latest. */
  unsaved: { readonly status: AgentRecord["status"]; readonly activeSessions: number; readonly capacity: AgentRecord["capacity"] } | undefined
  writing: boolean
  /** What the store last got from a heartbeat, and when. */
  saved: { readonly key: string; readonly atMs: number } | undefined
}

export interface Entry {
  record: AgentRecord
  live: Live | undefined
  activeTunnels: number
}

/** A tunnel whose sink is registered. `open` once the agent confirmed it, `closed` once either end closed it. */
export interface TunnelEntry {
  readonly agentId: AgentId
  readonly tunnelId: TunnelId
  readonly sessionId: SessionId
  readonly sink: TunnelSink
  phase: "connecting" | "open" | "closed"
  /** Heartbeats in a row whose tunnel list lacked this open tunnel (see hub/reconcile.ts). */
  missedBeats: number
}

/** A tunnel request sent to an agent, waiting for its outcome. */
export interface PendingRequest {
  readonly agentId: AgentId
  /** The agent's answer; fails when the link goes away first. */
  readonly done: Deferred.Deferred<Result.Result<CommandResult, CommandError>, AgentHubError>
}

/**
 * The view of each entry as last made, with what it was made from. Placement reads every agent's view for every
 * create: making 1,000 views afresh each time was a tenth of the control plane's CPU in a burst of creates, and
 * most of its garbage. A record is replaced, never changed in place, so an entry whose record, link and tunnel
 * count are the ones its view was made from has that view still.
 */
const views = new WeakMap<Entry, { readonly record: AgentRecord; readonly live: Live | undefined; readonly activeTunnels: number; readonly view: AgentView }>()

export const viewOf = (entry: Entry): AgentView => {
  const made = views.get(entry)
  if (made !== undefined && made.record === entry.record && made.live === entry.live && made.activeTunnels === entry.activeTunnels) return made.view
  const view = makeView(entry)
  views.set(entry, { record: entry.record, live: entry.live, activeTunnels: entry.activeTunnels, view })
  return view
}

const makeView = (entry: Entry): AgentView => {
  const { credentialHash: _c, previousCredentialExpiresAt: _e, previousCredentialHash: _p, ...r } = entry.record
  const connected = entry.live !== undefined
  const status = !connected ? "offline" : r.draining ? "draining" : r.status === "offline" ? "online" : r.status
  return {
    ...r,
    status,
    connected,
    activeTunnels: entry.activeTunnels,
    remoteAddress: entry.live?.remoteAddress,
    fingerprint: entry.live?.fingerprint
  }
}

export const tunnelKey = (agentId: AgentId, tunnelId: number) => `${agentId}/${tunnelId}`

export const makeHubState = Effect.fnUntraced(function*(config: ControlPlaneConfigShape, store: StoreShape, replicas: ReplicasShape) {
  const lock = yield* Semaphore.make(1)
  const background = yield* FiberSet.make()
  // Sliding: presence is for observers (tests, dashboards); one that falls behind loses the oldest events.
  const presence = yield* PubSub.sliding<PresenceEvent>(4096)
  const writeLock = makeKeyedLock<AgentId>()
  const state = {
    config,
    store,
    /** This replica among the others (presence of agents, written on admit and detach). */
    replicas,
    agents: new Map<AgentId, Entry>(),
    /** One-time enrolment tokens by agent id (hashes only), written through to the Store. */
    enrollmentTokens: new Map<AgentId, { readonly hash: TokenHash; readonly expiresAt: Date }>(),
    background,
    presence,
    reports: [] as Array<AgentReports>,
    tunnels: new Map<string, TunnelEntry>(),
    requests: new Map<CommandId, PendingRequest>(),
    /** The next tunnel id to try, per agent. */
    nextTunnelId: new Map<AgentId, number>(),
    /** Binary frames dropped because no sink was registered for their tunnel. */
    dropped: 0,
    /** The hub lock: admission, enrolment changes and detaching run one at a time. */
    locked: <A, E, R>(effect: Effect.Effect<A, E, R>) => lock.withPermits(1)(effect),
    /** Writes one change of an agent's row through, in order per agent; a failure is logged (memory stays authoritative). */
    persist: (id: AgentId, write: Effect.Effect<unknown, unknown>) =>
      writeLock(id)(write).pipe(
        Effect.asVoid,
        Effect.catchCause((cause) => Effect.logError("AgentHub: could not persist agent", cause).pipe(Effect.annotateLogs({ agent_id: id })))
      ),
    /**
     * Records an agent as no longer connected here: offline in one process; with replicas, its presence here
     * goes and it is offline only if no other live replica holds it.
     */
    markGone: (id: AgentId) => state.persist(id, replicas.clustered ? replicas.release(id) : Effect.andThen(replicas.release(id), store.agents.setStatus(id, "offline"))),
    publish: (event: PresenceEvent) => PubSub.publish(presence, event).pipe(Effect.asVoid),
    /** Runs a mutation of the entry and publishes StatusChanged when its API status moved. */
    tracked: <A, E, R>(entry: Entry, f: Effect.Effect<A, E, R>) =>
      Effect.gen(function*() {
        const before = viewOf(entry).status
        const a = yield* f
        const after = viewOf(entry).status
        if (before !== after) yield* state.publish({ _tag: "StatusChanged", agentId: entry.record.id, status: after })
        return a
      }),
    /** Sends a text message on a socket; false when it is no longer open. */
    sendText: <T extends MessageType>(out: SendQueue, type: T, payload: PayloadOf<T>) =>
      Effect.map(Clock.currentTimeMillis, (ms) => out.sendNow(encodeText(makeMessage(type, payload, randomUUID(), new Date(ms).toISOString()) as never)))
  }
  return state
})

export type HubState = Effect.Success<ReturnType<typeof makeHubState>>
