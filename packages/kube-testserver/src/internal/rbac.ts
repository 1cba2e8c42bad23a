// Authentication (bearer tokens -> users) and RBAC authorization from stored Role/RoleBinding/ClusterRole/
// ClusterRoleBinding objects, following k8s.io/kubernetes pkg/apis/rbac/v1/evaluation_helpers.go.
import { byResource, type ResourceInfo } from "./resources.ts"
import { forbidden, unauthorized } from "./status.ts"
import type { Obj, Store } from "./store.ts"

export interface UserInfo {
  readonly username: string
  readonly groups: ReadonlyArray<string>
}

export const serviceAccountUser = (namespace: string, name: string): UserInfo => ({
  username: `system:serviceaccount:${namespace}:${name}`,
  groups: ["system:serviceaccounts", `system:serviceaccounts:${namespace}`, "system:authenticated"]
})

export interface Attributes {
  readonly verb: string
  readonly group: string
  readonly resource: string
  readonly subresource: string
  readonly name: string
  readonly namespace: string
}

const has = (list: unknown, v: string) => Array.isArray(list) && (list.includes(v) || list.includes("*"))

const resourceMatches = (rule: Obj, a: Attributes) => {
  const combined = a.subresource === "" ? a.resource : `${a.resource}/${a.subresource}`
  const rs: Array<string> = Array.isArray(rule.resources) ? rule.resources : []
  return rs.some((r) => r === "*" || r === combined || (a.subresource !== "" && r === `*/${a.subresource}`))
}

export const ruleAllows = (rule: Obj, a: Attributes): boolean => {
  if (!has(rule.verbs, a.verb)) return false
  if (!has(rule.apiGroups, a.group)) return false
  if (!resourceMatches(rule, a)) return false
  const names: Array<string> = Array.isArray(rule.resourceNames) ? rule.resourceNames : []
  return names.length === 0 || (a.name !== "" && names.includes(a.name))
}

const subjectMatches = (s: Obj, user: UserInfo, bindingNamespace: string) => {
  switch (s?.kind) {
    case "User":
      return s.name === user.username
    case "Group":
      return user.groups.includes(s.name)
    case "ServiceAccount":
      return user.username === `system:serviceaccount:${s.namespace ?? bindingNamespace}:${s.name}`
    default:
      return false
  }
}

export const authorize = (store: Store, user: UserInfo, a: Attributes): boolean => {
  if (user.groups.includes("system:masters")) return true
  const rbac = (r: string) => byResource.get(`rbac.authorization.k8s.io/${r}`)!
  const rulesOf = (roleRef: Obj, namespace: string): Array<Obj> => {
    if (roleRef?.kind === "ClusterRole") return store.get(rbac("clusterroles"), "", roleRef.name)?.rules ?? []
    if (roleRef?.kind === "Role") return store.get(rbac("roles"), namespace, roleRef.name)?.rules ?? []
    return []
  }
  const bindings: Array<[Obj, string]> = store.list(rbac("clusterrolebindings")).map((b) => [b, ""])
  if (a.namespace !== "") for (const b of store.list(rbac("rolebindings"), a.namespace)) bindings.push([b, a.namespace])
  for (const [b, ns] of bindings) {
    const subjects: Array<Obj> = Array.isArray(b.subjects) ? b.subjects : []
    if (!subjects.some((s) => subjectMatches(s, user, ns))) continue
    if (rulesOf(b.roleRef, ns).some((r) => ruleAllows(r, a))) return true
  }
  return false
}

/** Bearer tokens and the users they authenticate as, and the RBAC check that answers 403 as the API does. */
export class Auth {
  private readonly store: Store
  private readonly tokens: Map<string, UserInfo>

  constructor(store: Store, users: Readonly<Record<string, UserInfo>>) {
    this.store = store
    this.tokens = new Map(Object.entries(users))
  }

  addToken(token: string, user: UserInfo): void {
    this.tokens.set(token, user)
  }

  /** The user of an `Authorization: Bearer` header; 401 otherwise. */
  authenticate(header: string | undefined): UserInfo {
    const m = /^Bearer\s+(.+)$/i.exec(header ?? "")
    const user = m === null ? undefined : this.tokens.get(m[1]!.trim())
    if (user === undefined) throw unauthorized()
    return user
  }

  /** Returns when RBAC allows `a`; throws the API's 403 otherwise. */
  authorize(user: UserInfo, a: Attributes, info: ResourceInfo): void {
    if (authorize(this.store, user, a)) return
    const res = a.subresource === "" ? a.resource : `${a.resource}/${a.subresource}`
    throw forbidden(info, a.name, user.username, a.verb, res, info.namespaced || info.resource === "namespaces" ? a.namespace : undefined)
  }
}
