// The replica-to-replica VNC endpoint, `GET /internal/v1/peer/sessions/:id/vnc`: another replica (B) that has
// authenticated a viewer asks this one (A, which holds the session's agent) to relay it. The only credential
// read is a peer token (peerToken.ts) signed with CLUSTER_SECRET; without CLUSTER_SECRET the endpoint does not
// exist (404). The socket is then served exactly as a local viewer's (`serve`: the relay to the agent's tunnel).
import type { AgentId, SessionId } from "@streamspace/protocol"
import { Clock, Effect, type Option } from "effect"
import { HttpRouter } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import type { WebSocket, WebSocketServer } from "ws"
import { errorResponse } from "../httpError.ts"
import { ViewerClose } from "../vnc/relay.ts"
import { closeAndWait, isUpgrade, remoteAddress, serveUpgrade } from "../ws.ts"
import { checkPeerToken, PEER_HEADER, type PeerClaims } from "./peerToken.ts"

export interface PeerSession {
  readonly id: SessionId
  readonly agentId: AgentId
  readonly state: string
}

/** `S`: what `lookup` found (the session, and the viewer's access to it). */
export interface PeerEndpointDeps<S extends { readonly session: PeerSession }> {
  /** The peer-token key; none without CLUSTER_SECRET. */
  readonly key: Option.Option<Buffer>
  readonly wss: WebSocketServer
  readonly draining: () => boolean
  readonly lookup: (claims: PeerClaims) => Effect.Effect<Option.Option<S>>
  readonly serve: (ws: WebSocket, claims: PeerClaims, found: S) => Effect.Effect<void>
}

export const peerRoute = <S extends { readonly session: PeerSession }>(deps: PeerEndpointDeps<S>) => (request: HttpServerRequest) =>
  Effect.gen(function*() {
    if (deps.key._tag === "None") return errorResponse(404, "not_found", "no replica-to-replica endpoint: CLUSTER_SECRET is not set")
    const sessionId = (yield* HttpRouter.params).id ?? ""
    if (!isUpgrade(request)) return errorResponse(426, "upgrade_required", "this endpoint only accepts WebSocket upgrades")
    const header = request.headers[PEER_HEADER]
    const claims = checkPeerToken(deps.key.value, header, sessionId, yield* Clock.currentTimeMillis)
    if ("refused" in claims) {
      yield* Effect.logWarning(`VncProxy: refused a peer relay from ${remoteAddress(request)}: ${claims.refused}`)
      return errorResponse(401, "unauthorized", claims.refused)
    }
    // Draining: the agents are moving away; B tells its viewer to reconnect.
    if (deps.draining()) return errorResponse(503, "draining", "this replica is stopping")
    const found = yield* deps.lookup(claims)
    return yield* serveUpgrade(deps.wss, request, (ws) =>
      found._tag === "None"
        ? closeAndWait(ws, ViewerClose.notFound, `no session "${sessionId.slice(0, 60)}"`)
        : found.value.session.state !== "running"
        ? closeAndWait(ws, ViewerClose.notRunning, `session is ${found.value.session.state}, not running`)
        : deps.serve(ws, claims, found.value))
  }).pipe(Effect.withSpan("VncProxy.peer"))
