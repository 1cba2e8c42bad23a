// AgentHub: accepts agent sockets at GET /api/v1/agent/connect, authenticates them (bootstrap token ->
// pending; per-agent credentials with rotation and revocation), runs hello/welcome with version negotiation,
// replaces an older socket of the same agent at once, tracks heartbeats, status, capacity and the drain flag,
// and routes what agents send: each report to its one consumer (AgentReports), tunnel bytes and answers to
// the tunnel's sink. Presence (connects, disconnects, status changes) is a stream for whoever watches.
//
// Modules (internal/hub/): state (agents, lock, write-through), link (one socket: handshake, read loop,
// watchdog), heartbeats, enrolment, tunnels (non-persisted vnc_connect / vnc_disconnect), reconcile (the tunnel
// ids each heartbeat lists against the hub's), model (the types).
import type { AgentId, ControlPlaneMessage, MessageType, PayloadOf } from "@streamspace/protocol"
import { AGENT_SUBPROTOCOL, CloseCode, MAX_FRAME_BYTES } from "@streamspace/protocol"
import type { Duration, Option, Scope } from "effect"
import { Clock, Context, Effect, Layer, Option as O, Stream } from "effect"
import { HttpRouter } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { Drain, type DrainShape } from "./Drain.ts"
import { goAwayAll } from "./internal/hub/goaway.ts"
import * as Enrolment from "./internal/hub/enrolment.ts"
import { detach, serveLink } from "./internal/hub/link.ts"
import {
  AgentHubError,
  type AgentReports,
  type AgentView,
  notApproved,
  notConnected,
  notFound,
  type PresenceEvent,
  type Tunnel,
  type TunnelRequest,
  type TunnelSink
} from "./internal/hub/model.ts"
import { type HubState, makeHubState, viewOf } from "./internal/hub/state.ts"
import { getOne, listAll, refreshFromStore } from "./internal/hub/cluster.ts"
import { type AgentOp, makeClusterOps } from "./internal/hub/clusterOps.ts"
import { openTunnel } from "./internal/hub/tunnels.ts"
import { bearerToken } from "./internal/token.ts"
import { errorResponse } from "./internal/httpError.ts"
import { close, isUpgrade, remoteAddress, scopedWsServer, serveUpgrade } from "./internal/ws.ts"
import { currentReplicas } from "./Replicas.ts"
import { Store } from "./Store.ts"

export {
  AgentHubError,
  type AgentReports,
  type AgentView,
  type AgentViewStatus,
  type CommandReport,
  type PresenceEvent,
  type Tunnel,
  type TunnelRequest,
  type TunnelSink
} from "./internal/hub/model.ts"
export type { EnrollmentState } from "./Store.ts"

export interface AgentHubShape {
  readonly list: Effect.Effect<ReadonlyArray<AgentView>>
  readonly get: (id: AgentId) => Effect.Effect<Option.Option<AgentView>>
  /** Whether this replica holds the agent's socket (with replicas, `get` shows agents connected anywhere). */
  readonly holds?: (id: AgentId) => boolean
  /** Sends a text message to a connected, approved agent. */
  readonly send: <T extends ControlPlaneMessage["type"] & MessageType>(agentId: AgentId, type: T, payload: PayloadOf<T>) => Effect.Effect<void, AgentHubError>
  /** Makes `reports` a consumer of what agents report, for as long as the scope lives. */
  readonly subscribe: (reports: AgentReports) => Effect.Effect<void, never, Scope.Scope>
  /** Connects, disconnects and status changes, for whoever watches (one that falls far behind loses the oldest). */
  readonly presence: Stream.Stream<PresenceEvent>
  /**
   * Opens a tunnel to a session on the agent (`vnc_connect`, not persisted); `sink` gets its frames, its close
   * and the agent's departure. Closing the scope closes it on the agent.
   */
  readonly openTunnel: (agentId: AgentId, request: TunnelRequest, sink: TunnelSink) => Effect.Effect<Tunnel, AgentHubError, Scope.Scope>
  readonly setDraining: (id: AgentId, draining: boolean) => Effect.Effect<AgentView, AgentHubError>
  /** Approves a pending agent: issues its credential over the socket. */
  readonly approve: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  readonly reject: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Issues a new credential; the old one works for CREDENTIAL_ROTATION_GRACE. */
  readonly rotate: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Revokes the credential and closes the agent's socket. */
  readonly revoke: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Binary frames dropped because no sink was registered for their tunnel. */
  readonly droppedFrames: Effect.Effect<number>
  /** A one-time enrolment token for `id`, valid for `ttl`: shown once, only its hash is kept. */
  readonly issueEnrollmentToken: (id: AgentId, ttl: Duration.Duration) => Effect.Effect<{ readonly token: string; readonly expiresAt: Date }, AgentHubError>
  /** Deletes a rejected agent's record. */
  readonly remove: (id: AgentId) => Effect.Effect<void, AgentHubError>
}

