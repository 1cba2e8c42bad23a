// The handle tests drive a kube-testserver with: its URL and kubeconfigs, users and RBAC, port-forward
// targets, faults, the kubelet's knobs, and direct access to stored objects (bypassing HTTP, auth and
// validation). Built by start() from the server's parts.
import { randomUUID } from "node:crypto"
import { parseAllDocuments } from "yaml"
import type { Fault, FaultRule, FaultTable } from "./faults.ts"
import type { Forwards } from "./forwards.ts"
import type { Kubelet, KubeletOptions } from "./kubelet.ts"
import type { PortForwardTarget } from "./portforward.ts"
import { type Auth, serviceAccountUser, type UserInfo } from "./rbac.ts"
import { nowRfc3339, type Registry } from "./registry.ts"
import { byResource, lookup, type ResourceInfo } from "./resources.ts"
import { clone, type Obj } from "./store.ts"
import type { Watches } from "./watch.ts"

const nsInfo = byResource.get("/namespaces")!

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
  /** Adds a rule; the returned function removes it, and its `hits` counts the requests it applied to. */
  addFault(fault: Fault): FaultRule
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

/** A kubeconfig for `url` that authenticates with `token` (TLS verification off: the server speaks plain HTTP). */
export const kubeconfigFor = (url: string, token: string, o: KubeconfigOptions = {}): string =>
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

/** Creates `obj`, or replaces the stored one of that name whatever its resourceVersion. */
const upsert = (registry: Registry, info: ResourceInfo, obj: Obj): Obj => {
  const ns = info.namespaced ? obj.metadata.namespace : ""
  const existing = registry.store.get(info, ns, obj.metadata.name)
  if (existing === undefined) return registry.create(info, ns, obj, { internal: true })
  const next = { ...clone(obj), metadata: { ...obj.metadata, resourceVersion: undefined } }
  return registry.update(info, ns, obj.metadata.name, next, "", { internal: true })
}

/** Stores RBAC YAML (multi-document, a List, or a bare PolicyRule list that becomes a Role), optionally bound to a service account. */
export const loadRbac = (registry: Registry, yamlText: string, o: LoadRbacOptions = {}): Array<Obj> => {
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
      const info = lookup(item.kind)
      if (info.group !== "rbac.authorization.k8s.io") throw new Error(`kube-testserver: loadRbac: unexpected kind ${item.kind}`)
      const obj = clone(item)
      obj.metadata ??= {}
      if (info.namespaced) obj.metadata.namespace ??= namespace
      else delete obj.metadata.namespace
      if (info.namespaced && registry.store.get(nsInfo, "", obj.metadata.namespace) === undefined) {
        registry.create(nsInfo, "", { metadata: { name: obj.metadata.namespace } }, { internal: true })
      }
      loaded.push(upsert(registry, info, obj))
      if (item.kind === "Role") roles.push(`${obj.metadata.namespace}/${obj.metadata.name}`)
    }
  }
  if (o.bindServiceAccount !== undefined) {
    const sa = o.bindServiceAccount
    for (const r of roles) {
      const [rns, rname] = r.split("/") as [string, string]
      loaded.push(upsert(registry, lookup("RoleBinding"), {
        apiVersion: "rbac.authorization.k8s.io/v1",
        kind: "RoleBinding",
        metadata: { name: `${rname}-${sa.name}`, namespace: rns },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: rname },
        subjects: [{ kind: "ServiceAccount", name: sa.name, namespace: sa.namespace }]
      }))
    }
  }
  return loaded
}

/** The server's parts the handle reaches into. */
export interface HandleParts {
  readonly url: string
  readonly port: number
  readonly adminToken: string
  readonly registry: Registry
  readonly kubelet: Kubelet
  readonly auth: Auth
  readonly faults: FaultTable
  readonly watches: Watches
  readonly forwards: Forwards
  readonly podLogs: Map<string, string>
  readonly refuseConnections: (refuse: boolean) => Promise<void>
  readonly close: () => Promise<void>
}

export const makeHandle = (parts: HandleParts): KubeTestServerHandle => {
  const { url, port, adminToken, registry, kubelet, auth, faults, watches, forwards, podLogs, refuseConnections, close } = parts
  const store = registry.store
  return {
    url,
    port,
    adminToken,
    kubeconfig: kubeconfigFor(url, adminToken, { user: "admin" }),
    kubeconfigFor: (token, o) => kubeconfigFor(url, token, o),
    addUser(token, user) {
      auth.addToken(token, user)
    },
    addServiceAccount(namespace, name, token) {
      const t = token ?? `sa-${namespace}-${name}-token`
      auth.addToken(t, serviceAccountUser(namespace, name))
      const sa = lookup("serviceaccounts")
      if (store.get(nsInfo, "", namespace) !== undefined && store.get(sa, namespace, name) === undefined) {
        registry.create(sa, namespace, { metadata: { name } }, { internal: true })
      }
      return t
    },
    loadRbac(yamlText, o) {
      return loadRbac(registry, yamlText, o)
    },
    registerPortForward(namespace, pod, p, target) {
      forwards.register(namespace, pod, p, target)
    },
    setPodLog(namespace, pod, text, container) {
      const c = container ?? store.get(byResource.get("/pods")!, namespace, pod)?.spec?.containers?.[0]?.name ?? ""
      podLogs.set(`${namespace}/${pod}/${c}`, text)
    },
    setDefaultPortForward(resolver) {
      forwards.setDefault(resolver)
    },
    unregisterPortForward(namespace, pod, p) {
      forwards.unregister(namespace, pod, p)
    },
    addFault(fault) {
      return faults.add(fault)
    },
    clearFaults() {
      faults.clear()
    },
    refuseConnections,
    dropWatches() {
      watches.endAll(false)
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
    close
  }
}
