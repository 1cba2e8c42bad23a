// VncProxy: `GET /api/v1/sessions/:id/vnc` upgrades a browser (noVNC, `binary` subprotocol) to a WebSocket
// and relays it through a tunnel to the session's agent. Authorised by the user's JWT or by a short-lived,
// single-use ticket from `POST /api/v1/sessions/:id/vnc-ticket` (browsers cannot set headers on WebSockets).
// Several viewers may watch one session; each gets its own tunnel (AgentHub.openTunnel, not persisted).
// Either end closing tears down both: the tunnel closes on the agent when the viewer leaves; the viewer is
// closed with a code and reason when the agent closes the tunnel or goes away.
//
// With Sharing in context, users a session is shared with (and share-link holders) may open viewers too; each
// viewer joins the session's presence list, and input from a viewer without control is dropped here
// (internal/vnc/inputFilter), never left to the browser. A session being recorded (Recordings, optional) gets
// its first viewer's relay tapped: server bytes, input that went on, keyframe requests.
//
// Several replicas: a viewer whose session's agent another replica holds (AgentLocator) is authenticated here and
// bridged to that replica's peer endpoint (internal/peer/), which serves it like a local viewer (filters,
// presence, recording there). While the replica drains (Drain), new viewers are refused and open ones handed
// over with CloseCode.reconnect.
//
// Modules (internal/vnc/): relay (one viewer, flow control both ways), tickets, inputFilter, clientFilter,
// serverCutText; (internal/peer/): bridge, endpoint, peerToken, signing, locator.
import type { AgentId, SessionId } from "@streamspace/protocol"
import { MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { Clock, Context, Deferred, Duration, Effect, Layer, Metric, Option } from "effect"
import type { Scope } from "effect"
import { HttpRouter } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import type { WebSocket } from "ws"
import { AgentHub, AgentHubError, type TunnelSink } from "./AgentHub.ts"
import { Auth, type AuthError, type User } from "./Auth.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { Drain } from "./Drain.ts"
import { bridge, PEER_SUBPROTOCOL, PEER_VNC_PATH } from "./internal/peer/bridge.ts"
import { peerRoute } from "./internal/peer/endpoint.ts"
import { AgentLocator, type ReplicaAddress } from "./internal/peer/locator.ts"
import { issuePeerToken } from "./internal/peer/peerToken.ts"
import { deriveKey } from "./internal/peer/signing.ts"
import { type End, relay, ViewerClose } from "./internal/vnc/relay.ts"
import { clipboardFilter } from "./internal/vnc/clientFilter.ts"
import { serverCutTextFilter } from "./internal/vnc/serverCutText.ts"
import { isUserInput, makeRfbClientParser } from "./internal/vnc/rfbClientMessages.ts"
import { makeInputFilter } from "./internal/vnc/inputFilter.ts"
import { makeTickets, memoryClaims, newViewerId, type Redeemed, VncProxyError, type VncTicket } from "./internal/vnc/tickets.ts"
import { makeViewerLimits } from "./internal/vnc/viewerLimits.ts"
import { errorResponse } from "./internal/httpError.ts"
import { close, closeAndWait, isUpgrade, scopedWsServer, serveUpgrade } from "./internal/ws.ts"
import { recordCommand, vncViewers } from "./Observability.ts"
import { Recordings } from "./Recordings.ts"
import { type SessionRecord, Sessions } from "./Sessions.ts"
import { type SessionAccess, Sharing } from "./Sharing.ts"
import { Store } from "./Store.ts"

export { ViewerClose } from "./internal/vnc/relay.ts"
export { VncProxyError, type VncTicket } from "./internal/vnc/tickets.ts"

export interface VncProxyShape {
  /** Issues a single-use ticket for one session, bound to the user; the session must be visible to them. */
  readonly issueTicket: (user: User, sessionId: string) => Effect.Effect<VncTicket, VncProxyError>
  /** A ticket for whoever holds a share link (already redeemed through Sharing); the viewer gets the link's access. */
  readonly issueLinkTicket: (linkId: string, sessionId: string) => Effect.Effect<VncTicket, VncProxyError>
  /** Closes every viewer of a user on this replica now (4403 with `reason`): the user was disabled. */
  readonly closeViewersOf: (userId: string, reason: string) => Effect.Effect<void>
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
  // Optional, so embedders and tests without recordings keep working.
  const recordings = Option.getOrUndefined(yield* Effect.serviceOption(Recordings))
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
  const sharing = Option.getOrUndefined(yield* Effect.serviceOption(Sharing))
  /** Each open viewer's revocation, by user (closeViewersOf). */
  const revocations = new Map<string, Set<Deferred.Deferred<string>>>()
  const closeViewersOf = (userId: string, reason: string) =>
    Effect.forEach(revocations.get(userId) ?? [], (d) => Deferred.succeed(d, reason), { discard: true })

  /** The session and the caller's access: through Sharing when it is there, else the owner's (and admins'). */
  const accessOf = (user: User, sessionId: string, linkId: string | undefined): Effect.Effect<SessionAccess, unknown> =>
    sharing === undefined
      ? Effect.map(sessions.get(user, sessionId), (session) => ({ session, access: "owner" as const }))
      : linkId !== undefined
      ? sharing.linkAccess(linkId, sessionId)
      : sharing.access(user, sessionId)

  const agentConnected = (agentId: AgentId) => Effect.map(hub.get(agentId), (a) => a._tag === "Some" && a.value.connected)

  const issueTicket = Effect.fn("VncProxy.issueTicket")(function*(user: User, sessionId: string, linkId?: string) {
    const { session } = yield* accessOf(user, sessionId, linkId).pipe(
      Effect.mapError(() => new VncProxyError({ reason: "NotFound", message: `no session "${sessionId.slice(0, 80)}"` }))
    )
    // Told at once instead of a viewer that connects and hears nothing (the viewer retries on its own).
    if (session.state === "running" && !(yield* agentConnected(session.agentId))) {
      return yield* new VncProxyError({ reason: "AgentOffline", message: `the agent running session ${session.id} (${session.agentId}) is offline; the viewer can retry` })
    }
    const refused = viewerLimits.refusal(user, session.id)
    if (refused !== undefined) return yield* new VncProxyError({ reason: "LimitExceeded", message: refused })
    return yield* tickets.issue(user, session.id, linkId)
  })
  /** Link holders have no account: they count as the user `link-<id>` for the viewer limits. */
  const issueLinkTicket = (linkId: string, sessionId: string) => issueTicket({ id: `link-${linkId}` as User["id"], role: "user", groups: [] }, sessionId, linkId)

  /** The tunnel to a session through its agent's link, with the latency and outcome of opening it recorded. */
  const openThroughHub = (agentId: AgentId, sessionId: SessionId) => (sink: TunnelSink) =>
    Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const record = (outcome: string) => Effect.flatMap(Clock.currentTimeMillis, (now) => recordCommand("vnc_connect", outcome, started, now))
      return yield* hub.openTunnel(agentId, { sessionId, window: config.vncTunnelWindow }, sink).pipe(
        // An agent that does not answer (a half-dead link, a desktop not reachable) is not waited for COMMAND_TIMEOUT.
        Effect.timeoutOrElse({
          duration: config.vncConnectTimeout,
          orElse: () => Effect.fail(new AgentHubError({ reason: "TunnelRefused", code: "timeout", message: `the agent did not open the tunnel within ${Duration.format(config.vncConnectTimeout)}` }))
        }),
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
      // Forked, not run synchronously: with replicas, noting input also NOTIFYs the others (asynchronous), and
      // runSync threw AsyncFiberError out of the socket's message handler, which crashed the process.
      const note = Effect.runForkWith(context)
      return (bytes: Uint8Array) => {
        const input = parser.push(bytes).filter(isUserInput)
        if (input.length === 0) return
        note(sessions.noteInput(sessionId, viewer))
        for (const m of input) recordings?.input(sessionId, m.raw)
      }
    })

  /** The template's clipboard switches as a filter of what the viewer sends; none when both directions are allowed. */
  const clipboardPolicy = (template: string) =>
    sessions.getTemplate(template).pipe(
      Effect.map((t) => t.clipboard),
      // The switches cannot be read (the template was deleted, the store is unavailable): blocked both ways, never open.
      Effect.orElseSucceed(() => ({ upload: false, download: false }))
    )

  /**
   * Relays a viewer to the session's tunnel through this replica's agent link: the viewer joins the presence list,
   * its input goes through the view-only and clipboard filters, and a recorded session's recorder taps it.
   */
  const relayHere = (
    ws: WebSocket,
    user: User,
    session: SessionRecord,
    viewer: string,
    who: Redeemed,
    access: SessionAccess["access"],
    track: (bytes: () => number) => Effect.Effect<void, never, Scope.Scope>
  ): Effect.Effect<End, never, Scope.Scope> =>
    Effect.gen(function*() {
      const { agentId, id: sessionId } = session
      if (sharing !== undefined) {
        yield* sharing.join({
          id: who.viewerId,
          sessionId,
          userId: who.linkId === undefined ? user.id : `link:${who.linkId}`,
          access,
          linkId: who.linkId,
          since: new Date(yield* Clock.currentTimeMillis),
          end: (code, reason) => {
            if (ws.isPaused) ws.resume()
            close(ws, code, reason)
          }
        })
      }
      const watch = yield* inputWatcher(sessionId, viewer)
      const attached = recordings === undefined ? undefined : yield* Effect.result(recordings.attach(session, viewer))
      if (attached?._tag === "Failure") return { by: "agent", code: ViewerClose.recordingFailed, reason: attached.failure.message } satisfies End
      const recorded = attached?.success
      const policy = yield* clipboardPolicy(session.template)
      const filter = policy.upload && policy.download ? undefined : clipboardFilter(policy)
      const serverFilter = filter === undefined || policy.download ? undefined : serverCutTextFilter(filter)
      return yield* relay(ws, openThroughHub(agentId, sessionId), {
        window: config.vncTunnelWindow,
        pingInterval: config.pingInterval,
        track,
        onViewerData: recorded === undefined ? watch : (bytes) => (watch(bytes), recorded.client(bytes)),
        ...(recorded === undefined ? {} : { onAgentData: recorded.server }),
        ...(sharing === undefined ? {} : { filter: makeInputFilter(() => sharing.mayInput(who.viewerId)).push }),
        ...(filter === undefined ? {} : {
          filterViewerData: (bytes: Uint8Array) => {
            const out = filter.push(bytes)
            return filter.lost() ? undefined : out
          },
          filterRefusal: "the clipboard policy cannot follow this session's RFB stream (unknown message, encoding or security type)"
        }),
        ...(serverFilter === undefined ? {} : {
          filterAgentData: (bytes: Uint8Array) => {
            const out = serverFilter.push(bytes)
            return serverFilter.lost() === undefined ? out : undefined
          }
        })
      })
    })

  /**
   * Serves one upgraded viewer socket to the end, then closes it with the reason when the agent side ended:
   * relayed to the agent's tunnel here, or bridged to the replica holding the agent (`holder`), which applies
   * the session's filters, presence and recording.
   */
  const serveViewer = (ws: WebSocket, user: User, session: SessionRecord, viewer: string, who: Redeemed, access: SessionAccess["access"], holder?: ReplicaAddress) =>
    Effect.scoped(Effect.gen(function*() {
      // What the viewer sends before the relay listens (presence, recording and policy come first) waits in the socket.
      ws.pause()
      const { id: sessionId } = session
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
      const revoked = yield* Deferred.make<string>()
      const mine = revocations.get(user.id) ?? new Set()
      revocations.set(user.id, mine.add(revoked))
      yield* Effect.addFinalizer(() => Effect.sync(() => mine.delete(revoked) && mine.size === 0 && revocations.delete(user.id)))
      const served = holder !== undefined && Option.isSome(peerKey)
        ? bridge(ws, {
          peerUrl: holder.peerUrl,
          sessionId,
          token: issuePeerToken(peerKey.value, { sessionId, user, viewerId: who.viewerId, linkId: who.linkId }, yield* Clock.currentTimeMillis),
          highWater: config.vncTunnelWindow,
          maxPayload: MAX_VIEWER_MESSAGE_BYTES,
          pingInterval: config.pingInterval,
          track
        })
        : relayHere(ws, user, session, viewer, who, access, track)
      const end = yield* Effect.raceFirst(served, Effect.map(Deferred.await(revoked), (reason) => ({ by: "agent" as const, code: ViewerClose.accessRevoked, reason }))).pipe(
        Effect.onInterrupt(() => closeAndWait(ws, ViewerClose.goingAway, "the control plane is shutting down"))
      )
      if (end.by === "viewer") return
      // Draining, the agent leaves because it was told to (the agents' `goaway` hook may run before the
      // viewers'): the viewer is handed over as the others are, to find the agent on another replica.
      const { code, reason } = end.code === ViewerClose.agentGone && drain.draining() ? { code: ViewerClose.reconnect, reason: "this replica is stopping: reconnect" } : end
      yield* closeAndWait(ws, code, reason)
      yield* Effect.logInfo("VncProxy: viewer closed").pipe(Effect.annotateLogs({ code, reason }))
    }).pipe(Effect.annotateLogs({ session_id: session.id, agent_id: session.agentId })))

  const route = (request: HttpServerRequest) =>
    Effect.gen(function*() {
      const sessionId = (yield* HttpRouter.params).id ?? ""
      if (!isUpgrade(request)) return errorResponse(426, "upgrade_required", "this endpoint only accepts WebSocket upgrades (noVNC)")
      if (drain.draining()) return yield* serveUpgrade(wss, request, reconnect)
      const ticket = new URL(request.url, "http://localhost").searchParams.get("ticket")
      const authenticated: Effect.Effect<Redeemed, AuthError | VncProxyError> = ticket !== null
        ? Effect.tap(tickets.redeem(ticket, sessionId), (r) => auth.checkEnabled(r.user))
        : Effect.map(auth.authenticate(request.headers["authorization"]), (user) => ({ user, viewerId: newViewerId(), linkId: undefined }))
      const user = yield* Effect.result(authenticated)
      if (user._tag === "Failure") {
        const e: AuthError | VncProxyError = user.failure
        return e._tag === "AuthError" && e.reason === "Forbidden" ? errorResponse(403, "forbidden", e.message) : errorResponse(401, "unauthorized", e.message)
      }
      const who = user.success
      const found = yield* accessOf(who.user, sessionId, who.linkId).pipe(Effect.option)
      const holder = found._tag === "None" ? Option.none() : yield* locator.holderOf(found.value.session.agentId)
      return yield* serveUpgrade(wss, request, (ws) => {
        if (found._tag === "None") return closeAndWait(ws, ViewerClose.notFound, `no session "${sessionId.slice(0, 60)}"`)
        const { access, session } = found.value
        return session.state !== "running"
          ? closeAndWait(ws, ViewerClose.notRunning, `session is ${session.state}, not running`)
          : serveViewer(ws, who.user, session, `${who.user.id} (viewer ${++viewerSerial})`, who, access, Option.getOrUndefined(holder))
      })
    }).pipe(Effect.withSpan("VncProxy.viewer"))

  yield* router.add("GET", VNC_PATH, route)
  yield* router.add("GET", PEER_VNC_PATH, peerRoute({
    key: peerKey,
    wss: peerWss,
    draining: drain.draining,
    lookup: (claims) => Effect.option(accessOf(claims.user, claims.sessionId, claims.linkId)),
    serve: (ws, claims, { access, session }) =>
      serveViewer(ws, claims.user, session, `${claims.user.id} (peer viewer ${++viewerSerial})`, { user: claims.user, viewerId: claims.viewerId, linkId: claims.linkId }, access)
  }))

  return VncProxy.of({
    issueTicket: (user, sessionId) => issueTicket(user, sessionId),
    issueLinkTicket,
    closeViewersOf,
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
