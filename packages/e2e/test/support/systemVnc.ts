// VNC viewers for system tests, through the control plane's proxy: a raw byte-level WebSocket reader (to read
// the RFB handshake as it comes off the wire) and the vnc-testserver's RfbClient over the same kind of socket.
import { RfbClient } from "@streamspace/vnc-testserver"
import { Effect } from "effect"
import { createWebSocketStream, WebSocket } from "ws"

export interface Closed {
  readonly code: number
  readonly reason: string
}

export interface RawViewer {
  readonly ws: WebSocket
  /** Exactly `n` bytes, waiting (bounded) until they arrived. */
  readonly read: (n: number, ms?: number) => Effect.Effect<Buffer>
  readonly write: (bytes: Uint8Array) => Effect.Effect<void>
  readonly closed: (ms?: number) => Effect.Effect<Closed>
}

export interface ViewerAuth {
  /** A user JWT for the Authorization header. */
  readonly token?: string
  /** The full path with `?ticket=...` (browsers cannot set headers on a WebSocket). */
  readonly path?: string
}

const viewerUrl = (cpWsUrl: string, sessionId: string, auth: ViewerAuth) => `${cpWsUrl}${auth.path ?? `/api/v1/sessions/${sessionId}/vnc`}`

const bounded = <A>(ms: number, what: string, register: (done: (a: Effect.Effect<A>) => void) => () => void) =>
  Effect.callback<A>((resume) => {
    const timer = setTimeout(() => resume(Effect.die(new Error(`timed out after ${ms} ms waiting for ${what}`))), ms)
    const unregister = register((a) => {
      clearTimeout(timer)
      resume(a)
    })
    return Effect.sync(() => {
      clearTimeout(timer)
      unregister()
    })
  })

/** Opens a viewer socket (`binary` subprotocol, as noVNC); fails with the HTTP status when the upgrade is refused. */
export const openRaw = (cpWsUrl: string, sessionId: string, auth: ViewerAuth) =>
  Effect.acquireRelease(
    Effect.callback<RawViewer, { readonly status: number; readonly body: string }>((resume) => {
      const ws = new WebSocket(viewerUrl(cpWsUrl, sessionId, auth), ["binary"], {
        headers: auth.token === undefined ? {} : { authorization: `Bearer ${auth.token}` }
      })
      let buffer = Buffer.alloc(0)
      let closed: Closed | undefined
      let listeners: Array<() => void> = []
      const notify = () => {
        for (const l of [...listeners]) l()
      }
      ws.on("message", (data, isBinary) => {
        if (isBinary) buffer = Buffer.concat([buffer, data as Buffer])
        notify()
      })
      ws.on("close", (code, reason) => {
        closed = { code, reason: reason.toString() }
        notify()
      })
      ws.on("error", () => {})
      ws.on("unexpected-response", (_req, res) => {
        let body = ""
        res.on("data", (c: Buffer) => (body += c.toString()))
        res.on("end", () => resume(Effect.fail({ status: res.statusCode ?? 0, body })))
      })
      const wait = <A>(ms: number, what: string, poll: () => A | undefined) =>
        bounded<A>(ms, what, (done) => {
          const attempt = () => {
            let a: A | undefined
            try {
              a = poll()
            } catch (e) {
              listeners = listeners.filter((l) => l !== attempt)
              done(Effect.die(e))
              return
            }
            if (a !== undefined) {
              listeners = listeners.filter((l) => l !== attempt)
              done(Effect.succeed(a))
            }
          }
          listeners.push(attempt)
          queueMicrotask(attempt)
          return () => {
            listeners = listeners.filter((l) => l !== attempt)
          }
        })
      ws.on("open", () =>
        resume(Effect.succeed<RawViewer>({
          ws,
          read: (n, ms = 10_000) =>
            wait(ms, `${n} bytes from the VNC proxy`, () => {
              if (buffer.length < n) {
                if (closed !== undefined) throw new Error(`viewer closed (${closed.code} ${closed.reason}) with ${buffer.length} of ${n} bytes`)
                return undefined
              }
              const out = buffer.subarray(0, n)
              buffer = buffer.subarray(n)
              return Buffer.from(out)
            }),
          write: (bytes) => Effect.sync(() => ws.send(bytes, { binary: true })),
          closed: (ms = 10_000) => wait(ms, "the viewer socket to close", () => closed)
        })))
      return Effect.sync(() => ws.terminate())
    }),
    (v) => Effect.sync(() => v.ws.terminate())
  )

/** An RfbClient (full RFB handshake through ServerInit) over a proxied viewer socket. */
export const openRfb = (cpWsUrl: string, sessionId: string, auth: ViewerAuth) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const ws = new WebSocket(viewerUrl(cpWsUrl, sessionId, auth), ["binary"], {
        headers: auth.token === undefined ? {} : { authorization: `Bearer ${auth.token}` }
      })
      const client = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
      return { ws, client }
    }),
    (v) => Effect.sync(() => v.client.close())
  )
