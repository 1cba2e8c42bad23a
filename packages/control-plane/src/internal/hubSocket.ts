// The agent socket as the hub sees it: the `ws` server that accepts agent upgrades (subprotocol and frame
// limit enforced by `ws`), and a wrapper around one accepted socket that adds what effect/socket does not
// expose: send backpressure on the bytes still queued, transport pings with pong tracking, close codes.
import { AGENT_SUBPROTOCOL, CloseCode, MAX_FRAME_BYTES } from "@streamspace/protocol"
import { Effect } from "effect"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import { type WebSocket, WebSocketServer } from "ws"

/** Close codes the hub uses on agent sockets: defined with the protocol, so the agent reads them the same way. */
export { CloseCode }

/** Stop a sender once this many bytes are queued on one agent socket and not yet handed to the kernel. */
export const SEND_HIGH_WATER_BYTES = 1024 * 1024

export const makeAgentWebSocketServer = (): WebSocketServer =>
  new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload: MAX_FRAME_BYTES,
    // The route checked that the client offers it before upgrading.
    handleProtocols: (protocols) => (protocols.has(AGENT_SUBPROTOCOL) ? AGENT_SUBPROTOCOL : false)
  })

/**
 * Completes the WebSocket handshake on a request the HTTP server handed over. Fails when the socket closes
 * first or `ws` refuses the handshake (it answers 400 itself then).
 */
export const upgrade = (wss: WebSocketServer, request: IncomingMessage): Effect.Effect<WebSocket, Error> =>
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

export interface AgentSocket {
  readonly ws: WebSocket
  readonly isOpen: () => boolean
  /** Queues a text frame; false when the socket is no longer open. */
  readonly sendText: (text: string) => boolean
  /** Queues a small binary control frame (link credit) at once, whatever is queued; false when closed. */
  readonly sendControl: (frame: Uint8Array) => boolean
  /** Sends a binary frame once the bytes queued on the socket are under the high-water mark; false when closed. */
  readonly sendBinary: (frame: Uint8Array) => Effect.Effect<boolean>
  readonly close: (code: number, reason: string) => void
  /** Sends a transport ping; false when the previous ping is still unanswered. */
  readonly ping: () => boolean
  /** Bytes queued and not yet written to the kernel. */
  readonly queuedBytes: () => number
}

export const makeAgentSocket = (ws: WebSocket, highWater: number = SEND_HIGH_WATER_BYTES): AgentSocket => {
  let queued = 0
  let waiters: Array<() => void> = []
  let awaitingPong = false
  const wake = () => {
    const ready = waiters
    waiters = []
    for (const w of ready) w()
  }
  ws.on("close", wake)
  ws.on("pong", () => {
    awaitingPong = false
  })
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

  const send = (data: string | Uint8Array, binary: boolean): boolean => {
    if (!isOpen()) return false
    const n = typeof data === "string" ? Buffer.byteLength(data) : data.byteLength
    queued += n
    ws.send(data, { binary }, () => {
      queued -= n
      if (queued <= highWater / 2) wake()
    })
    return true
  }

  return {
    ws,
    isOpen,
    sendText: (text) => send(text, false),
    sendControl: (frame) => send(frame, true),
    sendBinary: (frame) => Effect.map(belowHighWater, () => send(frame, true)),
    close: (code, reason) => {
      if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(code, reason)
    },
    ping: () => {
      if (!isOpen()) return true
      if (awaitingPong) return false
      awaitingPong = true
      ws.ping()
      return true
    },
    queuedBytes: () => queued
  }
}
