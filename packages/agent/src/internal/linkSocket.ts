// The link socket: dials the control plane's agent endpoint (bearer token, `streamspace.v1` subprotocol,
// optional HTTP CONNECT proxy and custom CA) and exposes what arrives as one queue of raw frames, the
// close, and the send lanes. Knows nothing of the protocol's messages: Connection.ts runs those over it.
import { AGENT_SUBPROTOCOL, MAX_FRAME_BYTES } from "@streamspace/protocol"
import { Cause, Deferred, Duration, Effect, Exit, Option, Queue, Redacted, Schema } from "effect"
import type { Scope } from "effect"
import WebSocket from "ws"
import { ConnectProxyAgent } from "./proxy.ts"
import { SendLanes } from "./sendLanes.ts"

export class ConnectionError extends Schema.TaggedError<ConnectionError>()("ConnectionError", {
  reason: Schema.Literals(["NotConnected", "Closed", "Unauthorized", "Rejected", "AlreadyConnected", "Transport"]),
  message: Schema.String
}) {}

export interface CloseInfo {
  readonly code: number
  readonly reason: string
}

export const describeClose = (c: CloseInfo) => `code ${c.code}${c.reason === "" ? "" : ` (${c.reason})`}`

export interface LinkEndpoint {
  /** The agent endpoint, ws:// or wss://. */
  readonly url: string
  /** Extra trusted CA certificates (CONTROL_PLANE_CA_FILE). */
  readonly ca: Buffer | undefined
  /** The HTTP CONNECT proxy to tunnel through, if one applies. */
  readonly proxy: URL | undefined
  /** A dial whose upgrade is not answered by then is abandoned. */
  readonly timeout: Duration.Duration
}

/** One open WebSocket to the control plane and what its read side has received. */
export interface LinkSocket {
  readonly ws: WebSocket
  /** Text and binary frames in arrival order; ends when the socket closes. */
  readonly frames: Queue.Queue<string | Uint8Array, Cause.Done>
  readonly closed: Deferred.Deferred<CloseInfo>
  readonly lanes: SendLanes
}

const open = (endpoint: LinkEndpoint, token: Option.Option<Redacted.Redacted<string>>, frames: Queue.Queue<string | Uint8Array, Cause.Done>) =>
  Effect.callback<LinkSocket, ConnectionError>((resume) => {
    const headers: Record<string, string> = {}
    if (Option.isSome(token)) headers.authorization = `Bearer ${Redacted.value(token.value)}`
    const { ca, proxy } = endpoint
    let ws: WebSocket
    try {
      ws = new WebSocket(endpoint.url, [AGENT_SUBPROTOCOL], {
        headers,
        maxPayload: MAX_FRAME_BYTES,
        perMessageDeflate: false,
        followRedirects: false,
        // RFC 6455 masking protects intermediaries from scripts running in browsers; this client is
        // not a browser, and without the native bufferutil addon ws masks (and the control plane
        // unmasks) every tunnel byte in JavaScript. An all-zero key makes both a no-op.
        generateMask: (mask: Buffer) => void mask.fill(0),
        ...(ca !== undefined ? { ca } : {}),
        ...(proxy !== undefined ? { agent: new ConnectProxyAgent(proxy, endpoint.url.startsWith("wss:"), ca !== undefined ? { ca } : {}) } : {})
      })
    } catch (e) {
      resume(Effect.fail(new ConnectionError({ reason: "Transport", message: (e as Error).message })))
      return
    }
    ws.binaryType = "nodebuffer"
    const link: LinkSocket = {
      ws,
      frames,
      closed: Deferred.makeUnsafe<CloseInfo>(),
      lanes: new SendLanes({
        isOpen: () => ws.readyState === WebSocket.OPEN,
        bufferedAmount: () => ws.bufferedAmount,
        write: (data, written) =>
          ws.send(data, (err) => {
            if (err === undefined || err === null) written()
          })
      })
    }
    let opened = false
    ws.on("message", (data, isBinary) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
      Queue.offerUnsafe(frames, isBinary ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) : buf.toString("utf8"))
    })
    ws.on("close", (code, reason) => {
      Deferred.doneUnsafe(link.closed, Exit.succeed({ code, reason: reason.toString("utf8") }))
      Queue.endUnsafe(frames)
      link.lanes.close()
    })
    ws.once("open", () => {
      opened = true
      if (ws.protocol !== AGENT_SUBPROTOCOL) {
        ws.close(1002, "subprotocol not negotiated")
        resume(Effect.fail(new ConnectionError({ reason: "Rejected", message: `control plane did not accept subprotocol ${AGENT_SUBPROTOCOL}` })))
        return
      }
      resume(Effect.succeed(link))
    })
    ws.once("unexpected-response", (req, res) => {
      const code = res.statusCode ?? 0
      res.resume()
      req.destroy()
      resume(Effect.fail(
        code === 401 || code === 403
          ? new ConnectionError({ reason: "Unauthorized", message: `control plane refused the agent credential (HTTP ${code})` })
          : new ConnectionError({ reason: "Rejected", message: `control plane answered the upgrade with HTTP ${code}` })
      ))
    })
    ws.on("error", (e) => {
      if (!opened) resume(Effect.fail(new ConnectionError({ reason: "Transport", message: e.message })))
    })
    // An interrupted dial (its timeout) drops the half-open socket.
    return Effect.sync(() => ws.terminate())
  })

/** Dials with `token`; the socket is terminated when the scope closes. Fails when the upgrade is refused or not answered in time. */
export const dialLink = (endpoint: LinkEndpoint, token: Option.Option<Redacted.Redacted<string>>): Effect.Effect<LinkSocket, ConnectionError, Scope.Scope> =>
  Effect.flatMap(Queue.unbounded<string | Uint8Array, Cause.Done>(), (frames) =>
    Effect.acquireRelease(open(endpoint, token, frames), (l) => Effect.sync(() => l.ws.terminate()), { interruptible: true })).pipe(
      Effect.timeoutOrElse({
        duration: endpoint.timeout,
        orElse: () => Effect.fail(new ConnectionError({ reason: "Transport", message: `no answer to the upgrade within ${Duration.format(endpoint.timeout)}` }))
      })
    )
