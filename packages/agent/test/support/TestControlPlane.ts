// A small control plane for tests: a real WebSocket server (ws) on 127.0.0.1:0 that speaks the protocol
// package. It authenticates the upgrade, answers `hello` with `welcome`, and hands each connection to the
// test, which reads decoded agent messages by type and sends frames of its own (valid or not).
import type { AnyMessage, Message, MessageType, PayloadOf } from "@streamspace/protocol"
import { AGENT_SUBPROTOCOL, decodeFromAgent, encodeText, makeMessage } from "@streamspace/protocol"
import { Deferred, Effect, Exit, Queue, Result } from "effect"
import type { Scope } from "effect"
import type { IncomingMessage } from "node:http"
import { createServer as createHttpsServer } from "node:https"
import type { Server } from "node:https"
import { WebSocketServer } from "ws"
import type { WebSocket } from "ws"

export interface CloseInfo {
  readonly code: number
  readonly reason: string
}

export interface CpConnection {
  readonly index: number
  readonly authorization: string | undefined
  readonly protocol: string
  /** Every text message received, decoded, in order. */
  readonly received: Array<AnyMessage>
  readonly binary: Queue.Queue<Uint8Array>
  /** The next message of this type (messages of other types are kept for their own `next`). */
  readonly next: <T extends MessageType>(type: T) => Effect.Effect<Message<T>>
  readonly send: <T extends MessageType>(type: T, payload: PayloadOf<T>) => Effect.Effect<string>
  readonly sendRaw: (data: string | Uint8Array) => Effect.Effect<void>
  readonly close: (code: number, reason: string) => Effect.Effect<void>
  readonly terminate: Effect.Effect<void>
  readonly closed: Deferred.Deferred<CloseInfo>
  readonly ws: WebSocket
}

export interface TestControlPlaneOptions {
  /** Tokens that get `enrollment: "approved"`. */
  readonly approved?: ReadonlyArray<string>
  /** Tokens that get `enrollment: "pending"`. */
  readonly bootstrap?: ReadonlyArray<string>
  /** Answer hello with welcome (default true). */
  readonly autoWelcome?: boolean
  /** Answer transport pings (default true); false simulates a blackholed link. */
  readonly autoPong?: boolean
  readonly draining?: boolean
  /** Announce this link window in welcome (the agent then waits for link credit). */
  readonly linkWindow?: number
  /** Serve wss:// with this certificate. */
  readonly tls?: { readonly cert: string; readonly key: string }
}

export interface TestControlPlane {
  readonly url: string
  readonly port: number
  readonly connections: Queue.Queue<CpConnection>
  readonly nextConnection: Effect.Effect<CpConnection>
  /** Upgrade attempts with their HTTP outcome, in order. */
  readonly attempts: Array<{ readonly authorization: string | undefined; readonly status: number }>
  readonly approve: (token: string) => void
  readonly revoke: (token: string) => void
}

let frameCounter = 0

