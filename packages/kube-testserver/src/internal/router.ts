// Request routing as the API server does it: which resource, namespace, name and subresource a path
// names, the verb a method means, and the discovery endpoints (/version, /api, /api/v1, /healthz...).
import type * as http from "node:http"
import { sendJson } from "./http.ts"
import { byResource, resources, type ResourceInfo } from "./resources.ts"

export interface Route {
  readonly info: ResourceInfo | undefined
  readonly namespace: string
  readonly name: string
  readonly subresource: string
  readonly path: string
}

export const parseRoute = (pathname: string): Route | undefined => {
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

export const verbOf = (method: string, name: string, watch: boolean) => {
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

export const isWatch = (q: URLSearchParams) => {
  const w = q.get("watch")
  return w !== null && w !== "false" && w !== "0"
}

/** Answers the discovery and health endpoints; false when `path` is none of them. */
export const serveDiscovery = (res: http.ServerResponse, path: string): boolean => {
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
