// The HTTP/WebSocket front end: routing, authentication, RBAC, fault injection, list/watch, and the
// handle that tests use to drive the server. Plain node:http + ws; KubeTestServer wraps it in a Layer.
import { randomUUID } from "node:crypto"
import * as http from "node:http"
import type { AddressInfo, Socket } from "node:net"
import { WebSocketServer } from "ws"
import { parseAllDocuments } from "yaml"
import { Kubelet, type KubeletOptions } from "./kubelet.ts"
import { negotiate, type PortForwardTarget, runPortForward } from "./portforward.ts"
import { authorize, serviceAccountUser, type Attributes, type UserInfo } from "./rbac.ts"
import { nowRfc3339, Registry } from "./registry.ts"
import { apiVersionOf, byResource, lookup, resources, type ResourceInfo } from "./resources.ts"
import {
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
  selectedName,
  type FieldSelector,
  type LabelSelector
} from "./selectors.ts"
import { ApiError, badRequest, expired, failure, forbidden, methodNotAllowed, notFound, type StatusBody, unauthorized, unsupportedMediaType } from "./status.ts"
import { clone, type Obj, Store, type StoreEvent } from "./store.ts"

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
  /** Watch events kept for resuming watches; older resourceVersions get 410 Expired. Default 10000. */
  readonly watchHistory?: number
  /** Interval of BOOKMARK events on watches that allow them. Default 60000 ms. */
  readonly bookmarkIntervalMs?: number
  /** Log each request to stderr. */
  readonly log?: boolean
}

/** One fault-injection rule; the first matching rule applies. */
export interface Fault {
  /** HTTP method to match (GET, POST, ...). Default: any. */
  readonly method?: string
  /** Path to match: a RegExp, or a string the path must start with. Default: any. */
  readonly path?: string | RegExp
  /** Match only watch requests (true) or only non-watch requests (false). Default: both. */
  readonly watch?: boolean
  /** Delay before handling. */
  readonly latencyMs?: number
  /** Answer with this status (e.g. 500, 429, 503) and a Status body instead of handling. */
  readonly status?: number
  /** Adds `Retry-After` (and details.retryAfterSeconds) to a `status` answer. */
  readonly retryAfterSeconds?: number
  readonly message?: string
  /** For watches: end the stream after this many ms (a clean server close, or a reset with `reset`). */
  readonly dropAfterMs?: number
  /** Destroy the connection without answering (or, with dropAfterMs, reset the watch stream). */
  readonly reset?: boolean
  /** Apply to this many matching requests, then retire the rule. Default: unlimited. */
  readonly times?: number
}

export interface KubeconfigOptions {
  readonly namespace?: string
  readonly user?: string
}

export interface LoadRbacOptions {
  /** Namespace for namespaced manifests that have none, and for a bare PolicyRule list. Default "default". */
  readonly namespace?: string
  /** Role name to create when the YAML is a bare list of PolicyRules. Default "rules". */
  readonly roleName?: string
  /** Bind the loaded Roles (and a bare rule list) to this service account with a RoleBinding. */
  readonly bindServiceAccount?: { readonly namespace: string; readonly name: string }
}

export interface KubeTestServerHandle {
  readonly url: string
  readonly port: number
  readonly adminToken: string
  /** Kubeconfig YAML (admin token, context namespace "default"). */
  readonly kubeconfig: string
  kubeconfigFor(token: string, options?: KubeconfigOptions): string
  /** Maps a bearer token to a user. */
  addUser(token: string, user: UserInfo): void
  /** Creates the ServiceAccount (if its namespace exists) and returns a token authenticating as it. */
  addServiceAccount(namespace: string, name: string, token?: string): string
  /** Loads Role/RoleBinding/ClusterRole/ClusterRoleBinding YAML (multi-document, or a bare PolicyRule list). */
  loadRbac(yamlText: string, options?: LoadRbacOptions): Array<Obj>
  registerPortForward(namespace: string, pod: string, port: number, target: PortForwardTarget): void
  /** Sets the text `GET .../pods/NAME/log` returns for a container (default: the pod's only container). */
  setPodLog(namespace: string, pod: string, text: string, container?: string): void
  /** Target for pods with no registered target (e.g. every session pod's 5900 -> one vnc-testserver). */
  setDefaultPortForward(resolver: ((namespace: string, pod: string, port: number) => PortForwardTarget | undefined) | undefined): void
  unregisterPortForward(namespace: string, pod: string, port?: number): void
  addFault(fault: Fault): () => void
  clearFaults(): void
  /** Close the listener so new connections are refused (ECONNREFUSED), or listen again on the same port. */
  refuseConnections(refuse: boolean): Promise<void>
  /** End all open watch streams (a clean close; informers reconnect from their last resourceVersion). */
  dropWatches(): void
  /** Forget watch history: watches resuming from any older resourceVersion get 410 Expired. */
  compact(): void
  configureKubelet(options: KubeletOptions): void
  readonly resourceVersion: number
  /** Direct access, bypassing HTTP, auth and validation. `resource` is a plural ("pods") or a kind ("Pod"). */
  get(resource: string, namespace: string, name: string): Obj | undefined
  list(resource: string, namespace?: string): Array<Obj>
  /** Create or replace an object as-is (only metadata is completed); emits ADDED/MODIFIED. */
  put(resource: string, obj: Obj): Obj
  /** Remove an object at once (no grace period, no finalizers); emits DELETED. */
  delete(resource: string, namespace: string, name: string): Obj | undefined
  /** Called for every stored change (ADDED/MODIFIED/DELETED) with the full object. */
  onChange(listener: (type: string, resource: string, obj: Obj) => void): () => void
  close(): Promise<void>
}

