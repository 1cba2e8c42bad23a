// The one WebSocket plumbing of the control plane, used by the agent link (AgentHub) and the viewers (VncProxy):
//
// * `makeWsServer` + `serveUpgrade`: a `ws` server in noServer mode per route, fed the Node request the
//   HttpRouter route hands over. effect/http's upgrade shares one `ws` server between all routes and exposes
//   neither the send callback (when a peer has taken bytes), the buffered amount, transport pings, a per-route
//   subprotocol nor a per-route frame limit, which both sockets need.
// * `makeSendQueue`: sends with a high-water mark on the bytes `ws` still holds for one socket.
// * `keepAlive`: transport pings with pong tracking, which finds dead and blackholed peers.
// * `closeReason`, `closeAndWait`: close codes with a reason that fits, and a bounded wait for the handshake.
import { type Duration, Effect } from "effect"
import { HttpServerResponse } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { type WebSocket, WebSocketServer } from "ws"
import { errorResponse } from "./httpError.ts"

/** A `ws` server for one route: it answers `subprotocol` when offered and refuses frames over `maxPayload`. */
export const makeWsServer = (options: { readonly subprotocol: string; readonly maxPayload: number }): WebSocketServer =>
  new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: options.maxPayload,
    // Offered and known: answer it. Anything else: answer none (the route decides whether that is an error).
    handleProtocols: (protocols) => (protocols.has(options.subprotocol) ? options.subprotocol : false)
  })

/** Closes the server with the scope. */
export const scopedWsServer = (options: { readonly subprotocol: string; readonly maxPayload: number }) =>
  Effect.acquireRelease(Effect.sync(() => makeWsServer(options)), (wss) => Effect.sync(() => wss.close()))

/** The Node request under an effect/http request, when the Node HTTP server serves it. */
const nodeRequestOf = (request: HttpServerRequest): IncomingMessage | undefined => {
  const source = request.source as unknown
  return typeof source === "object" && source !== null && "socket" in source ? source as IncomingMessage : undefined
}

/** Whether the request asks for a WebSocket upgrade. */
export const isUpgrade = (request: HttpServerRequest) => request.headers["upgrade"]?.toLowerCase() === "websocket"

/** Completes the handshake on a request the HTTP server handed over; fails when the socket closes first. */
const upgrade = (wss: WebSocketServer, request: IncomingMessage): Effect.Effect<WebSocket, Error> =>
  Effect.callback<WebSocket, Error>((resume) => {
    const socket = request.socket as Duplex
    const onClose = () => resume(Effect.fail(new Error("the socket closed before the upgrade")))
    if (socket.destroyed) return onClose()
    socket.once("close", onClose)
    // WebSocket clients send nothing before the 101, so there are no buffered head bytes to pass on.
    wss.handleUpgrade(request, socket, Buffer.alloc(0), (ws) => {
      socket.off("close", onClose)
      resume(Effect.succeed(ws))
    })
  })

/**
 * Upgrades the request and runs `serve` on the socket until it is done. Answers 500 when the request does not
 * come from the Node HTTP server; a handshake `ws` refuses (it answers 400 itself) or a client that leaves
 * first serves nothing.
 */
