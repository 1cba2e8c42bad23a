// A minimal HTTP CONNECT proxy for tests: records each CONNECT target and pipes bytes both ways.
import { Effect } from "effect"
import type { Scope } from "effect"
import { createServer } from "node:http"
import { connect } from "node:net"
import type { Socket } from "node:net"

export interface ConnectProxy {
  readonly url: string
  /** `host:port` of every CONNECT, in order. */
  readonly connects: Array<string>
  /** Proxy-Authorization headers seen. */
  readonly auth: Array<string | undefined>
}

export const make: Effect.Effect<ConnectProxy, never, Scope.Scope> = Effect.gen(function*() {
  const connects: Array<string> = []
  const auth: Array<string | undefined> = []
  const sockets = new Set<Socket>()
  const server = yield* Effect.acquireRelease(
    Effect.callback<ReturnType<typeof createServer>>((resume) => {
      const s = createServer((_req, res) => res.writeHead(405).end())
      s.on("connect", (req, client: Socket, head) => {
        connects.push(req.url ?? "")
        auth.push(req.headers["proxy-authorization"])
        const [host, port] = (req.url ?? "").replace(/^\[(.*)\](:\d+)$/, "$1$2").split(/:(?=\d+$)/)
        const upstream = connect(Number(port), host!, () => {
          client.write("HTTP/1.1 200 Connection Established\r\n\r\n")
          if (head.length > 0) upstream.write(head)
          upstream.pipe(client)
          client.pipe(upstream)
        })
        for (const sock of [client, upstream]) {
          sockets.add(sock)
          sock.on("error", () => {
            client.destroy()
            upstream.destroy()
          })
          sock.on("close", () => sockets.delete(sock))
        }
      })
      s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
    }),
    (s) =>
      Effect.callback<void>((resume) => {
        for (const sock of sockets) sock.destroy()
        s.close(() => resume(Effect.void))
      })
  )
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, connects, auth }
})
