// VncProxy: `GET /api/v1/sessions/:id/vnc` upgrades a browser (noVNC, `binary` subprotocol) to a WebSocket
// and joins it to a tunnel through the session's agent. Authorised by the user's JWT or by a short-lived,
// single-use ticket from `POST /api/v1/sessions/:id/vnc-ticket` (browsers cannot set headers on WebSockets).
//
// Per viewer: a fresh tunnel id, a TunnelSink registered with the hub, `vnc_connect` (granting the agent
// VNC_TUNNEL_WINDOW bytes of credit) awaited, then bytes both ways. Viewer -> agent spends the credit the agent
// granted and stops reading the viewer's socket at zero; agent -> viewer bytes are credited back to the agent
// only once the viewer's socket has taken them, so a viewer that never reads pins at most one window.
// Either end closing tears down both: `vnc_disconnect` when the viewer leaves; the viewer is closed with a
// code and reason when the agent sends `vnc_closed` or goes away. Several viewers may watch one session.
import type { AgentId, CommandId, SessionId, TunnelId } from "@streamspace/protocol"
import { creditThreshold, encodeDataFrames, encodeWindow, MAX_TUNNEL_ID } from "@streamspace/protocol"
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, FiberSet, Latch, Layer, Metric, Queue, Schema, Stream } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import { randomBytes } from "node:crypto"
import type { IncomingMessage } from "node:http"
import type { RawData, WebSocket } from "ws"
import { AgentHub, type TunnelSink } from "./AgentHub.ts"
import { Auth, type AuthError, type User } from "./Auth.ts"
import { CommandDispatcher } from "./CommandDispatcher.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { closeAndWait, closeReason, makeViewerWebSocketServer, upgradeViewer, ViewerClose } from "./internal/vncSocket.ts"
import { recordCommand, vncBytesTotal, vncViewers } from "./Observability.ts"
import { Sessions } from "./Sessions.ts"

export class VncProxyError extends Schema.TaggedError<VncProxyError>()("VncProxyError", {
  reason: Schema.Literals(["NotFound", "InvalidTicket"]),
  message: Schema.String
}) {}

export interface VncTicket {
  readonly ticket: string
  readonly sessionId: SessionId
  readonly expiresAt: Date
}

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

const jsonError = (status: number, code: string, message: string) => HttpServerResponse.jsonUnsafe({ error: { code, message } }, { status })

const toBytes = (data: RawData): Uint8Array =>
  Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? new Uint8Array(data) : data

/** How a viewer connection ended, which decides what is left to tell the agent. */
type End =
  | { readonly by: "viewer" }
  | { readonly by: "agent"; readonly code: number; readonly reason: string }

