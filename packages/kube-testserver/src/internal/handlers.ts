// The resource handlers: get, list (with limit/continue), watch, create, update, patch, delete and
// deletecollection of any known resource, and pods/log, each after authentication and RBAC, with the
// API server's Status errors. Storage semantics (validation, defaults, resourceVersions, graceful
// deletion) are the Registry's; this module turns requests into Registry calls.
import type * as http from "node:http"
import type { Fault } from "./faults.ts"
import { parseDryRun, parseJsonBody, readBody, sendJson, stripType } from "./http.ts"
import type { Attributes, Auth, UserInfo } from "./rbac.ts"
import type { Registry } from "./registry.ts"
import { apiVersionOf, byResource, type ResourceInfo } from "./resources.ts"
import { isWatch, type Route, verbOf } from "./router.ts"
import {
  type FieldSelector,
  type LabelSelector,
  matchesFields,
  matchesLabels,
  parseFieldSelector,
  parseLabelSelector,
  selectedName
} from "./selectors.ts"
import { ApiError, badRequest, expired, failure, methodNotAllowed, notFound, unsupportedMediaType } from "./status.ts"
import type { Obj, Store } from "./store.ts"
import type { Watches } from "./watch.ts"

/** What the handlers work with. */
export interface ApiContext {
  readonly store: Store
  readonly registry: Registry
  readonly auth: Auth
  readonly watches: Watches
  /** Text of `GET .../pods/NAME/log`, by "namespace/pod/container". */
  readonly podLogs: Map<string, string>
}

const listBody = (c: ApiContext, info: ResourceInfo, namespace: string, q: URLSearchParams, labelSel: LabelSelector, fieldSel: FieldSelector) => {
  const { store } = c
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


const servePodLog = (c: ApiContext, res: http.ServerResponse, ns: string, name: string, q: URLSearchParams) => {
  const pod = c.registry.get(byResource.get("/pods")!, ns, name)
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
  let text = c.podLogs.get(`${ns}/${name}/${container}`) ?? ""
  const tail = q.get("tailLines")
  if (tail !== null) text = text.split("\n").filter((l, i, a) => !(i === a.length - 1 && l === "")).slice(-Number(tail)).map((l) => `${l}\n`).join("")
  res.writeHead(200, { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(text) })
  res.end(text)
}


export const handleResource = async (c: ApiContext, req: http.IncomingMessage, res: http.ServerResponse, route: Route, q: URLSearchParams, user: UserInfo, fault: Fault | undefined) => {
  const { registry, store } = c
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
  c.auth.authorize(user, attrs, info)
  const ns = info.namespaced ? route.namespace : ""
  const listNs = info.resource === "namespaces" ? "" : ns
  if (route.subresource === "portforward") throw badRequest("Upgrade request required")
  if (route.subresource === "log") {
    if (verb !== "get") throw methodNotAllowed()
    return servePodLog(c, res, ns, route.name, q)
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
      return sendJson(res, 200, listBody(c, info, listNs, q, labelSel, fieldSel))
    case "watch":
      return c.watches.serve(req, res, { info, namespace: listNs, query: q, labels: labelSel, fields: fieldSel, fault })
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
        () => c.auth.authorize(user, { ...attrs, verb: "create" }, info)
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