interface Route {
  readonly info: ResourceInfo | undefined
  readonly namespace: string
  readonly name: string
  readonly subresource: string
  readonly path: string
}

const parseRoute = (pathname: string): Route | undefined => {
  const parts = pathname.split("/").filter((p) => p !== "").map(decodeURIComponent)
  let group = ""
  let rest: Array<string>
  if (parts[0] === "api" && parts[1] === "v1") rest = parts.slice(2)
  else if (parts[0] === "apis" && parts.length >= 3) {
    group = parts[1]!
    if (parts[2] !== "v1") return undefined
    rest = parts.slice(3)
  } else return undefined
  let namespace = ""
  if (rest[0] === "namespaces" && rest.length >= 2) {
    namespace = rest[1]!
    if (rest.length >= 3 && !(group === "" && (rest[2] === "status" || rest[2] === "finalize"))) rest = rest.slice(2)
  }
  const [resource, name = "", subresource = "", ...extra] = rest
  if (resource === undefined || extra.length > 0) return undefined
  const info = byResource.get(`${group}/${resource}`)
  if (info === undefined) return { info: undefined, namespace, name, subresource, path: pathname }
  if (resource === "namespaces") return { info, namespace: name, name, subresource, path: pathname }
  if (!info.namespaced && namespace !== "") return undefined
  return { info, namespace, name, subresource, path: pathname }
}

const verbOf = (method: string, name: string, watch: boolean) => {
  switch (method) {
    case "GET":
    case "HEAD":
      return name !== "" ? "get" : watch ? "watch" : "list"
    case "POST":
      return "create"
    case "PUT":
      return "update"
    case "PATCH":
      return "patch"
    case "DELETE":
      return name !== "" ? "delete" : "deletecollection"
    default:
      return method.toLowerCase()
  }
}

const isWatch = (q: URLSearchParams) => {
  const w = q.get("watch")
  return w !== null && w !== "false" && w !== "0"
}

const sendJson = (res: http.ServerResponse, code: number, body: unknown, headers: Record<string, string | Array<string>> = {}) => {
  if (res.headersSent) {
    res.end()
    return
  }
  const text = JSON.stringify(body)
  res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...headers })
  res.end(text)
}

const sendError = (res: http.ServerResponse, e: unknown) => {
  if (e instanceof ApiError) return sendJson(res, e.status.code ?? 500, e.status, e.headers)
  console.error("kube-testserver: internal error", e)
  sendJson(res, 500, failure(500, "InternalError", `Internal error occurred: ${(e as Error)?.message ?? String(e)}`))
}

