// start(): one kube-testserver on a real HTTP port. Builds the store, the registry (REST semantics) and
// the kubelet (simulated cluster), then serves requests: faults first (faults.ts), authentication and
// discovery, routing (router.ts) to the resource handlers (handlers.ts) and watches (watch.ts); upgrades
// go to port-forward (forwards.ts). Tests drive it through the handle (handle.ts). Plain node:http + ws;
// KubeTestServer wraps it in a Layer.
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import type { Clock } from "effect"
import { FaultTable, faultStatus } from "./faults.ts"
import { Forwards } from "./forwards.ts"
import { type ApiContext, handleResource } from "./handlers.ts"
import { type KubeTestServerHandle, makeHandle } from "./handle.ts"
import { sendError, sendJson } from "./http.ts"
import { Kubelet, type KubeletOptions } from "./kubelet.ts"
import { Auth, type UserInfo } from "./rbac.ts"
import { Registry } from "./registry.ts"
import { byResource } from "./resources.ts"
import { isWatch, parseRoute, serveDiscovery } from "./router.ts"
import { failure } from "./status.ts"
import { Store } from "./store.ts"
import { makeTimers } from "./timers.ts"
import { Watches } from "./watch.ts"

export type { Fault, FaultRule } from "./faults.ts"
export type { KubeconfigOptions, KubeTestServerHandle, LoadRbacOptions } from "./handle.ts"
export type { KubeletOptions } from "./kubelet.ts"
export type { PortForwardTarget } from "./portforward.ts"
export type { UserInfo } from "./rbac.ts"

export interface ServerOptions {
  /** Default 127.0.0.1. */
  readonly host?: string
  /** Default 0 (any free port). */
  readonly port?: number
  /** Token of the built-in cluster admin (group system:masters, bypasses RBAC). Default "admin-token". */
  readonly adminToken?: string
  /** Extra bearer tokens and the users they authenticate as. */
  readonly users?: Readonly<Record<string, UserInfo>>
  /** Namespaces that exist at start. Default ["default", "streamspace"]. */
  readonly namespaces?: ReadonlyArray<string>
  readonly kubelet?: KubeletOptions
  /** Check `create` on pods/portforward as well as `get` (Kubernetes >= 1.35). Default true. */
  readonly portForwardCreateCheck?: boolean
  /**
   * What a port-forward does when the pod side of the connection closes (the VNC server exits). `"close"`
   * (default): the stream closes at once. `"onWrite"`: as the real API server does (measured on kube-apiserver
   * 1.36 with kwok): nothing at all until the client writes on the data channel, then `... write: broken pipe`
   * on the error channel and a close 1000.
   */
  readonly portForwardUpstreamClose?: "close" | "onWrite"
  /** Watch events kept for resuming watches; older resourceVersions get 410 Expired. Default 10000. */
  readonly watchHistory?: number
  /** Interval of BOOKMARK events on watches that allow them. Default 60000 ms. */
  readonly bookmarkIntervalMs?: number
  /** Log each request to stderr. */
  readonly log?: boolean
  /**
   * The clock every delay of the server runs on (kubelet steps, fault latency, watch timeouts and
   * bookmarks). Default: real time. A test passes its TestClock to move the server's time by hand.
   */
  readonly clock?: Clock.Clock
}

/** Serves one API request: an injected fault, or authentication, discovery and the resource handlers. */
const serveRequest = async (c: ApiContext & { readonly faults: FaultTable; readonly timers: ReturnType<typeof makeTimers> }, req: http.IncomingMessage, res: http.ServerResponse) => {
  const url = new URL(req.url ?? "/", "http://localhost")
  const q = url.searchParams // URLSearchParams decodes "+" as a space, as Go's url.ParseQuery does.
  try {
    const fault = c.faults.match(req.method ?? "GET", url.pathname, isWatch(q))
    if (fault?.latencyMs !== undefined) await c.timers.sleep(fault.latencyMs)
    if (fault?.reset === true && fault.dropAfterMs === undefined) {
      req.socket.destroy()
      return
    }
    if (fault?.status !== undefined) {
      const headers: Record<string, string> = fault.retryAfterSeconds !== undefined ? { "Retry-After": String(fault.retryAfterSeconds) } : {}
      return sendJson(res, fault.status, faultStatus({ ...fault, status: fault.status }), headers)
    }
    const user = c.auth.authenticate(req.headers.authorization)
    if (serveDiscovery(res, url.pathname)) return
    const route = parseRoute(url.pathname)
    if (route === undefined) {
      return sendJson(res, 404, failure(404, "NotFound", "the server could not find the requested resource", {}))
    }
    await handleResource(c, req, res, route, q, user, fault)
  } catch (e) {
    sendError(res, e)
  }
}

export const start = async (options: ServerOptions = {}): Promise<KubeTestServerHandle> => {
  const host = options.host ?? "127.0.0.1"
  const timers = makeTimers(options.clock)
  const store = new Store(options.watchHistory ?? 10_000)
  const registry = new Registry(store)
  const kubelet = new Kubelet(registry, options.kubelet ?? {}, timers)
  const adminToken = options.adminToken ?? "admin-token"
  const auth = new Auth(store, options.users ?? {})
  auth.addToken(adminToken, { username: "admin", groups: ["system:masters", "system:authenticated"] })
  const faults = new FaultTable()
  const watches = new Watches(store, timers, options.bookmarkIntervalMs ?? 60_000)
  const forwards = new Forwards(registry, timers)
  const c = { store, registry, auth, watches, podLogs: new Map<string, string>(), faults, timers }
  const nsInfo = byResource.get("/namespaces")!
  for (const ns of options.namespaces ?? ["default", "streamspace"]) registry.create(nsInfo, "", { metadata: { name: ns } }, { internal: true })
  const log = (...args: Array<unknown>) => {
    if (options.log) console.error("[kube-testserver]", ...args)
  }

  const sockets = new Set<Socket>()
  const server = http.createServer((req, res) => {
    log(req.method ?? "GET", req.url)
    void serveRequest(c, req, res)
  })
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })
  const upgradeContext = { auth, faults, createCheck: options.portForwardCreateCheck ?? true, upstreamClose: options.portForwardUpstreamClose ?? "close" }
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    log("UPGRADE", req.url)
    forwards.upgrade(upgradeContext, req, socket, head)
  })

  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once("error", reject)
      server.listen(port, host, () => {
        server.off("error", reject)
        resolve()
      })
    })
  await listen(options.port ?? 0)
  const port = (server.address() as AddressInfo).port

  let closed = false
  let refusing = false
  const stopListening = () => {
    const done = new Promise<void>((r) => server.close(() => r()))
    for (const s of sockets) s.destroy()
    return done
  }
  return makeHandle({
    url: `http://${host}:${port}`,
    port,
    adminToken,
    registry,
    kubelet,
    auth,
    faults,
    watches,
    forwards,
    podLogs: c.podLogs,
    refuseConnections: async (refuse) => {
      if (refuse === refusing || closed) return
      refusing = refuse
      if (refuse) {
        watches.endAll(true)
        await stopListening()
      } else await listen(port)
    },
    close: async () => {
      if (closed) return
      closed = true
      kubelet.close()
      watches.endAll(false)
      forwards.close()
      await (refusing ? Promise.resolve() : stopListening())
    }
  })
}