export const serveUpgrade = <E, R>(
  wss: WebSocketServer,
  request: HttpServerRequest,
  serve: (ws: WebSocket) => Effect.Effect<void, E, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, E, R> =>
  Effect.gen(function*() {
    const incoming = nodeRequestOf(request)
    if (incoming === undefined) return errorResponse(500, "internal", "WebSocket routes need the Node HTTP server")
    const ws = yield* Effect.option(upgrade(wss, incoming))
    if (ws._tag === "Some") yield* serve(ws.value)
    // Keep the HTTP layer from writing a response onto the finished WebSocket connection.
    incoming.socket.destroy()
    return HttpServerResponse.empty()
  })

/** The client address of an upgrade request, for log lines. */
export const remoteAddress = (request: HttpServerRequest): string => nodeRequestOf(request)?.socket?.remoteAddress ?? "?"

export interface SendQueue {
  /** Queues a frame at once, whatever is queued (control frames, small text); false once the socket is not open. */
  readonly sendNow: (data: string | Uint8Array) => boolean
  /** Queues a binary frame once the bytes held for the socket are under the high-water mark; false once closed. */
  readonly send: (frame: Uint8Array) => Effect.Effect<boolean>
  /** Bytes queued and not yet written to the kernel. */
  readonly queuedBytes: () => number
}

/** Sends on `ws` with a high-water mark: `send` waits while more than `highWater` bytes are queued. */
export const makeSendQueue = (ws: WebSocket, highWater: number): SendQueue => {
  let queued = 0
  let waiters: Array<() => void> = []
  const wake = () => {
    const ready = waiters
    waiters = []
    for (const w of ready) w()
  }
  ws.on("close", wake)
  const isOpen = () => ws.readyState === ws.OPEN
  const belowHighWater: Effect.Effect<void> = Effect.suspend(() =>
    queued <= highWater || !isOpen()
      ? Effect.void
      : Effect.callback<void>((resume) => {
        const waiter = () => resume(Effect.void)
        waiters.push(waiter)
        return Effect.sync(() => {
          waiters = waiters.filter((w) => w !== waiter)
        })
      }).pipe(Effect.andThen(belowHighWater))
  )
  const sendNow = (data: string | Uint8Array): boolean => {
    if (!isOpen()) return false
    const n = typeof data === "string" ? Buffer.byteLength(data) : data.byteLength
    queued += n
    ws.send(data, { binary: typeof data !== "string" }, () => {
      queued -= n
      if (queued <= highWater / 2) wake()
    })
    return true
  }
  return { sendNow, send: (frame) => Effect.map(belowHighWater, () => sendNow(frame)), queuedBytes: () => queued }
}

/**
 * Pings `ws` every `interval` and finishes when a ping went a whole interval without a pong (the peer is dead
 * or the path blackholed), or when the socket is no longer open. `excused` skips the verdict for a round: a
 * peer whose socket is paused for flow control is not read, so its pongs cannot be seen. Returns true when the
 * peer was found dead (the caller terminates the socket).
 */
export const keepAlive = (ws: WebSocket, interval: Duration.Input, excused: () => boolean = () => false): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    let answered = true
    const onPong = () => {
      answered = true
    }
    ws.on("pong", onPong)
    return Effect.gen(function*() {
      while (ws.readyState === ws.OPEN) {
        yield* Effect.sleep(interval)
        if (ws.readyState !== ws.OPEN) return false
        if (!answered && !excused()) return true
        answered = excused()
        ws.ping()
      }
      return false
    }).pipe(Effect.ensuring(Effect.sync(() => ws.off("pong", onPong))))
  })

/** A close reason fits in 123 bytes of UTF-8. */
export const closeReason = (text: string): string => {
  let out = text
  while (Buffer.byteLength(out) > 123) out = out.slice(0, -1)
  return out
}

/** Closes at once (no wait) with a code and a reason that fits. */
export const close = (ws: WebSocket, code: number, reason: string): void => {
  if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, closeReason(reason))
}

/** Closes and waits (bounded) until the close handshake has finished, so the close frame reaches the peer. */
export const closeAndWait = (ws: WebSocket, code: number, reason: string, timeout: Duration.Input = "2 seconds"): Effect.Effect<void> =>
  Effect.callback<void>((resume) => {
    if (ws.readyState === ws.CLOSED) return resume(Effect.void)
    ws.once("close", () => resume(Effect.void))
    // A socket paused for flow control must be read again, or the peer's close reply is never seen.
    if (ws.isPaused) ws.resume()
    close(ws, code, reason)
  }).pipe(
    Effect.timeoutOption(timeout),
    Effect.flatMap((done) => (done._tag === "None" ? Effect.sync(() => ws.terminate()) : Effect.void))
  )
