// The resource kinds the test server knows: URL names, kinds, scope and which fields selectors accept.
export interface ResourceInfo {
  /** Plural URL name, e.g. "pods". */
  readonly resource: string
  readonly group: string
  readonly version: string
  readonly kind: string
  readonly listKind: string
  readonly namespaced: boolean
  /** Delete answers with the object (true) or a Success Status (false). */
  readonly returnDeletedObject: boolean
  readonly hasStatus: boolean
  readonly fieldSelectors: ReadonlyArray<string>
  readonly subresources: ReadonlyArray<string>
}

const base = ["metadata.name", "metadata.namespace"]

const core = (
  resource: string,
  kind: string,
  extra: Partial<ResourceInfo> = {}
): ResourceInfo => ({
  resource,
  group: "",
  version: "v1",
  kind,
  listKind: `${kind}List`,
  namespaced: true,
  returnDeletedObject: false,
  hasStatus: false,
  fieldSelectors: base,
  subresources: [],
  ...extra
})

const rbac = (resource: string, kind: string, namespaced: boolean): ResourceInfo => ({
  ...core(resource, kind, { namespaced }),
  group: "rbac.authorization.k8s.io"
})

export const resources: ReadonlyArray<ResourceInfo> = [
  core("pods", "Pod", {
    returnDeletedObject: true,
    hasStatus: true,
    subresources: ["status", "portforward", "log"],
    fieldSelectors: [
      ...base,
      "spec.nodeName",
      "spec.restartPolicy",
      "spec.schedulerName",
      "spec.serviceAccountName",
      "spec.hostNetwork",
      "status.phase",
      "status.podIP",
      "status.podIPs",
      "status.nominatedNodeName"
    ]
  }),
  core("services", "Service", {
    returnDeletedObject: true,
    hasStatus: true,
    subresources: ["status"],
    fieldSelectors: [...base, "spec.clusterIP", "spec.type"]
  }),
  core("persistentvolumeclaims", "PersistentVolumeClaim", { returnDeletedObject: true, hasStatus: true, subresources: ["status"] }),
  core("secrets", "Secret", { fieldSelectors: [...base, "type"] }),
  core("configmaps", "ConfigMap"),
  core("events", "Event", {
    fieldSelectors: [
      ...base,
      "involvedObject.kind",
      "involvedObject.namespace",
      "involvedObject.name",
      "involvedObject.uid",
      "involvedObject.apiVersion",
      "involvedObject.resourceVersion",
      "involvedObject.fieldPath",
      "reason",
      "reportingComponent",
      "source",
      "type"
    ]
  }),
  core("serviceaccounts", "ServiceAccount"),
  core("namespaces", "Namespace", {
    namespaced: false,
    returnDeletedObject: true,
    hasStatus: true,
    subresources: ["status"],
    fieldSelectors: ["metadata.name", "status.phase"]
  }),
  rbac("roles", "Role", true),
  rbac("rolebindings", "RoleBinding", true),
  rbac("clusterroles", "ClusterRole", false),
  rbac("clusterrolebindings", "ClusterRoleBinding", false)
]

export const byResource = new Map(resources.map((r) => [`${r.group}/${r.resource}`, r]))
export const byKind = new Map(resources.map((r) => [r.kind, r]))

export const apiVersionOf = (r: ResourceInfo) => r.group === "" ? r.version : `${r.group}/${r.version}`

/** Looks a resource up by plural name or kind ("pods", "Pod"), for the direct-access API. */
export const lookup = (nameOrKind: string): ResourceInfo => {
  const r = byKind.get(nameOrKind) ?? resources.find((x) => x.resource === nameOrKind)
  if (r === undefined) throw new Error(`kube-testserver: unknown resource ${nameOrKind}`)
  return r
}
