// VncProxy: `GET /api/v1/sessions/:id/vnc` upgrades a browser (noVNC, `binary` subprotocol) to a WebSocket
// and relays it through a tunnel to the session's agent. Authorised by the user's JWT or by a short-lived,
// single-use ticket from `POST /api/v1/sessions/:id/vnc-ticket` (browsers cannot set headers on WebSockets).
// Several viewers may watch one session; each gets its own tunnel (AgentHub.openTunnel, not persisted).
// Either end closing tears down both: the tunnel closes on the agent when the viewer leaves; the viewer is
// closed with a code and reason when the agent closes the tunnel or goes away.
//
// Several replicas: a viewer whose session's agent another replica holds (AgentLocator) is authenticated here and
// bridged to that replica's peer endpoint (internal/peer/), which relays it like a local viewer. While the
// replica drains (Drain), new viewers are refused and open ones handed over with CloseCode.reconnect.
//
// Modules (internal/vnc/): relay (one viewer, flow control both ways), tickets; (internal/peer/): bridge,
// endpoint, peerToken, signing, locator.
import type { AgentId, SessionId } from "@streamspace/protocol"
import { MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { Clock, Context, Effect, Layer, Metric, Option } from "effect"
import { HttpRouter } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import type { WebSocket } from "ws"
import { AgentHub, type TunnelSink } from "./AgentHub.ts"
import { Auth, type AuthError, type User } from "./Auth.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { Drain } from "./Drain.ts"
import { bridge, PEER_SUBPROTOCOL, PEER_VNC_PATH } from "./internal/peer/bridge.ts"
import { peerRoute } from "./internal/peer/endpoint.ts"
import { AgentLocator, type ReplicaAddress } from "./internal/peer/locator.ts"
import { issuePeerToken } from "./internal/peer/peerToken.ts"
import { deriveKey } from "./internal/peer/signing.ts"
import { relay, ViewerClose } from "./internal/vnc/relay.ts"
import { isUserInput, makeRfbClientParser } from "./internal/vnc/rfbClientMessages.ts"
import { makeTickets, memoryClaims, VncProxyError, type VncTicket } from "./internal/vnc/tickets.ts"
import { makeViewerLimits } from "./internal/vnc/viewerLimits.ts"
import { errorResponse } from "./internal/httpError.ts"
import { closeAndWait, isUpgrade, scopedWsServer, serveUpgrade } from "./internal/ws.ts"
import { recordCommand, vncViewers } from "./Observability.ts"
import { Sessions } from "./Sessions.ts"
import { Store } from "./Store.ts"

export { ViewerClose } from "./internal/vnc/relay.ts"
export { VncProxyError, type VncTicket } from "./internal/vnc/tickets.ts"

export interface VncProxyShape {
  /** Issues a single-use ticket for one session, bound to the user; the session must be visible to them. */
  readonly issueTicket: (user: User, sessionId: string) => Effect.Effect<VncTicket, VncProxyError>
  /** Viewers connected right now. */
  readonly viewers: Effect.Effect<number>
  /**
   * Bytes held for viewers: relayed to a viewer's socket and not yet written to it, plus bytes a viewer sent
   * that wait for the agent's credit. Per viewer this stays within one tunnel window (plus the message the
   * viewer was sending when it ran out of credit), however slowly the viewer reads.
   */
  readonly buffered: Effect.Effect<{ readonly total: number; readonly max: number }>
}

export const VNC_PATH = "/api/v1/sessions/:id/vnc"
/** The subprotocol noVNC asks for; answered when offered. */
export const VIEWER_SUBPROTOCOL = "binary"
/** Largest message a viewer may send (RFB client messages are small; cut text is the largest). */
export const MAX_VIEWER_MESSAGE_BYTES = 16 * MAX_BINARY_PAYLOAD_BYTES

export const make = Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  const hub = yield* AgentHub
  const sessions = yield* Sessions
  const auth = yield* Auth
  const router = yield* HttpRouter.HttpRouter
  const wss = yield* scopedWsServer({ subprotocol: VIEWER_SUBPROTOCOL, maxPayload: MAX_VIEWER_MESSAGE_BYTES })
  // Single use across replicas through the Store's ticket ledger; in memory where no Store is provided (tests).
  const store = yield* Effect.serviceOption(Store)
  const tickets = makeTickets(config.vncTicketTtl, config.clusterSecret, Option.match(store, {
    onNone: memoryClaims,
    onSome: (s) => (jti: string, expiresAtMs: number) => s.ticketUses.claim(jti, new Date(expiresAtMs))
  }))
  const drain = yield* Drain
  const locator = yield* AgentLocator
  const peerKey = Option.map(config.clusterSecret, () => deriveKey(config.clusterSecret, "peer-vnc"))
  const peerWss = yield* scopedWsServer({ subprotocol: PEER_SUBPROTOCOL, maxPayload: MAX_VIEWER_MESSAGE_BYTES })
  /** Open viewer (and peer) sockets: handed over with CloseCode.reconnect when the replica drains. */
  const live = new Set<WebSocket>()
  const reconnect = (ws: WebSocket) => closeAndWait(ws, ViewerClose.reconnect, "this replica is stopping: reconnect")
  yield* drain.onDrain(Effect.suspend(() => Effect.forEach([...live], reconnect, { concurrency: "unbounded", discard: true })))
  const viewerLimits = makeViewerLimits(config.userLimits)
  let viewerCount = 0
  /** Numbers viewers, so the API can say which one sent a session's last input. */
  let viewerSerial = 0
  /** What each open relay holds in memory (see `buffered`). */
  const held = new Set<() => number>()

  const issueTicket = Effect.fn("VncProxy.issueTicket")(function*(user: User, sessionId: string) {
    const session = yield* sessions.get(user, sessionId).pipe(
      Effect.mapError(() => new VncProxyError({ reason: "NotFound", message: `no session "${sessionId.slice(0, 80)}"` }))
    )
    const refused = viewerLimits.refusal(user, session.id)
    if (refused !== undefined) return yield* new VncProxyError({ reason: "LimitExceeded", message: refused })
    return yield* tickets.issue(user, session.id)
  })

  /** The tunnel to a session through its agent's link, with the latency and outcome of opening it recorded. */
  const openThroughHub = (agentId: AgentId, sessionId: SessionId) => (sink: TunnelSink) =>
    Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const record = (outcome: string) => Effect.flatMap(Clock.currentTimeMillis, (now) => recordCommand("vnc_connect", outcome, started, now))
      return yield* hub.openTunnel(agentId, { sessionId, window: config.vncTunnelWindow }, sink).pipe(
        Effect.tap(() => record("completed")),
        Effect.tapError((e) => record(e.code ?? "error"))
      )
    })

  /**
   * Watches what a viewer sends for user input (keys, pointer, clipboard: RFB client messages), which is activity
   * for the session's idle limit. Screen updates, update requests and encodings are not.
   */
  const inputWatcher = (sessionId: SessionId, viewer: string) =>
    Effect.map(Effect.context<never>(), (context) => {
      const parser = makeRfbClientParser()
      const note = Effect.runSyncWith(context)
      return (bytes: Uint8Array) => {
        if (parser.push(bytes).some(isUserInput)) note(sessions.noteInput(sessionId, viewer))
      }
    })

  /**
   * Serves one upgraded viewer socket to the end, then closes it with the reason when the agent side ended:
   * relayed to the agent's tunnel here, or bridged to the replica holding the agent (`holder`).
   */
  const serveViewer = (ws: WebSocket, user: User, agentId: AgentId, sessionId: SessionId, viewer: string, holder?: ReplicaAddress) =>
    Effect.scoped(Effect.gen(function*() {
      // The check and the slot in one synchronous step, so concurrent viewers cannot all take the last one.
      const slot = viewerLimits.acquire(user, sessionId)
      if ("refused" in slot) return yield* closeAndWait(ws, ViewerClose.tooManyViewers, slot.refused)
      yield* Effect.addFinalizer(() => Effect.sync(slot.release))
      viewerCount++
      yield* Metric.modify(vncViewers, 1)
      yield* Effect.addFinalizer(() => Effect.andThen(Effect.sync(() => void viewerCount--), Metric.modify(vncViewers, -1)))
      live.add(ws)
      yield* Effect.addFinalizer(() => Effect.sync(() => live.delete(ws)))
      const track = (bytes: () => number) => Effect.acquireRelease(Effect.sync(() => held.add(bytes)), () => Effect.sync(() => held.delete(bytes)))
      const end = yield* (holder === undefined || Option.isNone(peerKey)
        ? relay(ws, openThroughHub(agentId, sessionId), {
          window: config.vncTunnelWindow,
          pingInterval: config.pingInterval,
          track,
          onViewerData: yield* inputWatcher(sessionId, viewer)
        })
        : bridge(ws, {
          peerUrl: holder.peerUrl,
          sessionId,
          token: issuePeerToken(peerKey.value, { sessionId, user }, yield* Clock.currentTimeMillis),
          highWater: config.vncTunnelWindow,
          maxPayload: MAX_VIEWER_MESSAGE_BYTES,
          pingInterval: config.pingInterval,
          track
        })).pipe(
        Effect.onInterrupt(() => closeAndWait(ws, ViewerClose.goingAway, "the control plane is shutting down"))
      )
      if (end.by === "viewer") return
      yield* closeAndWait(ws, end.code, end.reason)
      yield* Effect.logInfo("VncProxy: viewer closed").pipe(Effect.annotateLogs({ code: end.code, reason: end.reason }))
    }).pipe(Effect.annotateLogs({ session_id: sessionId, agent_id: agentId })))

  const route = (request: HttpServerRequest) =>
    Effect.gen(function*() {
      const sessionId = (yield* HttpRouter.params).id ?? ""
      if (!isUpgrade(request)) return errorResponse(426, "upgrade_required", "this endpoint only accepts WebSocket upgrades (noVNC)")
      if (drain.draining()) return yield* serveUpgrade(wss, request, reconnect)
      const ticket = new URL(request.url, "http://localhost").searchParams.get("ticket")
      const authenticated: Effect.Effect<User, AuthError | VncProxyError> = ticket !== null
        ? tickets.redeem(ticket, sessionId)
        : auth.authenticate(request.headers["authorization"])
      const user = yield* Effect.result(authenticated)
      if (user._tag === "Failure") {
        const e: AuthError | VncProxyError = user.failure
        return e._tag === "AuthError" && e.reason === "Forbidden" ? errorResponse(403, "forbidden", e.message) : errorResponse(401, "unauthorized", e.message)
      }
      const session = yield* sessions.get(user.success, sessionId).pipe(Effect.option)
      const holder = session._tag === "None" ? Option.none() : yield* locator.holderOf(session.value.agentId)
      return yield* serveUpgrade(wss, request, (ws) =>
        session._tag === "None"
          ? closeAndWait(ws, ViewerClose.notFound, `no session "${sessionId.slice(0, 60)}"`)
          : session.value.state !== "running"
          ? closeAndWait(ws, ViewerClose.notRunning, `session is ${session.value.state}, not running`)
          : serveViewer(ws, user.success, session.value.agentId, session.value.id, `${user.success.id} (viewer ${++viewerSerial})`, Option.getOrUndefined(holder)))
    }).pipe(Effect.withSpan("VncProxy.viewer"))

  yield* router.add("GET", VNC_PATH, route)
  yield* router.add("GET", PEER_VNC_PATH, peerRoute({
    key: peerKey,
    wss: peerWss,
    draining: drain.draining,
    lookup: (user, id) => Effect.option(sessions.get(user, id)),
    serve: (ws, user, agentId, sessionId) => serveViewer(ws, user, agentId, sessionId, `${user.id} (peer viewer ${++viewerSerial})`)
  }))

  return VncProxy.of({
    issueTicket,
    viewers: Effect.sync(() => viewerCount),
    buffered: Effect.sync(() => {
      let total = 0
      let max = 0
      for (const bytes of held) {
        const n = bytes()
        total += n
        max = Math.max(max, n)
      }
      return { total, max }
    })
  })
})

export class VncProxy extends Context.Service<VncProxy, VncProxyShape>()("control-plane/VncProxy") {
  /** Registers the viewer route on the HttpRouter; needs AgentHub, Sessions, Auth and config. */
  static readonly layer = Layer.effect(VncProxy, make)
}
