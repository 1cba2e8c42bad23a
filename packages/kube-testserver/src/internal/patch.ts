// The four PATCH content types: RFC 6902 JSON patch, RFC 7386 merge patch, strategic merge patch
// (lists merged by their patchMergeKey) and server-side apply (approximated as a strategic merge).
import { ApiError, badRequest, failure } from "./status.ts"
import { clone, type Obj } from "./store.ts"

export const JsonPatch = "application/json-patch+json"
export const MergePatch = "application/merge-patch+json"
export const StrategicMergePatch = "application/strategic-merge-patch+json"
export const ApplyPatchYaml = "application/apply-patch+yaml"
export const patchTypes = [JsonPatch, MergePatch, ApplyPatchYaml, StrategicMergePatch]

const rejected = () =>
  new ApiError(failure(422, "Invalid", "the server rejected our request due to an error in our request"))

const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v)

const unescape = (s: string) => s.replaceAll("~1", "/").replaceAll("~0", "~")

const parsePointer = (p: unknown): Array<string> => {
  if (typeof p !== "string" || (p !== "" && !p.startsWith("/"))) throw badRequest(`invalid JSON pointer: ${String(p)}`)
  return p === "" ? [] : p.slice(1).split("/").map(unescape)
}

const walk = (doc: unknown, path: Array<string>): unknown => {
  let cur: any = doc
  for (const seg of path) {
    if (Array.isArray(cur)) {
      const i = Number(seg)
      if (!/^\d+$/.test(seg) || i >= cur.length) throw rejected()
      cur = cur[i]
    } else if (isObj(cur)) {
      if (!Object.prototype.hasOwnProperty.call(cur, seg)) throw rejected()
      cur = cur[seg]
    } else throw rejected()
  }
  return cur
}

const addAt = (doc: unknown, path: Array<string>, value: unknown, replace: boolean): unknown => {
  if (path.length === 0) return value
  const parent: any = walk(doc, path.slice(0, -1))
  const last = path[path.length - 1]!
  if (Array.isArray(parent)) {
    if (last === "-" && !replace) {
      parent.push(value)
      return doc
    }
    const i = Number(last)
    if (!/^\d+$/.test(last) || i > parent.length || (replace && i >= parent.length)) throw rejected()
    if (replace) parent[i] = value
    else parent.splice(i, 0, value)
  } else if (isObj(parent)) {
    if (replace && !Object.prototype.hasOwnProperty.call(parent, last)) throw rejected()
    parent[last] = value
  } else throw rejected()
  return doc
}

const removeAt = (doc: unknown, path: Array<string>): unknown => {
  if (path.length === 0) throw rejected()
  const parent: any = walk(doc, path.slice(0, -1))
  const last = path[path.length - 1]!
  if (Array.isArray(parent)) {
    const i = Number(last)
    if (!/^\d+$/.test(last) || i >= parent.length) throw rejected()
    parent.splice(i, 1)
  } else if (isObj(parent)) {
    if (!Object.prototype.hasOwnProperty.call(parent, last)) throw rejected()
    delete parent[last]
  } else throw rejected()
  return doc
}

export const applyJsonPatch = (target: Obj, ops: unknown): Obj => {
  if (!Array.isArray(ops)) throw badRequest("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
  let doc: unknown = clone(target)
  for (const op of ops) {
    if (!isObj(op) || typeof op.op !== "string") throw badRequest("Unexpected kind: <nil>")
    const path = parsePointer(op.path)
    switch (op.op) {
      case "add":
        doc = addAt(doc, path, clone(op.value), false)
        break
      case "replace":
        doc = addAt(doc, path, clone(op.value), true)
        break
      case "remove":
        doc = removeAt(doc, path)
        break
      case "copy":
      case "move": {
        const from = parsePointer(op.from)
        const v = clone(walk(doc, from))
        if (op.op === "move") doc = removeAt(doc, from)
        doc = addAt(doc, path, v, false)
        break
      }
      case "test": {
        const v = walk(doc, path)
        if (JSON.stringify(v) !== JSON.stringify(op.value)) throw rejected()
        break
      }
      default:
        throw badRequest(`Unexpected kind: ${op.op}`)
    }
  }
  if (!isObj(doc)) throw rejected()
  return doc as Obj
}

export const applyMergePatch = (target: unknown, patch: unknown): unknown => {
  if (!isObj(patch)) return clone(patch)
  const out: Record<string, unknown> = isObj(target) ? clone(target) : {}
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k]
    else out[k] = applyMergePatch(out[k], v)
  }
  return out
}

/** patchMergeKey of the lists we know, by field name (and parent field where it differs). */
const mergeKeyFor = (parent: string, field: string): string | undefined => {
  switch (field) {
    case "containers":
    case "initContainers":
    case "ephemeralContainers":
    case "env":
    case "volumes":
    case "imagePullSecrets":
      return "name"
    case "volumeMounts":
      return "mountPath"
    case "conditions":
      return "type"
    case "ports":
      return parent === "spec" ? "port" : "containerPort"
    case "containerStatuses":
    case "initContainerStatuses":
      return "name"
    default:
      return undefined
  }
}

/** Lists of scalars with patchStrategy "merge" (union), e.g. metadata.finalizers. */
const scalarMergeLists = new Set(["finalizers"])

const strategic = (target: unknown, patch: unknown, parent: string): unknown => {
  if (!isObj(patch)) return clone(patch)
  if (patch["$patch"] === "replace") {
    const { $patch: _, ...rest } = patch
    return clone(rest)
  }
  if (patch["$patch"] === "delete") return undefined
  const out: Record<string, unknown> = isObj(target) ? clone(target) : {}
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith("$")) continue
    if (v === null) {
      delete out[k]
      continue
    }
    const cur = out[k]
    const key = mergeKeyFor(parent, k)
    if (Array.isArray(v) && Array.isArray(cur) && key !== undefined) {
      const merged: Array<unknown> = [...cur]
      for (const item of v) {
        if (!isObj(item)) continue
        const idx = merged.findIndex((x) => isObj(x) && x[key] === item[key])
        if (item["$patch"] === "delete") {
          if (idx >= 0) merged.splice(idx, 1)
        } else if (idx >= 0) merged[idx] = strategic(merged[idx], item, k)
        else merged.push(strategic(undefined, item, k))
      }
      out[k] = merged
    } else if (Array.isArray(v) && Array.isArray(cur) && scalarMergeLists.has(k)) {
      out[k] = [...new Set([...cur, ...v])]
    } else {
      const r = strategic(cur, v, k)
      if (r === undefined) delete out[k]
      else out[k] = r
    }
  }
  return out
}

export const applyStrategicMergePatch = (target: Obj, patch: unknown): Obj => {
  if (!isObj(patch)) throw badRequest("json: cannot unmarshal array into Go value of type map[string]interface {}")
  return strategic(target, patch, "") as Obj
}
