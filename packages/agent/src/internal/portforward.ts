// One port-forward stream to a pod over a `v4.channel.k8s.io` WebSocket (k8s-api.md §3): channel 0
// carries data both ways, channel 1 error text from the kubelet; the first frame on each channel is the
// 2-byte port preamble. Reading is pull-based: when the reader stops pulling, the buffer fills, the
// WebSocket is paused, and TCP pushes back on the kubelet, so an out-of-credit tunnel stalls only itself.
import { Effect, Scope } from "effect"
import WebSocket from "ws"

export interface PortForwardEndpoint {
  readonly url: string
  /** Auth headers and TLS agent from the kubeconfig. */
  readonly options: WebSocket.ClientOptions
}

export type PortForwardRead =
  | { readonly _tag: "Data"; readonly bytes: Uint8Array }
  | { readonly _tag: "End"; readonly error: string | undefined }

export interface PortForwardStream {
  /** Up to `max` bytes, waiting while none are buffered; `End` once the stream is over and drained. */
  readonly read: (max: number) => Effect.Effect<PortForwardRead>
  /** Sends bytes towards the pod; completes when they are handed to the socket. Fails once closed. */
  readonly write: (bytes: Uint8Array) => Effect.Effect<void, PortForwardClosed>
  /** Bytes received and not yet read. */
  readonly buffered: () => number
  /**
   * Completes with the error-channel text once there is some (the forward failed; the pod side may be gone),
   * at once, whatever is still buffered or however long the reader waits for credit.
   */
  readonly failure: Effect.Effect<string>
}

export class PortForwardClosed {
  readonly _tag = "PortForwardClosed"
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

/** Why the upgrade was refused: the HTTP status and the Status message when the server sent one. */
export interface PortForwardRefused {
  readonly code: number | undefined
  readonly message: string
}

const PROTOCOL = "v4.channel.k8s.io"

const statusMessage = (body: string): string | undefined => {
  try {
    const s = JSON.parse(body) as { message?: unknown }
    return typeof s.message === "string" ? s.message : undefined
  } catch {
    return undefined
  }
}

/**
 * Opens the stream in the current scope; the scope's end closes the WebSocket. `highWater` bounds the
 * bytes buffered from the pod before the socket is paused.
 */
export const openPortForward = (
  endpoint: PortForwardEndpoint,
  highWater: number
): Effect.Effect<PortForwardStream, PortForwardRefused, Scope.Scope> =>
  Effect.gen(function*() {
    const ws = yield* Effect.acquireRelease(
      Effect.callback<WebSocket, PortForwardRefused>((resume) => {
        const ws = new WebSocket(endpoint.url, [PROTOCOL], { ...endpoint.options, perMessageDeflate: false })
        let settled = false
        const settle = (eff: Effect.Effect<WebSocket, PortForwardRefused>) => {
          if (settled) return
          settled = true
          resume(eff)
        }
        ws.on("error", (e: Error) => settle(Effect.fail({ code: undefined, message: e.message })))
        ws.once("unexpected-response", (_req, res) => {
          // Before the upgrade the API answers like any request: keep its Status message (RBAC, 404...).
          const chunks: Array<Buffer> = []
          const refuse = () => {
            const body = Buffer.concat(chunks).toString("utf8")
            settle(Effect.fail({ code: res.statusCode, message: statusMessage(body) ?? (body.trim() || `HTTP ${res.statusCode}`) }))
            ws.terminate()
          }
          res.on("data", (c: Buffer) => chunks.push(c))
          res.on("end", refuse)
          res.on("error", refuse)
        })
        ws.once("open", () => {
          if (ws.protocol !== PROTOCOL) {
            settle(Effect.fail({ code: undefined, message: `server chose subprotocol "${ws.protocol}", not ${PROTOCOL}` }))
            ws.terminate()
          } else settle(Effect.succeed(ws))
        })
        return Effect.sync(() => ws.terminate())
      }),
      (ws) => Effect.sync(() => ws.readyState === WebSocket.OPEN ? ws.close(1000) : ws.terminate())
    )
    return attach(ws, highWater)
  })

const attach = (ws: WebSocket, highWater: number): PortForwardStream => {
  const chunks: Array<Uint8Array> = []
  let head = 0
  let size = 0
  let paused = false
  let ended = false
  let error: string | undefined
  const sawPreamble = [false, false]
  let waiter: (() => void) | undefined
  let failureWaiters: Array<(text: string) => void> = []
  const wake = () => {
    const w = waiter
    waiter = undefined
    w?.()
  }

  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (!isBinary || data.length === 0) return
    const channel = data[0]!
    if (channel > 1) return
    let body = data.subarray(1)
    if (!sawPreamble[channel]) {
      // The first frame on each channel is the port number (uint16 LE), whatever else it holds.
      sawPreamble[channel] = true
      body = body.subarray(2)
    }
    if (body.length === 0) return
    if (channel === 1) {
      // Text on the error channel means the forward failed (nothing listens, or the pod side is gone: the API
      // server only notices that on a write, "broken pipe"). The stream is over now, whether or not the close
      // follows promptly: the reader gets End once it has drained the bytes before it.
      error = (error ?? "") + body.toString("utf8")
      ended = true
      wake()
      const told = failureWaiters
      failureWaiters = []
      for (const f of told) f(error)
      return
    }
    chunks.push(body)
    size += body.length
    if (size > highWater && !paused) {
      paused = true
      ws.pause()
    }
    wake()
  })
  ws.on("close", () => {
    ended = true
    wake()
  })
  ws.on("error", (e) => {
    error ??= e.message
    ended = true
    wake()
  })

  const take = (max: number): Uint8Array => {
    const first = chunks[head]!
    let out: Uint8Array
    if (first.length <= max) {
      out = first
      chunks[head] = undefined as never
      head++
      if (head > 1024 && head * 2 > chunks.length) {
        chunks.splice(0, head)
        head = 0
      }
    } else {
      out = first.subarray(0, max)
      chunks[head] = first.subarray(max)
    }
    size -= out.length
    if (paused && size <= highWater / 2) {
      paused = false
      ws.resume()
    }
    return out
  }

  const read = (max: number): Effect.Effect<PortForwardRead> =>
    Effect.callback<PortForwardRead>((resume) => {
      const attempt = () => {
        if (size > 0) resume(Effect.succeed({ _tag: "Data", bytes: take(Math.max(1, max)) }))
        else if (ended) resume(Effect.succeed({ _tag: "End", error }))
        else waiter = attempt
      }
      attempt()
      return Effect.sync(() => {
        if (waiter === attempt) waiter = undefined
      })
    })

  const write = (bytes: Uint8Array): Effect.Effect<void, PortForwardClosed> =>
    Effect.callback<void, PortForwardClosed>((resume) => {
      if (ended || ws.readyState !== WebSocket.OPEN) {
        resume(Effect.fail(new PortForwardClosed(error ?? "port-forward closed")))
        return
      }
      const frame = Buffer.allocUnsafe(bytes.length + 1)
      frame[0] = 0
      frame.set(bytes, 1)
      ws.send(frame, { binary: true }, (e) =>
        resume(e === undefined || e === null ? Effect.void : Effect.fail(new PortForwardClosed(e.message))))
    })

  const failure: Effect.Effect<string> = Effect.callback<string>((resume) => {
    if (error !== undefined && ended) return resume(Effect.succeed(error))
    const f = (text: string) => resume(Effect.succeed(text))
    failureWaiters.push(f)
    return Effect.sync(() => {
      failureWaiters = failureWaiters.filter((w) => w !== f)
    })
  })

  return { read, write, buffered: () => size, failure }
}