/** The route the hub registers. */
export const AGENT_CONNECT_PATH = "/api/v1/agent/connect"

/**
 * Loads every agent from the Store; a row left `online` by a crash is offline now (nobody is connected at start).
 * With replicas, other replicas may hold them: their presence says so, and the leader's sweep marks offline
 * the agents nobody holds.
 */
const loadAgents = (state: HubState) =>
  Effect.gen(function*() {
    const stale: Array<AgentId> = []
    for (const record of yield* Effect.orDie(state.store.agents.list())) {
      if (record.status !== "offline") stale.push(record.id)
      state.agents.set(record.id, { record: { ...record, status: "offline" }, live: undefined, activeTunnels: 0 })
    }
    if (!state.replicas.clustered) yield* Effect.forEach(stale, (id) => state.persist(id, state.store.agents.setStatus(id, "offline")), { concurrency: 16, discard: true })
    for (const t of yield* Effect.orDie(state.store.agents.listEnrollmentTokens())) state.enrollmentTokens.set(t.agentId, { hash: t.tokenHash, expiresAt: t.expiresAt })
  })

/** GET /api/v1/agent/connect: checks the upgrade before accepting it, then serves the link. */
const connectRoute = (state: HubState, wss: Effect.Success<ReturnType<typeof scopedWsServer>>, drain: DrainShape) => (request: HttpServerRequest) =>
  Effect.gen(function*() {
    if (!isUpgrade(request)) return errorResponse(426, "upgrade_required", `${AGENT_CONNECT_PATH} only accepts WebSocket upgrades`)
    if (drain.draining()) return errorResponse(503, "draining", "this control-plane replica is stopping: connect again (another replica answers)")
    const token = bearerToken(request.headers["authorization"])
    if (token === undefined) return errorResponse(401, "unauthorized", "missing Authorization: Bearer <agent token>")
    let credential = Enrolment.authenticate(state, token, yield* Clock.currentTimeMillis)
    if (credential === undefined && state.replicas.clustered) {
      // Issued by another replica (approval, rotation, enrolment token) after this one loaded the agents.
      yield* refreshFromStore(state)
      credential = Enrolment.authenticate(state, token, yield* Clock.currentTimeMillis)
    }
    if (credential === undefined) {
      yield* Effect.logWarning(`AgentHub: refused a connection from ${remoteAddress(request)}: invalid agent token`)
      return errorResponse(401, "unauthorized", "invalid agent token")
    }
    const offered = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((s) => s.trim())
    if (!offered.includes(AGENT_SUBPROTOCOL)) {
      return errorResponse(400, "unsupported_subprotocol", `the WebSocket subprotocol must be ${AGENT_SUBPROTOCOL}`)
    }
    return yield* serveUpgrade(wss, request, (ws) =>
      serveLink(state, ws, credential, {
        remoteAddress: remoteAddress(request),
        // A one-time enrolment token is the administrator's approval in advance: issue the credential at once.
        ...(credential.kind === "enrollment"
          ? { afterAdmit: (id: AgentId) => Effect.asVoid(Enrolment.approve(state, id)).pipe(Effect.catch((e) => Effect.logWarning(`AgentHub: enrolment by token failed: ${e.message}`))) }
          : {})
      }))
  })

/**
 * On shutdown: closes every agent socket now (they reconnect to the next instance), then records them offline,
 * several writes at a time (one by one, 500 agents kept the process from exiting for 15 s).
 */
const closeAll = (state: HubState) =>
  Effect.gen(function*() {
    const closed: Array<AgentId> = []
    for (const entry of state.agents.values()) {
      const live = entry.live
      if (live === undefined) continue
      live.ended = true
      entry.live = undefined
      close(live.ws, CloseCode.goingAway, "control plane shutting down")
      closed.push(entry.record.id)
    }
    yield* Effect.forEach(closed, (id) => state.markGone(id), { concurrency: 16, discard: true })
  })

/** The lease is lost: every agent connected here is detached and its socket closed, so it redials a live replica. */
const letGo = (state: HubState) =>
  state.locked(Effect.forEach([...state.agents.values()], (entry) => {
    const live = entry.live
    if (live === undefined) return Effect.void
    // Not written to the store (it is out of reach): the lease's expiry is what tells the others.
    return detach(state, entry, live, false).pipe(
      Effect.andThen(Effect.sync(() => close(live.ws, CloseCode.goingAway, "this control-plane replica lost its lease; reconnect to another")))
    )
  }, { discard: true }))

