// An auditing HTTP proxy between the agent and kube-testserver: forwards every request and WebSocket
// upgrade unchanged and records it as the authorizer sees it (verb, resource[/subresource], status), so
// a test can check that every permission of the agent's Role is used by some call the agent makes.
import { Effect } from "effect"
import type { Scope } from "effect"
import * as http from "node:http"
import * as net from "node:net"

export interface AuditRecord {
  readonly verb: string
  /** `pods`, `pods/portforward`, ... */
  readonly resource: string
  readonly status: number | undefined
}

export interface AuditProxy {
  readonly url: string
  readonly records: Array<AuditRecord>
}

/** Verb and resource of a request, as in k8s-api.md §7 (port-forward upgrades are checked as get and create). */
export const attributesOf = (method: string, rawUrl: string): Array<{ verb: string; resource: string }> => {
  const url = new URL(rawUrl, "http://x")
  const parts = url.pathname.split("/").filter((p) => p !== "")
  if (parts[0] !== "api" || parts[1] !== "v1") return []
  let rest = parts.slice(2)
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2)
  const [resource = "", name = "", sub = ""] = rest
  const full = sub === "" ? resource : `${resource}/${sub}`
  const watch = url.searchParams.get("watch")
  const isWatch = watch !== null && watch !== "false" && watch !== "0"
  switch (method) {
    case "GET":
      if (sub === "portforward") return [{ verb: "get", resource: full }, { verb: "create", resource: full }]
      return [{ verb: name !== "" ? "get" : isWatch ? "watch" : "list", resource: full }]
    case "POST":
      return [{ verb: "create", resource: full }]
    case "PUT":
      return [{ verb: "update", resource: full }]
    case "PATCH":
      return [{ verb: "patch", resource: full }]
    case "DELETE":
      return [{ verb: name !== "" ? "delete" : "deletecollection", resource: full }]
    default:
      return []
  }
}

export const makeAuditProxy = (upstream: { readonly host: string; readonly port: number }): Effect.Effect<AuditProxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    const records: Array<AuditRecord> = []
    const record = (method: string, url: string, status: number | undefined) => {
      for (const a of attributesOf(method, url)) records.push({ ...a, status })
    }
    const sockets = new Set<net.Socket>()
    const server = http.createServer((req, res) => {
      const up = http.request({ host: upstream.host, port: upstream.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
        record(req.method ?? "GET", req.url ?? "/", upRes.statusCode)
        res.writeHead(upRes.statusCode ?? 502, upRes.headers)
        res.flushHeaders()
        upRes.pipe(res)
      })
      up.on("error", () => res.destroy())
      res.on("close", () => up.destroy())
      req.pipe(up)
    })
    server.on("connection", (s) => {
      sockets.add(s)
      s.on("close", () => sockets.delete(s))
    })
    server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
      const up = net.connect(upstream.port, upstream.host, () => {
        const lines = [`${req.method} ${req.url} HTTP/1.1`]
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`)
        up.write(lines.join("\r\n") + "\r\n\r\n")
        if (head.length > 0) up.write(head)
        // The status line tells whether the upgrade was allowed.
        up.once("data", (first: Buffer) => {
          const m = /^HTTP\/1\.1 (\d{3})/.exec(first.toString("latin1"))
          record(req.method ?? "GET", req.url ?? "/", m !== null ? Number(m[1]) : undefined)
          socket.write(first)
          up.pipe(socket)
          socket.pipe(up)
        })
      })
      up.on("error", () => socket.destroy())
      socket.on("error", () => up.destroy())
      up.on("close", () => socket.destroy())
      socket.on("close", () => up.destroy())
    })
    yield* Effect.acquireRelease(
      Effect.promise(() => new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()))),
      () =>
        Effect.promise(() =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy()
            server.close(() => r())
          })
        )
    )
    const { port } = server.address() as net.AddressInfo
    return { url: `http://127.0.0.1:${port}`, records }
  })
