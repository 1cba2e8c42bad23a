// Port-forward over the API: the `pods/NAME/portforward` WebSocket upgrade (authentication, RBAC `get`
// and, like Kubernetes >= 1.35, `create`; the pod must be scheduled; subprotocol negotiation), the
// targets that stand in for the pod's ports, and ending a pod's forwards when its containers stop.
import type * as http from "node:http"
import type { Socket } from "node:net"
import { WebSocketServer } from "ws"
import type { FaultTable } from "./faults.ts"
import { faultStatus } from "./faults.ts"
import { negotiate, type PortForwardTarget, runPortForward } from "./portforward.ts"
import type { Attributes, Auth } from "./rbac.ts"
import type { Registry } from "./registry.ts"
import { parseRoute } from "./router.ts"
import { ApiError, badRequest, failure } from "./status.ts"
import type { Timers } from "./timers.ts"

export type TargetResolver = (namespace: string, pod: string, port: number) => PortForwardTarget | undefined

const rejectUpgrade = (socket: Socket, code: number, reason: string, body: string, contentType = "application/json") => {
  socket.end(`HTTP/1.1 ${code} ${reason}\r\nContent-Type: ${contentType}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
}

export class Forwards {
  private readonly registry: Registry
  private readonly timers: Timers
  private readonly targets = new Map<string, PortForwardTarget>()
  private defaultTarget: TargetResolver | undefined
  /** Open forwards per pod: they end when the pod's containers stop (pod deleted or no longer Running). */
  private readonly open = new Map<string, Set<() => void>>()
  private readonly wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => negotiate([...protocols]) ?? false })

  constructor(registry: Registry, timers: Timers) {
    this.registry = registry
    this.timers = timers
    registry.store.subscribe((ev) => {
      if (ev.info.resource !== "pods" || ev.info.group !== "") return
      const stopped = ev.type === "DELETED" || ev.obj.status?.phase !== "Running"
      const stops = this.open.get(`${ev.namespace}/${ev.obj.metadata.name}`)
      if (stopped && stops !== undefined) for (const stop of [...stops]) stop()
    })
  }

  register(namespace: string, pod: string, port: number, target: PortForwardTarget): void {
    this.targets.set(`${namespace}/${pod}/${port}`, target)
  }

  unregister(namespace: string, pod: string, port?: number): void {
    for (const k of [...this.targets.keys()]) {
      if (port !== undefined ? k === `${namespace}/${pod}/${port}` : k.startsWith(`${namespace}/${pod}/`)) this.targets.delete(k)
    }
  }

  setDefault(resolver: TargetResolver | undefined): void {
    this.defaultTarget = resolver
  }

  /** Answers one upgrade request: a port-forward, or the error the API server would give. */
  upgrade(c: { readonly auth: Auth; readonly faults: FaultTable; readonly createCheck: boolean; readonly upstreamClose: "close" | "onWrite" }, req: http.IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? "/", "http://localhost")
    const fail = (e: unknown) => {
      const st = e instanceof ApiError ? e.status : failure(500, "InternalError", String(e))
      rejectUpgrade(socket, st.code ?? 500, st.reason ?? "Error", JSON.stringify(st))
    }
    try {
      const fault = c.faults.match(req.method ?? "GET", url.pathname, false)
      if (fault?.reset === true) return void socket.destroy()
      if (fault?.status !== undefined) return fail(new ApiError(faultStatus({ ...fault, status: fault.status })))
      const route = parseRoute(url.pathname)
      const user = c.auth.authenticate(req.headers.authorization)
      if (route?.info?.resource !== "pods" || route.subresource !== "portforward" || route.name === "") {
        return fail(new ApiError(failure(404, "NotFound", "the server could not find the requested resource", {})))
      }
      const info = route.info
      const attrs: Attributes = { verb: "get", group: "", resource: "pods", subresource: "portforward", name: route.name, namespace: route.namespace }
      c.auth.authorize(user, attrs, info)
      if (c.createCheck) c.auth.authorize(user, { ...attrs, verb: "create" }, info)
      const pod = this.registry.get(info, route.namespace, route.name)
      if (!pod.spec?.nodeName) throw badRequest(`pod ${route.name} does not have a host assigned`)
      const ports = url.searchParams.getAll("ports").flatMap((p) => p.split(",")).filter((p) => p !== "").map(Number)
      if (ports.length === 0) throw badRequest("query parameter \"port\" is required")
      for (const p of ports) if (!Number.isInteger(p) || p < 1 || p > 65535) throw badRequest(`invalid port ${p}`)
      const offered = String(req.headers["sec-websocket-protocol"] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "")
      if (negotiate(offered) === undefined) {
        return rejectUpgrade(socket, 403, "Forbidden", `requested protocol(s) are not supported: ${JSON.stringify(offered)}; supports [v4.channel.k8s.io]`, "text/plain")
      }
      const ns = route.namespace
      const podName = route.name
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        const key = `${ns}/${podName}`
        const set = this.open.get(key) ?? new Set<() => void>()
        this.open.set(key, set)
        const stop = runPortForward(ws, {
          ports,
          podId: pod.metadata.uid,
          unavailable: pod.status?.phase === "Running" ? undefined : `failed to find sandbox "${pod.metadata.uid}" in store: not found`,
          target: (port) => this.targets.get(`${ns}/${podName}/${port}`) ?? this.defaultTarget?.(ns, podName, port),
          timers: this.timers,
          upstreamClose: c.upstreamClose
        })
        set.add(stop)
        ws.on("close", () => {
          set.delete(stop)
          if (set.size === 0 && this.open.get(key) === set) this.open.delete(key)
        })
      })
    } catch (e) {
      fail(e)
    }
  }

  close(): void {
    for (const c of this.wss.clients) c.terminate()
    this.wss.close()
  }
}
