// Port-forward over WebSocket, kubelet style (k8s.io/kubelet/pkg/cri/streaming/portforward/websocket.go):
// v4.channel.k8s.io framing, a 2-byte little-endian port preamble on each data and error channel,
// errors as text on the error channel followed by a close, one TCP connection per port.
import * as net from "node:net"
import type { WebSocket } from "ws"
import type { Timers } from "./timers.ts"

export interface PortForwardTarget {
  readonly host: string
  readonly port: number
}

export const supportedProtocols = ["v4.channel.k8s.io"]

/** Picks the first client-offered protocol the server supports, in the client's order (as the kubelet does). */
export const negotiate = (offered: ReadonlyArray<string>): string | undefined => offered.find((p) => supportedProtocols.includes(p))

const frame = (channel: number, data: Buffer | Uint8Array) => Buffer.concat([Buffer.from([channel]), data])

const portBytes = (port: number) => {
  const b = Buffer.alloc(2)
  b.writeUInt16LE(port)
  return b
}

export interface ForwardContext {
  readonly ports: ReadonlyArray<number>
  /** Sandbox id used in error texts ("error forwarding port N to pod <id>, uid : ..."). */
  readonly podId: string
  /** Why the pod cannot be reached at all (not running), or undefined. */
  readonly unavailable: string | undefined
  readonly target: (port: number) => PortForwardTarget | undefined
  readonly timers: Timers
  /** `"onWrite"`: a closed pod side is only noticed on the client's next write (broken pipe), as the real API server does. */
  readonly upstreamClose?: "close" | "onWrite"
}

const MAX_PENDING_SENDS = 64

/** Runs one port-forward session; the returned function ends it as the pod dying would. */
export const runPortForward = (ws: WebSocket, ctx: ForwardContext): () => void => {
  const sockets: Array<net.Socket | undefined> = []
  let closing = false
  const closeAll = () => {
    if (closing) return
    closing = true
    for (const s of sockets) s?.destroy()
    if (ws.readyState === ws.OPEN) ws.close(1000)
  }
  const fail = (i: number, port: number, why: string) => {
    if (closing) return
    const text = `error forwarding port ${port} to pod ${ctx.podId}, uid : ${why}`
    ws.send(frame(2 * i + 1, Buffer.from(text)), () => closeAll())
  }
  ctx.ports.forEach((port, i) => {
    ws.send(frame(2 * i, portBytes(port)))
    ws.send(frame(2 * i + 1, portBytes(port)))
  })
  ctx.ports.forEach((port, i) => {
    if (ctx.unavailable !== undefined) return fail(i, port, ctx.unavailable)
    const target = ctx.target(port)
    if (target === undefined) return fail(i, port, `dial tcp4 127.0.0.1:${port}: connect: connection refused`)
    const sock = net.connect({ host: target.host, port: target.port })
    sockets[i] = sock
    let pending = 0
    sock.on("data", (d: Buffer) => {
      if (ws.readyState !== ws.OPEN) return
      pending++
      if (pending >= MAX_PENDING_SENDS) sock.pause()
      ws.send(frame(2 * i, d), () => {
        pending--
        if (pending < MAX_PENDING_SENDS / 2 && sock.isPaused()) sock.resume()
      })
    })
    sock.on("error", (e: NodeJS.ErrnoException) => {
      if (!sock.connecting && e.code !== "ECONNREFUSED") return ctx.upstreamClose === "onWrite" ? undefined : closeAll()
      const what = e.code === "ECONNREFUSED" ? "connect: connection refused" : e.message
      fail(i, port, `dial tcp4 ${target.host}:${target.port}: ${what}`)
    })
    sock.on("drain", () => ws.resume())
    // The kubelet closes the stream (and so the WebSocket) when the pod side ends; the real API server's
    // stream only notices on the next write (below).
    sock.on("close", () => {
      if (ctx.upstreamClose === "onWrite") return
      if (pending === 0) closeAll()
      else ctx.timers.after(20, closeAll)
    })
  })
  ws.on("message", (data: Buffer, isBinary: boolean) => {
    if (!isBinary || data.length === 0) return
    const ch = data[0]!
    // Odd channels (error) are write-only for the server; out-of-range channels are ignored.
    if (ch % 2 !== 0 || ch / 2 >= ctx.ports.length) return
    const sock = sockets[ch / 2]
    if (sock === undefined) return
    if (sock.destroyed) {
      if (ctx.upstreamClose === "onWrite" && data.length > 1) {
        const port = ctx.ports[ch / 2]!
        fail(ch / 2, port, `write tcp4 127.0.0.1:${40000 + (ch / 2)}->127.0.0.1:${port}: write: broken pipe`)
      }
      return
    }
    if (!sock.write(data.subarray(1))) ws.pause()
  })
  ws.on("close", () => {
    closing = true
    for (const s of sockets) s?.destroy()
  })
  ws.on("error", () => closeAll())
  return closeAll
}