export const make = Effect.gen(function*() {
  const config = yield* ControlPlaneConfig
  const hub = yield* AgentHub
  const dispatcher = yield* CommandDispatcher
  const sessions = yield* Sessions
  const auth = yield* Auth
  const router = yield* HttpRouter.HttpRouter
  const wss = makeViewerWebSocketServer()
  yield* Effect.addFinalizer(() => Effect.sync(() => wss.close()))
  const background = yield* FiberSet.make()

  const tickets = new Map<string, { readonly user: User; readonly sessionId: SessionId; readonly expiresAtMs: number }>()
  const inUse = new Set<number>()
  let nextTunnel = 1
  let viewerCount = 0
  /** Open viewers by `${agentId}/${tunnelId}`, so `vnc_closed` can end the right one. */
  const open = new Map<string, (end: End) => void>()
  /** What each open relay holds in memory (see `buffered`). */
  const held = new Map<string, () => number>()

  const allocateTunnel = (): TunnelId => {
    while (inUse.has(nextTunnel)) nextTunnel = nextTunnel >= MAX_TUNNEL_ID ? 1 : nextTunnel + 1
    const id = nextTunnel
    inUse.add(id)
    nextTunnel = nextTunnel >= MAX_TUNNEL_ID ? 1 : nextTunnel + 1
    return id as TunnelId
  }

  const issueTicket = Effect.fn("VncProxy.issueTicket")(function*(user: User, sessionId: string) {
    const session = yield* sessions.get(user, sessionId).pipe(
      Effect.mapError(() => new VncProxyError({ reason: "NotFound", message: `no session "${sessionId.slice(0, 80)}"` }))
    )
    const now = yield* Clock.currentTimeMillis
    for (const [t, v] of tickets) if (v.expiresAtMs <= now) tickets.delete(t)
    const ticket = randomBytes(24).toString("base64url")
    const ttlMs = Math.max(1, Duration.toMillis(config.vncTicketTtl))
    tickets.set(ticket, { user, sessionId: session.id, expiresAtMs: now + ttlMs })
    return { ticket, sessionId: session.id, expiresAt: new Date(now + ttlMs) }
  })

  /** Takes a ticket out of circulation (single use) and checks it. */
  const redeem = Effect.fnUntraced(function*(ticket: string, sessionId: string) {
    const entry = tickets.get(ticket)
    tickets.delete(ticket)
    if (entry === undefined) return yield* new VncProxyError({ reason: "InvalidTicket", message: "VNC ticket is unknown or was already used" })
    if (entry.expiresAtMs <= (yield* Clock.currentTimeMillis)) return yield* new VncProxyError({ reason: "InvalidTicket", message: "VNC ticket has expired" })
    if (entry.sessionId !== sessionId) return yield* new VncProxyError({ reason: "InvalidTicket", message: "VNC ticket was issued for another session" })
    return entry.user
  })

  // The agent's `vnc_closed` ends the viewer of that tunnel.
  yield* hub.events.pipe(
    Stream.runForEach((event) =>
      Effect.sync(() => {
        if (event._tag !== "Message" || event.message.type !== "vnc_closed") return
        const p = event.message.payload
        const end = open.get(`${event.agentId}/${p.tunnel_id}`)
        if (end === undefined) return
        const normal = p.reason === "upstream_closed" || p.reason === "disconnect"
        end({
          by: "agent",
          code: normal ? ViewerClose.normal : ViewerClose.tunnelClosed,
          reason: `tunnel closed by the agent: ${p.reason}${p.message === undefined ? "" : ` (${p.message})`}`
        })
      })
    ),
    Effect.catchCause((cause) => Effect.logError("VncProxy: event loop stopped", cause)),
    Effect.forkScoped({ startImmediately: true })
  )

  /** Relays one viewer until either side ends; returns how it ended. */
  const relay = Effect.fnUntraced(function*(ws: WebSocket, agentId: AgentId, sessionId: SessionId) {
    const tunnelId = allocateTunnel()
    const key = `${agentId}/${tunnelId}`
    const window = config.vncTunnelWindow
    const threshold = creditThreshold(window)
    const ended = yield* Deferred.make<End>()
    const finish = (end: End) => void Deferred.doneUnsafe(ended, Exit.succeed(end))
    yield* Effect.addFinalizer(() => Effect.sync(() => {
      open.delete(key)
      held.delete(key)
      inUse.delete(tunnelId)
    }))
    open.set(key, finish)
    yield* Effect.annotateCurrentSpan({ session_id: sessionId, agent_id: agentId, tunnel_id: tunnelId })

    // ---- viewer -> agent: spend the agent's credit; stop reading the viewer at zero.
    let credit = 0
    let queuedBytes = 0
    let paused = false
    const inbound = yield* Queue.unbounded<Uint8Array, Cause.Done>()
    const creditLatch = yield* Latch.make(false)
    // Read the viewer while there is credit for what it sends; out of credit, stop once a message is waiting
    // (still reading an idle viewer keeps its close and pongs visible).
    const flow = () => {
      const pause = (credit === 0 && queuedBytes > 0) || queuedBytes > window
      if (pause && !paused) ws.pause()
      else if (!pause && paused) ws.resume()
      paused = pause
    }
    ws.on("message", (data, isBinary) => {
      if (!isBinary) {
        finish({ by: "agent", code: ViewerClose.unsupportedData, reason: "RFB travels in binary frames; text frames are not accepted" })
        return
      }
      const bytes = toBytes(data)
      queuedBytes += bytes.length
      Queue.offerUnsafe(inbound, bytes)
      flow()
    })
    ws.on("close", () => finish({ by: "viewer" }))
    ws.on("error", () => finish({ by: "viewer" }))
    flow()

    // ---- agent -> viewer: credit goes back once the viewer's socket has taken the bytes.
    let inFlight = 0
    held.set(key, () => inFlight + queuedBytes)
    let toReturn = 0
    const returns = yield* Queue.unbounded<number>()
    const sink: TunnelSink = {
      onFrame: (frame) =>
        Effect.sync(() => {
          if (frame.kind === "window") {
            credit += frame.credit
            creditLatch.openUnsafe()
            flow()
            return
          }
          const n = frame.payload.length
          if (inFlight + n > window) {
            finish({ by: "agent", code: ViewerClose.tunnelFailed, reason: "the agent sent more than the credit window allows" })
            return
          }
          inFlight += n
          ws.send(frame.payload, { binary: true }, (err) => {
            inFlight -= n
            if (err !== undefined && err !== null) return
            toReturn += n
            if (toReturn >= threshold) {
              Queue.offerUnsafe(returns, toReturn)
              toReturn = 0
            }
          })
        }).pipe(Effect.andThen(frame.kind === "data" ? Metric.update(Metric.withAttributes(vncBytesTotal, { direction: "to_viewer" }), frame.payload.length) : Effect.void)),
      onAgentGone: Effect.sync(() => finish({ by: "agent", code: ViewerClose.agentGone, reason: "the agent running this session disconnected" }))
    }
    yield* hub.registerTunnel(agentId, tunnelId, sink)

    const sendCredit = Effect.gen(function*() {
      while (true) {
        const n = yield* Queue.take(returns)
        yield* hub.sendBinary(agentId, encodeWindow(tunnelId, n))
      }
    })

    const pumpToAgent = Effect.gen(function*() {
      while (true) {
        const chunk = yield* Queue.take(inbound)
        let off = 0
        while (off < chunk.length) {
          if (credit === 0) {
            creditLatch.closeUnsafe()
            flow()
            yield* creditLatch.await
            continue
          }
          const n = Math.min(credit, chunk.length - off)
          credit -= n
          for (const frame of encodeDataFrames(tunnelId, chunk.subarray(off, off + n))) yield* hub.sendBinary(agentId, frame)
          off += n
          yield* Metric.update(Metric.withAttributes(vncBytesTotal, { direction: "to_agent" }), n)
        }
        queuedBytes -= chunk.length
        flow()
      }
    })

    // ---- transport pings keep idle viewers alive through proxies and find dead ones. A viewer paused for flow
    // control is not read, so its pongs cannot be seen: it is not judged then.
    let answered = true
    ws.on("pong", () => {
      answered = true
    })
    const pinger = Effect.gen(function*() {
      while (ws.readyState === ws.OPEN) {
        yield* Effect.sleep(config.pingInterval)
        if (!answered && !paused) {
          finish({ by: "viewer" })
          ws.terminate()
          return
        }
        answered = paused
        ws.ping()
      }
    })

    // ---- open the tunnel
    const started = yield* Clock.currentTimeMillis
    const connect = yield* dispatcher.dispatch(agentId, { action: "vnc_connect", args: { session_id: sessionId, tunnel_id: tunnelId, window } }, { sessionId })
    const outcome = yield* Effect.raceFirst(
      dispatcher.await(connect.id).pipe(Effect.map((o) => ({ _tag: "Outcome" as const, o }))),
      Deferred.await(ended).pipe(Effect.map((end) => ({ _tag: "Ended" as const, end })))
    )
    if (outcome._tag === "Ended") return { end: outcome.end, tunnelId, connected: false, pending: connect.id }
    yield* recordCommand("vnc_connect", outcome.o, started, yield* Clock.currentTimeMillis)
    if (outcome.o._tag === "Failed") {
      const e = outcome.o.error
      const code = e.code === "session_not_running" || e.code === "session_not_found" ? ViewerClose.notRunning : ViewerClose.tunnelFailed
      return { end: { by: "agent" as const, code, reason: `could not open the tunnel: ${e.code}: ${e.message}` }, tunnelId, connected: false, pending: undefined }
    }
    if (outcome.o.result.action === "vnc_connect") {
      credit += outcome.o.result.window
      creditLatch.openUnsafe()
      flow()
    }
    yield* Effect.logInfo("VncProxy: viewer connected").pipe(Effect.annotateLogs({ session_id: sessionId, agent_id: agentId, tunnel_id: tunnelId }))
    yield* Effect.forkScoped(pumpToAgent.pipe(Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.sync(() => finish({ by: "agent", code: ViewerClose.agentGone, reason: "the agent is not reachable" }))
    )))
    yield* Effect.forkScoped(sendCredit.pipe(Effect.ignore))
    yield* Effect.forkScoped(pinger)
    return { end: yield* Deferred.await(ended), tunnelId, connected: true, pending: undefined }
  })

  /** Serves one upgraded viewer socket to the end, then closes both ends as needed. */
  const serveViewer = (ws: WebSocket, agentId: AgentId, sessionId: SessionId) =>
    Effect.scoped(Effect.gen(function*() {
      viewerCount++
      yield* Metric.modify(vncViewers, 1)
      yield* Effect.addFinalizer(() => Effect.andThen(Effect.sync(() => void viewerCount--), Metric.modify(vncViewers, -1)))
      const result = yield* relay(ws, agentId, sessionId).pipe(
        Effect.onInterrupt(() => closeAndWait(ws, ViewerClose.goingAway, "the control plane is shutting down"))
      )
      if (result.end.by === "viewer") {
        if (result.connected) yield* disconnect(agentId, result.tunnelId)
        else if (result.pending !== undefined) yield* disconnectAfterConnect(agentId, result.tunnelId, result.pending)
        return
      }
      // The agent side ended (or refused): tell the agent to drop its end too unless it already did.
      yield* closeAndWait(ws, result.end.code, result.end.reason)
      if (result.end.code === ViewerClose.tunnelFailed || result.end.code === ViewerClose.unsupportedData) {
        yield* disconnect(agentId, result.tunnelId)
      }
      yield* Effect.logInfo("VncProxy: viewer closed").pipe(Effect.annotateLogs({ session_id: sessionId, agent_id: agentId, code: result.end.code, reason: result.end.reason }))
    }))

  const disconnect = (agentId: AgentId, tunnelId: TunnelId) =>
    dispatcher.dispatch(agentId, { action: "vnc_disconnect", args: { tunnel_id: tunnelId } }).pipe(
      Effect.asVoid,
      Effect.catchCause((cause) => Effect.logWarning("VncProxy: could not send vnc_disconnect", cause).pipe(Effect.annotateLogs({ tunnel_id: tunnelId })))
    )
  /** The viewer left before vnc_connect finished: the agent may still open the tunnel, so close it afterwards. */
  const disconnectAfterConnect = (agentId: AgentId, tunnelId: TunnelId, connect: CommandId) =>
    FiberSet.run(
      background,
      dispatcher.await(connect).pipe(
        Effect.flatMap((o) => (o._tag === "Completed" ? disconnect(agentId, tunnelId) : Effect.void)),
        Effect.ignore
      )
    )

  const route = (request: HttpServerRequest) =>
    Effect.gen(function*() {
      const { id } = yield* HttpRouter.params
      const sessionId = id ?? ""
      if (request.headers["upgrade"]?.toLowerCase() !== "websocket") {
        return jsonError(426, "upgrade_required", "this endpoint only accepts WebSocket upgrades (noVNC)")
      }
      const incoming = request.source as IncomingMessage
      if (typeof incoming !== "object" || incoming === null || !("socket" in incoming)) {
        return jsonError(500, "internal", "VNC viewers need the Node HTTP server")
      }
      const url = new URL(request.url, "http://localhost")
      const ticket = url.searchParams.get("ticket")
      const authenticated: Effect.Effect<User, AuthError | VncProxyError> = ticket !== null
        ? redeem(ticket, sessionId)
        : auth.authenticate(request.headers["authorization"])
      const user = yield* Effect.result(authenticated)
      if (user._tag === "Failure") {
        const e: AuthError | VncProxyError = user.failure
        return e._tag === "AuthError" && e.reason === "Forbidden"
          ? jsonError(403, "forbidden", e.message)
          : jsonError(401, "unauthorized", e.message)
      }
      const session = yield* sessions.get(user.success, sessionId).pipe(Effect.option)
      const ws = yield* upgradeViewer(wss, incoming).pipe(Effect.option)
      if (ws._tag === "None") return HttpServerResponse.empty()
      if (session._tag === "None") {
        yield* closeAndWait(ws.value, ViewerClose.notFound, `no session "${sessionId.slice(0, 60)}"`)
      } else if (session.value.state !== "running") {
        yield* closeAndWait(ws.value, ViewerClose.notRunning, `session is ${session.value.state}, not running`)
      } else {
        yield* serveViewer(ws.value, session.value.agentId, session.value.id)
      }
      // Keep the HTTP layer from writing a response onto the finished WebSocket connection.
      incoming.socket.destroy()
      return HttpServerResponse.empty()
    }).pipe(Effect.withSpan("VncProxy.viewer"))

  yield* router.add("GET", VNC_PATH, route)

  return VncProxy.of({
    issueTicket,
    viewers: Effect.sync(() => viewerCount),
    buffered: Effect.sync(() => {
      let total = 0
      let max = 0
      for (const bytes of held.values()) {
        const n = bytes()
        total += n
        max = Math.max(max, n)
      }
      return { total, max }
    })
  })
})

export class VncProxy extends Context.Service<VncProxy, VncProxyShape>()("control-plane/VncProxy") {
  /** Registers the viewer route on the HttpRouter; needs AgentHub, CommandDispatcher, Sessions, Auth and config. */
  static readonly layer = Layer.effect(VncProxy, make)
}