const readBody = (req: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

const parseJsonBody = (info: ResourceInfo, text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch (e) {
    throw badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: ${text.trim() === "" ? "no content" : `couldn't get version/kind; json parse error: ${(e as Error).message}`}`)
  }
}

const stripType = (o: Obj): Obj => {
  const { kind: _k, apiVersion: _a, ...rest } = o
  return rest
}

const parseDryRun = (q: URLSearchParams): boolean => {
  const vals = q.getAll("dryRun")
  for (const v of vals) if (v !== "All") throw badRequest(`Invalid dryRun value: ${v}`)
  return vals.length > 0
}

const retryStatus = (code: number, message: string | undefined, retryAfter: number | undefined): StatusBody => {
  const reasons: Record<number, [string, string]> = {
    429: ["TooManyRequests", "Too many requests, please try again later."],
    500: ["InternalError", "Internal error occurred: injected fault"],
    503: ["ServiceUnavailable", "The server is currently unable to handle the request"],
    504: ["Timeout", "The server was unable to return a response in the time allotted, but may still be processing the request"]
  }
  const [reason, defaultMsg] = reasons[code] ?? ["InternalError", `injected fault ${code}`]
  return failure(code, reason, message ?? defaultMsg, retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : undefined)
}

interface ActiveWatch {
  end(reset: boolean): void
}

export const start = async (options: ServerOptions = {}): Promise<KubeTestServerHandle> => {
  const host = options.host ?? "127.0.0.1"
  const store = new Store(options.watchHistory ?? 10_000)
  const registry = new Registry(store)
  const kubelet = new Kubelet(registry, options.kubelet ?? {})
  const adminToken = options.adminToken ?? "admin-token"
  const tokens = new Map<string, UserInfo>(Object.entries(options.users ?? {}))
  tokens.set(adminToken, { username: "admin", groups: ["system:masters", "system:authenticated"] })
  const faults: Array<{ fault: Fault; left: number }> = []
  const targets = new Map<string, PortForwardTarget>()
  const podLogs = new Map<string, string>()
  // Open port-forwards per pod: they end when the pod's containers stop (pod deleted or no longer Running).
  const forwards = new Map<string, Set<() => void>>()
  store.subscribe((ev) => {
    if (ev.info.resource !== "pods" || ev.info.group !== "") return
    const stopped = ev.type === "DELETED" || ev.obj.status?.phase !== "Running"
    const key = `${ev.namespace}/${ev.obj.metadata.name}`
    if (stopped && forwards.has(key)) for (const stop of [...forwards.get(key)!]) stop()
  })
  let defaultTarget: ((namespace: string, pod: string, port: number) => PortForwardTarget | undefined) | undefined
  const watches = new Set<ActiveWatch>()
  const sockets = new Set<Socket>()
  const createCheck = options.portForwardCreateCheck ?? true
  const bookmarkMs = options.bookmarkIntervalMs ?? 60_000
  const nsInfo = byResource.get("/namespaces")!
  for (const ns of options.namespaces ?? ["default", "streamspace"]) registry.create(nsInfo, "", { metadata: { name: ns } }, { internal: true })

  const matchFault = (method: string, path: string, watch: boolean): Fault | undefined => {
    for (let i = 0; i < faults.length; i++) {
      const { fault } = faults[i]!
      if (fault.method !== undefined && fault.method.toUpperCase() !== method) continue
      if (fault.watch !== undefined && fault.watch !== watch) continue
      if (fault.path !== undefined) {
        if (typeof fault.path === "string" ? !path.startsWith(fault.path) : !fault.path.test(path)) continue
      }
      const entry = faults[i]!
      entry.left--
      if (entry.left <= 0) faults.splice(i, 1)
      return fault
    }
    return undefined
  }

  const authenticate = (header: string | undefined): UserInfo => {
    const m = /^Bearer\s+(.+)$/i.exec(header ?? "")
    const user = m === null ? undefined : tokens.get(m[1]!.trim())
    if (user === undefined) throw unauthorized()
    return user
  }

  const authz = (user: UserInfo, attrs: Attributes, info: ResourceInfo) => {
    if (authorize(store, user, attrs)) return
    const res = attrs.subresource === "" ? attrs.resource : `${attrs.resource}/${attrs.subresource}`
    throw forbidden(info, attrs.name, user.username, attrs.verb, res, info.namespaced || info.resource === "namespaces" ? attrs.namespace : undefined)
  }

  const log = (...args: Array<unknown>) => {
    if (options.log) console.error("[kube-testserver]", ...args)
  }

  const listBody = (info: ResourceInfo, namespace: string, q: URLSearchParams, labelSel: LabelSelector, fieldSel: FieldSelector) => {
    const rv = q.get("resourceVersion") ?? ""
    if (q.get("resourceVersionMatch") === "Exact" && rv !== "" && Number(rv) < store.compactedRevision) {
      throw expired(`too old resource version: ${rv} (${store.compactedRevision})`)
    }
    let items = store.list(info, namespace).filter((o) => matchesLabels(labelSel, o.metadata?.labels) && matchesFields(fieldSel, o))
    let listRv = store.resourceVersion
    const cont = q.get("continue") ?? ""
    if (cont !== "") {
      let token: { rv: number; key: string }
      try {
        token = JSON.parse(Buffer.from(cont, "base64url").toString("utf8"))
        if (typeof token.rv !== "number" || typeof token.key !== "string") throw new Error("bad")
      } catch {
        throw badRequest(`continue key is not valid: ${cont}`)
      }
      if (token.rv < store.compactedRevision) {
        throw expired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
      }
      listRv = token.rv
      items = items.filter((o) => `${o.metadata.namespace ?? ""}/${o.metadata.name}` > token.key)
    }
    const limit = Number(q.get("limit") ?? "0")
    const metadata: Obj = { resourceVersion: String(listRv) }
    if (Number.isInteger(limit) && limit > 0 && items.length > limit) {
      const last = items[limit - 1]!
      metadata.continue = Buffer.from(JSON.stringify({ rv: listRv, key: `${last.metadata.namespace ?? ""}/${last.metadata.name}` })).toString("base64url")
      metadata.remainingItemCount = items.length - limit
      items = items.slice(0, limit)
    }
    return { kind: info.listKind, apiVersion: apiVersionOf(info), metadata, items: items.map(stripType) }
  }

  const serveWatch = (
    req: http.IncomingMessage,
    res: http.ServerResponse,
    info: ResourceInfo,
    namespace: string,
    q: URLSearchParams,
    labelSel: LabelSelector,
    fieldSel: FieldSelector,
    fault: Fault | undefined
  ) => {
    const rvParam = q.get("resourceVersion") ?? ""
    const fromRv = rvParam === "" || rvParam === "0" ? undefined : Number(rvParam)
    if (fromRv !== undefined && !Number.isInteger(fromRv)) throw badRequest(`invalid resource version: ${rvParam}`)
    const matches = (o: Obj | undefined) =>
      o !== undefined && (namespace === "" || (o.metadata?.namespace ?? "") === namespace) &&
      matchesLabels(labelSel, o.metadata?.labels) && matchesFields(fieldSel, o)
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache, private" })
    res.flushHeaders()
    const write = (type: string, object: Obj) => {
      if (!res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`)
    }
    const timers: Array<ReturnType<typeof setTimeout>> = []
    let unsubscribe = () => {}
    const w: ActiveWatch = {
      end(reset) {
        unsubscribe()
        for (const t of timers) {
          clearTimeout(t)
          clearInterval(t)
        }
        watches.delete(w)
        if (reset) req.socket.destroy()
        else if (!res.writableEnded) res.end()
      }
    }
    watches.add(w)
    const translate = (ev: StoreEvent) => {
      if (ev.info !== info) return
      const now = matches(ev.obj)
      if (ev.type === "ADDED") {
        if (now) write("ADDED", ev.obj)
      } else if (ev.type === "DELETED") {
        if (now) write("DELETED", ev.obj)
      } else {
        const before = matches(ev.prev)
        if (before && now) write("MODIFIED", ev.obj)
        else if (!before && now) write("ADDED", ev.obj)
        else if (before && !now) write("DELETED", ev.obj)
      }
    }
    if (fromRv === undefined) {
      for (const o of store.list(info, namespace)) if (matches(o)) write("ADDED", o)
      if (q.get("sendInitialEvents") === "true") {
        write("BOOKMARK", {
          kind: info.kind,
          apiVersion: apiVersionOf(info),
          metadata: { resourceVersion: String(store.resourceVersion), annotations: { "k8s.io/initial-events-end": "true" } }
        })
      }
    } else {
      const history = store.since(fromRv)
      if (history === undefined) {
        write("ERROR", failure(410, "Expired", `too old resource version: ${fromRv} (${store.compactedRevision})`))
        w.end(false)
        return
      }
      for (const ev of history) translate(ev)
    }
    unsubscribe = store.subscribe(translate)
    if (q.get("allowWatchBookmarks") === "true") {
      timers.push(setInterval(() => write("BOOKMARK", { kind: info.kind, apiVersion: apiVersionOf(info), metadata: { resourceVersion: String(store.resourceVersion) } }), bookmarkMs))
    }
    const timeout = Number(q.get("timeoutSeconds") ?? "0")
    if (timeout > 0) timers.push(setTimeout(() => w.end(false), timeout * 1000))
    if (fault?.dropAfterMs !== undefined) timers.push(setTimeout(() => w.end(fault.reset === true), fault.dropAfterMs))
    req.on("close", () => w.end(false))
    res.on("close", () => w.end(false))
  }

  const servePodLog = (res: http.ServerResponse, ns: string, name: string, q: URLSearchParams) => {
    const pod = registry.get(byResource.get("/pods")!, ns, name)
    const containers: Array<Obj> = pod.spec?.containers ?? []
    const container = q.get("container") ?? (containers.length === 1 ? containers[0]!.name : undefined)
    if (container === undefined) {
      throw badRequest(`a container name must be specified for pod ${name}, choose one of: [${containers.map((c) => c.name).join(" ")}]`)
    }
    if (!containers.some((c) => c.name === container)) throw badRequest(`container ${container} is not valid for pod ${name}`)
    const st = (pod.status?.containerStatuses ?? []).find((c: Obj) => c.name === container)
    const waiting = st?.state?.waiting?.reason ?? (st === undefined ? "ContainerCreating" : undefined)
    if (waiting !== undefined && st?.lastState?.terminated === undefined) {
      throw badRequest(`container "${container}" in pod "${name}" is waiting to start: ${waiting}`)
    }
    let text = podLogs.get(`${ns}/${name}/${container}`) ?? ""
    const tail = q.get("tailLines")
    if (tail !== null) text = text.split("\n").filter((l, i, a) => !(i === a.length - 1 && l === "")).slice(-Number(tail)).map((l) => `${l}\n`).join("")
    res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(text) })
    res.end(text)
  }

  const handleResource = async (req: http.IncomingMessage, res: http.ServerResponse, route: Route, q: URLSearchParams, user: UserInfo, fault: Fault | undefined) => {
    const method = req.method ?? "GET"
    const info = route.info
    if (info === undefined) throw new ApiError(failure(404, "NotFound", "the server could not find the requested resource", {}))
    const watch = isWatch(q) && route.name === ""
    const fieldSel = parseFieldSelector(q.get("fieldSelector"), info.fieldSelectors)
    const labelSel = parseLabelSelector(q.get("labelSelector"))
    const verb = verbOf(method, route.name, watch)
    const attrName = route.name !== "" ? route.name : (verb === "list" || verb === "watch" ? selectedName(fieldSel) ?? "" : "")
    const attrs: Attributes = {
      verb,
      group: info.group,
      resource: info.resource,
      subresource: route.subresource,
      name: attrName,
      namespace: route.namespace
    }
    if (route.subresource !== "" && !info.subresources.includes(route.subresource)) throw notFound(info, route.name)
    authz(user, attrs, info)
    const ns = info.namespaced ? route.namespace : ""
    const listNs = info.resource === "namespaces" ? "" : ns
    if (route.subresource === "portforward") throw badRequest("Upgrade request required")
    if (route.subresource === "log") {
      if (verb !== "get") throw methodNotAllowed()
      return servePodLog(res, ns, route.name, q)
    }
    const dryRun = parseDryRun(q)
    const warnings: Array<string> = []
    const fieldValidation = q.get("fieldValidation") ?? undefined
    const writeOpts = { dryRun, fieldValidation, warnings }
    const warningHeaders = (): Record<string, string | Array<string>> =>
      warnings.length === 0 ? {} : { Warning: warnings.map((w) => `299 - ${JSON.stringify(w)}`) }
    switch (verb) {
      case "get":
        return sendJson(res, 200, registry.get(info, ns, route.name))
      case "list":
        return sendJson(res, 200, listBody(info, listNs, q, labelSel, fieldSel))
      case "watch":
        return serveWatch(req, res, info, listNs, q, labelSel, fieldSel, fault)
      case "create": {
        if (route.subresource !== "") throw methodNotAllowed()
        const ct = (req.headers["content-type"] ?? "application/json").split(";")[0]!.trim()
        if (ct !== "application/json") throw unsupportedMediaType(`the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor`)
        const body = parseJsonBody(info, await readBody(req))
        const created = registry.create(info, ns, body, writeOpts)
        return sendJson(res, 201, created, warningHeaders())
      }
      case "update": {
        const ct = (req.headers["content-type"] ?? "application/json").split(";")[0]!.trim()
        if (ct !== "application/json") throw unsupportedMediaType(`the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor`)
        const body = parseJsonBody(info, await readBody(req))
        const updated = registry.update(info, ns, route.name, body, route.subresource, writeOpts)
        return sendJson(res, 200, updated, warningHeaders())
      }
      case "patch": {
        const text = await readBody(req)
        const { obj, created } = registry.patch(
          info,
          ns,
          route.name,
          req.headers["content-type"] ?? "",
          text,
          route.subresource,
          { fieldManager: q.get("fieldManager") ?? undefined, ...writeOpts },
          () => authz(user, { ...attrs, verb: "create" }, info)
        )
        return sendJson(res, created ? 201 : 200, obj, warningHeaders())
      }
      case "delete":
      case "deletecollection": {
        const text = await readBody(req)
        let opts: Obj = {}
        if (text.trim() !== "") {
          try {
            opts = JSON.parse(text)
          } catch (e) {
            throw badRequest(`couldn't get version/kind; json parse error: ${(e as Error).message}`)
          }
        }
        const graceQ = q.get("gracePeriodSeconds")
        const grace = graceQ !== null ? Number(graceQ) : typeof opts.gracePeriodSeconds === "number" ? opts.gracePeriodSeconds : undefined
        const delDry = dryRun || (Array.isArray(opts.dryRun) && opts.dryRun.includes("All"))
        if (verb === "delete") {
          const r = registry.delete(info, ns, route.name, { gracePeriodSeconds: grace, preconditions: opts.preconditions, dryRun: delDry })
          return sendJson(res, r.code, r.body)
        }
        const victims = store.list(info, listNs).filter((o) => matchesLabels(labelSel, o.metadata?.labels) && matchesFields(fieldSel, o))
        const items: Array<Obj> = []
        for (const v of victims) {
          const r = registry.delete(info, v.metadata.namespace ?? "", v.metadata.name, { gracePeriodSeconds: grace, dryRun: delDry })
          items.push(stripType(info.returnDeletedObject ? (r.body as Obj) : v))
        }
        return sendJson(res, 200, { kind: info.listKind, apiVersion: apiVersionOf(info), metadata: { resourceVersion: String(store.resourceVersion) }, items })
      }
      default:
        throw methodNotAllowed()
    }
  }

  const discovery = (res: http.ServerResponse, path: string): boolean => {
    if (path === "/version") {
      sendJson(res, 200, { major: "1", minor: "35", gitVersion: "v1.35.0-kube-testserver", platform: "linux/amd64" })
    } else if (path === "/healthz" || path === "/readyz" || path === "/livez") {
      res.writeHead(200, { "Content-Type": "text/plain" })
      res.end("ok")
    } else if (path === "/api") {
      sendJson(res, 200, { kind: "APIVersions", versions: ["v1"], serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress: "127.0.0.1" }] })
    } else if (path === "/api/v1" || path === "/apis/rbac.authorization.k8s.io/v1") {
      const group = path === "/api/v1" ? "" : "rbac.authorization.k8s.io"
      sendJson(res, 200, {
        kind: "APIResourceList",
        groupVersion: group === "" ? "v1" : `${group}/v1`,
        resources: resources.filter((r) => r.group === group).flatMap((r) => [
          { name: r.resource, singularName: r.kind.toLowerCase(), namespaced: r.namespaced, kind: r.kind, verbs: ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"] },
          ...r.subresources.map((s) => ({ name: `${r.resource}/${s}`, singularName: "", namespaced: r.namespaced, kind: s === "portforward" ? "PodPortForwardOptions" : r.kind, verbs: s === "portforward" ? ["create", "get"] : ["get", "patch", "update"] }))
        ])
      })
    } else return false
    return true
  }

  const onRequest = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    const q = url.searchParams // URLSearchParams decodes "+" as a space, as Go's url.ParseQuery does.
    const method = req.method ?? "GET"
    log(method, req.url)
    try {
      const fault = matchFault(method, url.pathname, isWatch(q))
      if (fault?.latencyMs !== undefined) await new Promise((r) => setTimeout(r, fault.latencyMs))
      if (fault?.reset === true && fault.dropAfterMs === undefined) {
        req.socket.destroy()
        return
      }
      if (fault?.status !== undefined) {
        const headers: Record<string, string> = fault.retryAfterSeconds !== undefined ? { "Retry-After": String(fault.retryAfterSeconds) } : {}
        return sendJson(res, fault.status, retryStatus(fault.status, fault.message, fault.retryAfterSeconds), headers)
      }
      const user = authenticate(req.headers.authorization)
      if (discovery(res, url.pathname)) return
      const route = parseRoute(url.pathname)
      if (route === undefined) {
        return sendJson(res, 404, failure(404, "NotFound", "the server could not find the requested resource", {}))
      }
      await handleResource(req, res, route, q, user, fault)
    } catch (e) {
      sendError(res, e)
    }
  }

  const server = http.createServer((req, res) => {
    void onRequest(req, res)
  })
  server.on("connection", (s: Socket) => {
    sockets.add(s)
    s.on("close", () => sockets.delete(s))
  })

  const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => negotiate([...protocols]) ?? false })
  const rejectUpgrade = (socket: Socket, code: number, reason: string, body: string, contentType = "application/json") => {
    socket.end(`HTTP/1.1 ${code} ${reason}\r\nContent-Type: ${contentType}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
  }
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    log("UPGRADE", req.url)
    const fail = (e: unknown) => {
      const st = e instanceof ApiError ? e.status : failure(500, "InternalError", String(e))
      rejectUpgrade(socket, st.code ?? 500, st.reason ?? "Error", JSON.stringify(st))
    }
    try {
      const fault = matchFault(req.method ?? "GET", url.pathname, false)
      if (fault?.reset === true) return void socket.destroy()
      if (fault?.status !== undefined) return fail(new ApiError(retryStatus(fault.status, fault.message, fault.retryAfterSeconds)))
      const route = parseRoute(url.pathname)
      const user = authenticate(req.headers.authorization)
      if (route?.info?.resource !== "pods" || route.subresource !== "portforward" || route.name === "") {
        return fail(new ApiError(failure(404, "NotFound", "the server could not find the requested resource", {})))
      }
      const info = route.info
      const attrs: Attributes = { verb: "get", group: "", resource: "pods", subresource: "portforward", name: route.name, namespace: route.namespace }
      authz(user, attrs, info)
      if (createCheck) authz(user, { ...attrs, verb: "create" }, info)
      const pod = registry.get(info, route.namespace, route.name)
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
      wss.handleUpgrade(req, socket, head, (ws) => {
        const key = `${ns}/${podName}`
        const set = forwards.get(key) ?? new Set<() => void>()
        forwards.set(key, set)
        const stop = runPortForward(ws, {
          ports,
          podId: pod.metadata.uid,
          unavailable: pod.status?.phase === "Running" ? undefined : `failed to find sandbox "${pod.metadata.uid}" in store: not found`,
          target: (port) => targets.get(`${ns}/${podName}/${port}`) ?? defaultTarget?.(ns, podName, port)
        })
        set.add(stop)
        ws.on("close", () => {
          set.delete(stop)
          if (set.size === 0 && forwards.get(key) === set) forwards.delete(key)
        })
      })
    } catch (e) {
      fail(e)
    }
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
  const url = `http://${host}:${port}`

  const kubeconfigFor = (token: string, o: KubeconfigOptions = {}) =>
    [
      "apiVersion: v1",
      "kind: Config",
      "clusters:",
      "- name: kube-testserver",
      "  cluster:",
      `    server: ${url}`,
      "    insecure-skip-tls-verify: true",
      "users:",
      `- name: ${JSON.stringify(o.user ?? "user")}`,
      "  user:",
      `    token: ${JSON.stringify(token)}`,
      "contexts:",
      "- name: kube-testserver",
      "  context:",
      "    cluster: kube-testserver",
      `    user: ${JSON.stringify(o.user ?? "user")}`,
      `    namespace: ${JSON.stringify(o.namespace ?? "default")}`,
      "current-context: kube-testserver",
      ""
    ].join("\n")

  let closed = false
  let refusing = false

  const rbacInfo = (kind: string) => lookup(kind)
  const upsert = (info: ResourceInfo, obj: Obj): Obj => {
    const ns = info.namespaced ? obj.metadata.namespace : ""
    const existing = store.get(info, ns, obj.metadata.name)
    if (existing === undefined) return registry.create(info, ns, obj, { internal: true })
    const next = { ...clone(obj), metadata: { ...obj.metadata, resourceVersion: undefined } }
    return registry.update(info, ns, obj.metadata.name, next, "", { internal: true })
  }

  const handle: KubeTestServerHandle = {
    url,
    port,
    adminToken,
    kubeconfig: kubeconfigFor(adminToken, { user: "admin" }),
    kubeconfigFor,
    addUser(token, user) {
      tokens.set(token, user)
    },
    addServiceAccount(namespace, name, token) {
      const t = token ?? `sa-${namespace}-${name}-token`
      tokens.set(t, serviceAccountUser(namespace, name))
      const sa = lookup("serviceaccounts")
      if (store.get(nsInfo, "", namespace) !== undefined && store.get(sa, namespace, name) === undefined) {
        registry.create(sa, namespace, { metadata: { name } }, { internal: true })
      }
      return t
    },
    loadRbac(yamlText, o = {}) {
      const namespace = o.namespace ?? "default"
      const loaded: Array<Obj> = []
      const roles: Array<string> = []
      for (const doc of parseAllDocuments(yamlText)) {
        const value: unknown = doc.toJSON()
        if (value === null || value === undefined) continue
        const items: Array<Obj> = Array.isArray(value)
          ? (value.every((v) => v !== null && typeof v === "object" && ("verbs" in v))
            ? [{ apiVersion: "rbac.authorization.k8s.io/v1", kind: "Role", metadata: { name: o.roleName ?? "rules", namespace }, rules: value }]
            : (value as Array<Obj>))
          : (value as Obj).kind === "List" ? (value as Obj).items : [value as Obj]
        for (const item of items) {
          const info = rbacInfo(item.kind)
          if (info.group !== "rbac.authorization.k8s.io") throw new Error(`kube-testserver: loadRbac: unexpected kind ${item.kind}`)
          const obj = clone(item)
          obj.metadata ??= {}
          if (info.namespaced) obj.metadata.namespace ??= namespace
          else delete obj.metadata.namespace
          if (info.namespaced && store.get(nsInfo, "", obj.metadata.namespace) === undefined) {
            registry.create(nsInfo, "", { metadata: { name: obj.metadata.namespace } }, { internal: true })
          }
          loaded.push(upsert(info, obj))
          if (item.kind === "Role") roles.push(`${obj.metadata.namespace}/${obj.metadata.name}`)
        }
      }
      if (o.bindServiceAccount !== undefined) {
        const sa = o.bindServiceAccount
        for (const r of roles) {
          const [rns, rname] = r.split("/") as [string, string]
          loaded.push(upsert(rbacInfo("RoleBinding"), {
            apiVersion: "rbac.authorization.k8s.io/v1",
            kind: "RoleBinding",
            metadata: { name: `${rname}-${sa.name}`, namespace: rns },
            roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: rname },
            subjects: [{ kind: "ServiceAccount", name: sa.name, namespace: sa.namespace }]
          }))
        }
      }
      return loaded
    },
    registerPortForward(namespace, pod, p, target) {
      targets.set(`${namespace}/${pod}/${p}`, target)
    },
    setPodLog(namespace, pod, text, container) {
      const c = container ?? store.get(byResource.get("/pods")!, namespace, pod)?.spec?.containers?.[0]?.name ?? ""
      podLogs.set(`${namespace}/${pod}/${c}`, text)
    },
    setDefaultPortForward(resolver) {
      defaultTarget = resolver
    },
    unregisterPortForward(namespace, pod, p) {
      for (const k of [...targets.keys()]) {
        if (p !== undefined ? k === `${namespace}/${pod}/${p}` : k.startsWith(`${namespace}/${pod}/`)) targets.delete(k)
      }
    },
    addFault(fault) {
      const entry = { fault, left: fault.times ?? Number.POSITIVE_INFINITY }
      faults.push(entry)
      return () => {
        const i = faults.indexOf(entry)
        if (i >= 0) faults.splice(i, 1)
      }
    },
    clearFaults() {
      faults.length = 0
    },
    async refuseConnections(refuse) {
      if (refuse === refusing || closed) return
      refusing = refuse
      if (refuse) {
        for (const w of [...watches]) w.end(true)
        const done = new Promise<void>((r) => server.close(() => r()))
        for (const s of sockets) s.destroy()
        await done
      } else await listen(port)
    },
    dropWatches() {
      for (const w of [...watches]) w.end(false)
    },
    compact() {
      store.compact()
    },
    configureKubelet(o) {
      kubelet.configure(o)
    },
    get resourceVersion() {
      return store.resourceVersion
    },
    get(resource, namespace, name) {
      const info = lookup(resource)
      const o = store.get(info, info.namespaced ? namespace : "", name)
      return o === undefined ? undefined : clone(o)
    },
    list(resource, namespace) {
      return store.list(lookup(resource), namespace).map(clone)
    },
    put(resource, obj) {
      const info = lookup(resource)
      const o = registry.typed(info, clone(obj))
      o.metadata ??= {}
      if (info.namespaced) o.metadata.namespace ??= "default"
      else delete o.metadata.namespace
      const existing = store.get(info, info.namespaced ? o.metadata.namespace : "", o.metadata.name)
      if (existing === undefined) {
        o.metadata.uid ??= randomUUID()
        o.metadata.creationTimestamp ??= nowRfc3339()
        return clone(store.create(info, o))
      }
      o.metadata.uid ??= existing.metadata.uid
      o.metadata.creationTimestamp ??= existing.metadata.creationTimestamp
      return clone(store.update(info, o, existing))
    },
    delete(resource, namespace, name) {
      const info = lookup(resource)
      const o = store.get(info, info.namespaced ? namespace : "", name)
      return o === undefined ? undefined : clone(registry.removeNow(info, o))
    },
    onChange(listener) {
      return store.subscribe((ev) => listener(ev.type, ev.info.resource, clone(ev.obj)))
    },
    async close() {
      if (closed) return
      closed = true
      kubelet.close()
      for (const w of [...watches]) w.end(false)
      for (const c of wss.clients) c.terminate()
      wss.close()
      const done = refusing ? Promise.resolve() : new Promise<void>((r) => server.close(() => r()))
      for (const s of sockets) s.destroy()
      await done
    }
  }
  return handle
}
