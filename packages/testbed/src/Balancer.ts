// A small TCP round-robin balancer on loopback, like a Kubernetes Service in front of several replicas:
// each new connection goes to the next backend that accepts it (a refused one is skipped, as a Service skips
// an endpoint that is not ready), bytes are relayed as they are, and a backend can be taken out and put back
// (a rolling restart). Connections already made stay where they are until either side closes.
import { createServer, type Server, type Socket, connect } from "node:net"

export interface Backend {
  readonly host: string
  readonly port: number
}

export interface RunningBalancer {
  readonly port: number
  readonly url: (scheme?: "http" | "ws") => string
  /** Replaces the set of backends new connections are spread over. */
  readonly setBackends: (backends: ReadonlyArray<Backend>) => void
  /** Connections accepted per backend ("host:port"), for tests that check the spread. */
  readonly counts: () => ReadonlyMap<string, number>
  readonly close: () => Promise<void>
}

export const startBalancer = async (initial: ReadonlyArray<Backend>): Promise<RunningBalancer> => {
  let backends = [...initial]
  let next = 0
  const counts = new Map<string, number>()
  const open = new Set<Socket>()

  /** Dials backends from the next one on; the first that accepts gets the client. */
  const dial = (attempt: number, done: (s: Socket | undefined) => void) => {
    if (attempt >= backends.length) return done(undefined)
    const b = backends[next++ % backends.length]!
    const upstream = connect(b.port, b.host)
    upstream.once("connect", () => {
      const key = `${b.host}:${b.port}`
      counts.set(key, (counts.get(key) ?? 0) + 1)
      upstream.removeAllListeners("error")
      done(upstream)
    })
    upstream.once("error", () => dial(attempt + 1, done))
  }

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    open.add(client)
    client.once("close", () => open.delete(client))
    client.on("error", () => client.destroy())
    dial(0, (upstream) => {
      if (upstream === undefined || client.destroyed) {
        upstream?.destroy()
        return client.destroy()
      }
      open.add(upstream)
      upstream.once("close", () => {
        open.delete(upstream)
        client.destroy()
      })
      upstream.on("error", () => upstream.destroy())
      client.once("close", () => upstream.destroy())
      client.pipe(upstream)
      upstream.pipe(client)
      client.resume()
    })
  })
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => resolve())
  })
  const address = server.address()
  const port = typeof address === "object" && address !== null ? address.port : 0
  return {
    port,
    url: (scheme = "http") => `${scheme}://127.0.0.1:${port}`,
    setBackends: (b) => {
      backends = [...b]
    },
    counts: () => counts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy()
        server.close(() => resolve())
      })
  }
}