export const make = (options: TestControlPlaneOptions = {}): Effect.Effect<TestControlPlane, never, Scope.Scope> =>
  Effect.gen(function*() {
    const approved = new Set(options.approved ?? ["test-token-0123456789"])
    const bootstrap = new Set(options.bootstrap ?? [])
    const connections = yield* Queue.unbounded<CpConnection>()
    const attempts: Array<{ authorization: string | undefined; status: number }> = []
    const tokenOf = (auth: string | undefined) => auth?.replace(/^Bearer /, "")
    let index = 0
    const context = yield* Effect.context<never>()
    const run = <A>(e: Effect.Effect<A>) => Effect.runSyncWith(context)(e)

    let httpsServer: Server | undefined
    const wss = yield* Effect.acquireRelease(
      Effect.callback<WebSocketServer>((resume) => {
        const https = options.tls === undefined ? undefined : createHttpsServer({ cert: options.tls.cert, key: options.tls.key })
        const server = new WebSocketServer({
          ...(https === undefined ? { host: "127.0.0.1", port: 0 } : { server: https }),
          path: "/api/v1/agent/connect",
          autoPong: options.autoPong ?? true,
          handleProtocols: (protocols) => (protocols.has(AGENT_SUBPROTOCOL) ? AGENT_SUBPROTOCOL : false),
          verifyClient: (info: { req: IncomingMessage }, cb: (ok: boolean, code?: number) => void) => {
            const auth = info.req.headers.authorization
            const token = tokenOf(auth)
            const ok = token !== undefined && (approved.has(token) || bootstrap.has(token))
            attempts.push({ authorization: auth, status: ok ? 101 : 401 })
            cb(ok, ok ? undefined : 401)
          }
        })
        if (https === undefined) server.once("listening", () => resume(Effect.succeed(server)))
        else https.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        httpsServer = https
      }),
      (server) =>
        Effect.callback<void>((resume) => {
          for (const c of server.clients) c.terminate()
          server.close(() => (httpsServer === undefined ? resume(Effect.void) : httpsServer.close(() => resume(Effect.void))))
        })
    )
    const port = ((httpsServer ?? wss).address() as { port: number }).port

    wss.on("connection", (ws: WebSocket, req: IncomingMessage) => {
      const auth = req.headers.authorization
      const token = tokenOf(auth)
      const byType = new Map<string, Queue.Queue<AnyMessage>>()
      const queueFor = (type: string) => {
        let q = byType.get(type)
        if (q === undefined) {
          q = run(Queue.unbounded<AnyMessage>())
          byType.set(type, q)
        }
        return q
      }
      const binary = run(Queue.unbounded<Uint8Array>())
      const closed = Deferred.makeUnsafe<CloseInfo>()
      const received: Array<AnyMessage> = []
      const send = <T extends MessageType>(type: T, payload: PayloadOf<T>) =>
        Effect.sync(() => {
          const id = `cp-${++frameCounter}`
          ws.send(encodeText(makeMessage(type, payload, id, new Date().toISOString()) as AnyMessage))
          return id
        })
      const conn: CpConnection = {
        index: index++,
        authorization: auth,
        protocol: ws.protocol,
        received,
        binary,
        next: (type) => Queue.take(queueFor(type)) as Effect.Effect<never>,
        send,
        sendRaw: (data) => Effect.sync(() => ws.send(data)),
        close: (code, reason) => Effect.sync(() => ws.close(code, reason)),
        terminate: Effect.sync(() => ws.terminate()),
        closed,
        ws
      }
      ws.on("message", (data, isBinary) => {
        const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
        if (isBinary) {
          Queue.offerUnsafe(binary, new Uint8Array(buf))
          return
        }
        const decoded = decodeFromAgent(buf.toString("utf8"))
        if (Result.isFailure(decoded)) {
          ws.send(encodeText(makeMessage("error", { code: decoded.failure.reason, message: decoded.failure.message }, `cp-${++frameCounter}`, new Date().toISOString())))
          return
        }
        const msg = decoded.success
        received.push(msg)
        Queue.offerUnsafe(queueFor(msg.type), msg)
        if (msg.type === "hello" && (options.autoWelcome ?? true)) {
          run(send("welcome", {
            protocol_version: "v1",
            enrollment: token !== undefined && approved.has(token) ? "approved" : "pending",
            draining: options.draining ?? false,
            ...(options.linkWindow !== undefined ? { link_window: options.linkWindow } : {})
          }))
        }
      })
      ws.on("close", (code, reason) => {
        Deferred.doneUnsafe(closed, Exit.succeed({ code, reason: reason.toString("utf8") }))
      })
      Queue.offerUnsafe(connections, conn)
    })

    return {
      url: `${options.tls === undefined ? "ws" : "wss"}://127.0.0.1:${port}`,
      port,
      connections,
      nextConnection: Queue.take(connections),
      attempts,
      approve: (t: string) => {
        approved.add(t)
      },
      revoke: (t: string) => {
        approved.delete(t)
        bootstrap.delete(t)
      }
    } satisfies TestControlPlane
  })
