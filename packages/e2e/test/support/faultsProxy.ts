// A fault-injecting TCP proxy for the link between an agent and the control plane. It forwards bytes both ways
// and, on demand: resets every connection (RST), blackholes them (bytes are swallowed, no FIN: only a ping
// timeout can notice), slows them down (each chunk delayed), makes them half-open (the upstream side is closed
// while the client's socket stays open and silent), or refuses new connections. Counts what it carried.
import { Effect } from "effect"
import { createServer, type Server, type Socket, connect } from "node:net"
import type { AddressInfo } from "node:net"

export type ProxyMode = "pass" | "blackhole" | "slow"

export interface FaultProxy {
  readonly port: number
  /** ws:// URL of the proxy (the agent's CONTROL_PLANE_URL). */
  readonly wsUrl: string
  readonly setMode: (mode: ProxyMode, options?: { readonly delayMs?: number }) => void
  /** Sends an RST on every open connection (both sides). */
  readonly resetAll: () => void
  /** Closes the upstream side of every connection and keeps the client's socket open, swallowing its bytes. */
  readonly halfOpenAll: () => void
  /** New connections are accepted and closed at once (true) or forwarded (false). */
  readonly refuse: (on: boolean) => void
  /** Connections accepted so far, and open now. */
  readonly accepted: () => number
  readonly open: () => number
  /** Bytes swallowed by a blackhole or a half-open connection. */
  readonly swallowed: () => number
}

interface Pair {
  readonly client: Socket
  readonly upstream: Socket
  halfOpen: boolean
}

export const makeFaultProxy = (target: { readonly host: string; readonly port: number }) =>
  Effect.acquireRelease(
    Effect.callback<{ proxy: FaultProxy; server: Server; pairs: Set<Pair> }>((resume) => {
      let mode: ProxyMode = "pass"
      let delayMs = 0
      let refusing = false
      let accepted = 0
      let swallowed = 0
      const pairs = new Set<Pair>()

      const forward = (pair: Pair, from: Socket, to: Socket) => {
        // one queue per direction: each chunk is due `delayMs` after it arrived, never before the one ahead of
        // it, so a slow link adds latency without reordering (also while switching modes)
        const queue: Array<{ readonly chunk: Buffer; readonly dueAt: number }> = []
        let timer: ReturnType<typeof setTimeout> | undefined
        const pump = () => {
          timer = undefined
          while (queue.length > 0 && queue[0]!.dueAt <= Date.now()) {
            const { chunk } = queue.shift()!
            if (!to.destroyed) to.write(chunk)
          }
          if (queue.length > 0) timer = setTimeout(pump, queue[0]!.dueAt - Date.now())
        }
        from.on("data", (chunk: Buffer) => {
          if (mode === "blackhole" || pair.halfOpen) {
            swallowed += chunk.length
            return
          }
          const dueAt = Date.now() + (mode === "slow" ? delayMs : 0)
          if (queue.length === 0 && dueAt <= Date.now()) {
            if (!to.destroyed) to.write(chunk)
            return
          }
          queue.push({ chunk, dueAt })
          if (timer === undefined) timer = setTimeout(pump, Math.max(0, queue[0]!.dueAt - Date.now()))
        })
        from.on("close", () => {
          if (timer !== undefined) clearTimeout(timer)
        })
      }

      const server = createServer((client) => {
        accepted++
        if (refusing) {
          client.destroy()
          return
        }
        const upstream = connect(target.port, target.host)
        const pair: Pair = { client, upstream, halfOpen: false }
        pairs.add(pair)
        const drop = () => {
          pairs.delete(pair)
          if (!pair.halfOpen) {
            client.destroy()
            upstream.destroy()
          }
        }
        client.on("error", () => {})
        upstream.on("error", () => {})
        client.on("close", drop)
        upstream.on("close", () => {
          if (!pair.halfOpen) drop()
        })
        forward(pair, client, upstream)
        forward(pair, upstream, client)
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as AddressInfo).port
        const proxy: FaultProxy = {
          port,
          wsUrl: `ws://127.0.0.1:${port}`,
          setMode: (m, o) => {
            mode = m
            delayMs = o?.delayMs ?? 0
          },
          resetAll: () => {
            for (const p of [...pairs]) {
              p.client.resetAndDestroy()
              p.upstream.resetAndDestroy()
            }
          },
          halfOpenAll: () => {
            for (const p of pairs) {
              p.halfOpen = true
              p.upstream.destroy()
            }
          },
          refuse: (on) => {
            refusing = on
          },
          accepted: () => accepted,
          open: () => pairs.size,
          swallowed: () => swallowed
        }
        resume(Effect.succeed({ proxy, server, pairs }))
      })
    }),
    ({ pairs, server }) =>
      Effect.callback<void>((resume) => {
        for (const p of pairs) {
          p.client.destroy()
          p.upstream.destroy()
        }
        server.close(() => resume(Effect.void))
      })
  ).pipe(Effect.map(({ proxy }) => proxy))
