// Unknown-field handling as the apiserver does it: by default unknown fields are dropped and reported
// as `Warning: 299 - "unknown field \"spec.foo\""`; with fieldValidation=Strict they are a 400.
// Known fields come from @kubernetes/client-node's generated model type maps.
import * as k8s from "@kubernetes/client-node"
import type { Obj } from "./store.ts"

interface Attribute {
  readonly baseName: string
  readonly type: string
}
type Model = { getAttributeTypeMap(): Array<Attribute> }

const models = k8s as unknown as Record<string, Model | undefined>

const modelByKind: Record<string, string> = {
  Pod: "V1Pod",
  Service: "V1Service",
  PersistentVolumeClaim: "V1PersistentVolumeClaim",
  Secret: "V1Secret",
  ConfigMap: "V1ConfigMap",
  Event: "CoreV1Event",
  Namespace: "V1Namespace",
  ServiceAccount: "V1ServiceAccount",
  Role: "V1Role",
  RoleBinding: "V1RoleBinding",
  ClusterRole: "V1ClusterRole",
  ClusterRoleBinding: "V1ClusterRoleBinding"
}

const mapRe = /^\{ \[key: string\]: (.+); \}$/
const arrayRe = /^Array<(.+)>$/

const walk = (value: unknown, type: string, path: string, unknown: Array<string>) => {
  if (value === null || typeof value !== "object") return
  const arr = arrayRe.exec(type)
  if (arr !== null) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, arr[1]!, `${path}[${i}]`, unknown))
    return
  }
  const map = mapRe.exec(type)
  if (map !== null) {
    for (const [k, v] of Object.entries(value)) walk(v, map[1]!, `${path}[${k}]`, unknown)
    return
  }
  const model = models[type]
  if (model === undefined || typeof model.getAttributeTypeMap !== "function" || Array.isArray(value)) return
  const attrs = new Map(model.getAttributeTypeMap().map((a) => [a.baseName, a.type]))
  const o = value as Obj
  for (const key of Object.keys(o)) {
    const t = attrs.get(key)
    const p = path === "" ? key : `${path}.${key}`
    if (t === undefined) {
      unknown.push(p)
      delete o[key]
    } else walk(o[key], t, p, unknown)
  }
}

/** Drops unknown fields from `obj` (mutates) and returns their paths. */
export const pruneUnknownFields = (kind: string, obj: Obj): Array<string> => {
  const model = modelByKind[kind]
  if (model === undefined) return []
  const unknown: Array<string> = []
  walk(obj, model, "", unknown)
  return unknown
}