/** Builds the hub and registers its route on the HttpRouter. Closing the scope closes every agent socket with 1001. */
export const make = Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  const router = yield* HttpRouter.HttpRouter
  const wss = yield* scopedWsServer({ subprotocol: AGENT_SUBPROTOCOL, maxPayload: MAX_FRAME_BYTES })
  const replicas = yield* currentReplicas
  const state = yield* makeHubState(config, yield* Store, replicas)
  yield* loadAgents(state)
  const drain = yield* Drain
  yield* router.add("GET", AGENT_CONNECT_PATH, connectRoute(state, wss, drain))
  yield* drain.onDrain(goAwayAll(state, "control plane replica stopping"))
  yield* Effect.addFinalizer(() => closeAll(state))
  // Partitioned from PostgreSQL: another replica may take these agents once the lease expires, so let go now.
  yield* replicas.onLeaseLost(letGo(state))

  // With replicas, an administrator's change is made where the agent's socket is (internal/hub/clusterOps.ts).
  const localOp = (op: AgentOp, id: AgentId): Effect.Effect<AgentView, AgentHubError> => {
    switch (op) {
      case "approve":
        return Enrolment.approve(state, id)
      case "reject":
        return Enrolment.reject(state, id)
      case "rotate":
        return Enrolment.rotate(state, id)
      case "revoke":
        return Enrolment.revoke(state, id)
      case "drain":
      case "undrain":
        return Enrolment.setDraining(state, id, op === "drain")
    }
  }
  const ops = replicas.clustered ? yield* makeClusterOps(state, replicas, localOp) : undefined
  const op = (name: AgentOp, id: AgentId) => ops === undefined ? localOp(name, id) : ops.run(name, id)

  const approvedLink = (agentId: AgentId) =>
    Effect.suspend(() => {
      const entry = state.agents.get(agentId)
      if (entry === undefined) return Effect.fail(notFound(agentId))
      const live = entry.live
      if (live === undefined) return Effect.fail(notConnected(agentId))
      return live.approved ? Effect.succeed(live) : Effect.fail(notApproved(agentId))
    })

  return AgentHub.of({
    list: replicas.clustered ? listAll(state) : Effect.sync(() => [...state.agents.values()].map(viewOf)),
    get: (id) => replicas.clustered ? getOne(state, id) : Effect.sync(() => O.map(O.fromUndefinedOr(state.agents.get(id)), viewOf)),
    holds: (id) => state.agents.get(id)?.live?.approved === true,
    send: Effect.fn("AgentHub.send")(function*<T extends ControlPlaneMessage["type"] & MessageType>(agentId: AgentId, type: T, payload: PayloadOf<T>) {
      const live = yield* approvedLink(agentId)
      if (!(yield* state.sendText(live.out, type, payload))) return yield* notConnected(agentId)
    }),
    subscribe: (reports) =>
      Effect.acquireRelease(
        Effect.sync(() => state.reports.push(reports)),
        () => Effect.sync(() => state.reports.splice(state.reports.indexOf(reports), 1))
      ),
    presence: Stream.fromPubSub(state.presence),
    openTunnel: (agentId, request, sink) => openTunnel(state, agentId, request, sink).pipe(Effect.withSpan("AgentHub.openTunnel")),
    setDraining: Effect.fn("AgentHub.setDraining")((id: AgentId, draining: boolean) => op(draining ? "drain" : "undrain", id)),
    approve: Effect.fn("AgentHub.approve")((id: AgentId) => op("approve", id)),
    reject: Effect.fn("AgentHub.reject")((id: AgentId) => op("reject", id)),
    rotate: Effect.fn("AgentHub.rotate")((id: AgentId) => op("rotate", id)),
    revoke: Effect.fn("AgentHub.revoke")((id: AgentId) => op("revoke", id)),
    droppedFrames: Effect.sync(() => state.dropped),
    issueEnrollmentToken: Effect.fn("AgentHub.issueEnrollmentToken")((id: AgentId, ttl: Duration.Duration) =>
      Effect.andThen(ops === undefined || state.agents.get(id)?.live !== undefined ? Effect.void : ops.reloadOne(id), Enrolment.issueEnrollmentToken(state, id, ttl))),
    remove: Effect.fn("AgentHub.remove")((id: AgentId) => Effect.andThen(ops?.reloadOne(id) ?? Effect.void, Enrolment.remove(state, id)))
  })
})

export class AgentHub extends Context.Service<AgentHub, AgentHubShape>()("control-plane/AgentHub") {
  /**
   * The hub on the Store; registers GET /api/v1/agent/connect on the HttpRouter. Needs ControlPlaneConfig,
   * Store and HttpRouter (build it inside HttpRouter.serve, or provide the same router the server serves).
   */
  static readonly layer = Layer.effect(AgentHub, make)
}
