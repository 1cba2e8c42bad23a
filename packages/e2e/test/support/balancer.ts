// A small TCP load balancer for tests of several control-plane replicas, as a Kubernetes Service is: each new
// connection goes to the next backend (round robin) whose GET /readyz answers 200 right now; a draining or
// stopped replica gets no new connections. Bytes are piped both ways untouched (WebSockets pass through).
import { Effect } from "effect"
import { connect, createServer, type Socket } from "node:net"
import type { AddressInfo } from "node:net"

const ready = (url: string) => fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status === 200, () => false)

export const startBalancer = (backends: () => ReadonlyArray<{ readonly url: string; readonly port: number }>) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly url: string; readonly wsUrl: string; readonly server: ReturnType<typeof createServer>; readonly open: Set<Socket> }>((resume) => {
      let next = 0
      const open = new Set<Socket>()
      const track = (s: Socket) => {
        open.add(s)
        s.once("close", () => open.delete(s))
      }
      const server = createServer({ pauseOnConnect: true }, async (client) => {
        track(client)
        client.on("error", () => {})
        const list = backends()
        for (let i = 0; i < list.length; i++) {
          const backend = list[(next + i) % list.length]!
          if (!(await ready(backend.url))) continue
          next = (next + i + 1) % list.length
          const upstream = connect(backend.port, "127.0.0.1")
          track(upstream)
          upstream.on("error", () => client.destroy())
          client.on("close", () => upstream.destroy())
          upstream.on("close", () => client.destroy())
          client.pipe(upstream).on("error", () => {})
          upstream.pipe(client).on("error", () => {})
          client.resume()
          return
        }
        client.destroy()
      })
      server.listen(0, "127.0.0.1", () => {
        const port = (server.address() as AddressInfo).port
        resume(Effect.succeed({ port, url: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}`, server, open }))
      })
    }),
    (b) => Effect.sync(() => {
      b.server.close()
      for (const s of b.open) s.destroy()
    })
  )
