// What the control plane's HTTP tests share: an app served on a loopback port, and a viewer as noVNC connects.
import { NodeHttpServer } from "@effect/platform-node"
import { Effect, Layer, type Scope } from "effect"
import { HttpRouter } from "effect/http"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { WebSocket } from "ws"

/** Serves an app layer (routes + services) on a fresh loopback port for the life of the current scope. */
export const serveApp = <A, E, R>(app: Layer.Layer<A, E, R>) =>
  Effect.gen(function*() {
    const server: Server = createServer()
    const ctx = yield* Layer.build(
      HttpRouter.serve(app, { disableLogger: true, disableListenLog: true }).pipe(
        Layer.provide(NodeHttpServer.layer(() => server, { port: 0, host: "127.0.0.1" }))
      ) as Layer.Layer<A, never, never>
    )
    const port = (server.address() as AddressInfo).port
    return { ctx, port, base: `http://127.0.0.1:${port}`, wsBase: `ws://127.0.0.1:${port}` }
  }) as Effect.Effect<{ ctx: import("effect").Context.Context<A>; port: number; base: string; wsBase: string }, never, Scope.Scope>

export interface Viewer {
  readonly ws: WebSocket
  readonly received: Array<Uint8Array>
  readonly receivedBytes: () => number
  /** Resolves with the close code and reason. */
  readonly closed: Promise<{ readonly code: number; readonly reason: string }>
  /** Resolves when open, rejects with the HTTP status when the upgrade is refused. */
  readonly opened: Promise<void>
}

/** A WebSocket viewer the way noVNC connects: `binary` subprotocol, binary frames. */
export const connectViewer = (url: string, headers: Record<string, string> = {}, protocols: Array<string> = ["binary"]): Viewer => {
  const ws = new WebSocket(url, protocols, { headers })
  const received: Array<Uint8Array> = []
  ws.on("message", (data) => received.push(new Uint8Array(data as Buffer)))
  const opened = new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve())
    ws.once("unexpected-response", (_req, res) => {
      let body = ""
      res.on("data", (c: Buffer) => (body += c.toString()))
      res.on("end", () => reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body })))
    })
    ws.once("error", (e) => reject(e))
  })
  opened.catch(() => {})
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.once("close", (code, reason) => resolve({ code, reason: reason.toString() }))
  })
  return { ws, received, receivedBytes: () => received.reduce((n, b) => n + b.length, 0), closed, opened }
}
