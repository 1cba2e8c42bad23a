// REST semantics on top of the store: create/update/patch/delete with defaulting, validation,
// optimistic concurrency, generateName, graceful pod deletion, finalizers and clusterIP allocation.
import { randomUUID } from "node:crypto"
import { parse as parseYaml } from "yaml"
import { applyCreateDefaults, applyUpdateDefaults } from "./defaults.ts"
import {
  applyJsonPatch,
  applyMergePatch,
  applyStrategicMergePatch,
  ApplyPatchYaml,
  JsonPatch,
  MergePatch,
  StrategicMergePatch
} from "./patch.ts"
import { apiVersionOf, byResource, type ResourceInfo } from "./resources.ts"
import {
  alreadyExists,
  ApiError,
  badRequest,
  conflict,
  failure,
  type FieldError,
  internalError,
  invalid,
  notFound,
  type StatusBody,
  success,
  unsupportedMediaType
} from "./status.ts"
import { clone, type Obj, type Store } from "./store.ts"
import { pruneUnknownFields } from "./prune.ts"
import { validateObject } from "./validation.ts"

const namespacesInfo = byResource.get("/namespaces")!

/** RFC 3339 with second precision, as the apiserver serializes metav1.Time. */
export const nowRfc3339 = (offsetSeconds = 0) =>
  new Date(Math.floor(Date.now() / 1000) * 1000 + offsetSeconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z")

const genAlphabet = "bcdfghjklmnpqrstvwxz2456789"
export const generateSuffix = (n = 5) => {
  let s = ""
  for (let i = 0; i < n; i++) s += genAlphabet[Math.floor(Math.random() * genAlphabet.length)]
  return s
}

const isObj = (v: unknown): v is Obj => v !== null && typeof v === "object" && !Array.isArray(v)

export interface WriteOptions {
  readonly dryRun?: boolean
  /** fieldValidation: Strict rejects unknown fields (400), Warn (default) drops and reports them, Ignore drops them. */
  readonly fieldValidation?: string | undefined
  /** Collects `Warning` header texts. */
  readonly warnings?: Array<string>
  /** Controller writes (kubelet, binder): skip validation and immutability checks. */
  readonly internal?: boolean
}

export interface DeleteOptions {
  readonly gracePeriodSeconds?: number | undefined
  readonly preconditions?: { uid?: string; resourceVersion?: string } | undefined
  readonly dryRun?: boolean
}

export interface DeleteResult {
  readonly code: number
  readonly body: Obj | StatusBody
  /** True when the object is gone from the store (not just marked for deletion). */
  readonly removed: boolean
}

export class Registry {
  readonly store: Store
  private readonly usedIPs = new Set<string>(["10.96.0.1"])

  constructor(store: Store) {
    this.store = store
  }

  /** Adds kind/apiVersion, which stored objects always carry. */
  typed(info: ResourceInfo, obj: Obj): Obj {
    return { apiVersion: apiVersionOf(info), kind: info.kind, ...obj }
  }

  get(info: ResourceInfo, namespace: string, name: string): Obj {
    const o = this.store.get(info, info.namespaced ? namespace : "", name)
    if (o === undefined) throw notFound(info, name)
    return o
  }

  private prune(info: ResourceInfo, obj: Obj, opts: WriteOptions) {
    if (opts.internal) return
    const unknown = pruneUnknownFields(info.kind, obj)
    if (unknown.length === 0) return
    if (opts.fieldValidation === "Strict") {
      throw badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: strict decoding error: ${unknown.map((u) => `unknown field "${u}"`).join(", ")}`)
    }
    if (opts.fieldValidation !== "Ignore") for (const u of unknown) opts.warnings?.push(`unknown field "${u}"`)
  }

  private checkBody(info: ResourceInfo, body: unknown): Obj {
    if (!isObj(body)) throw badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: json: cannot unmarshal ${Array.isArray(body) ? "array" : typeof body} into Go value of type struct`)
    if (body.kind !== undefined && body.kind !== info.kind) {
      throw badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: the kind "${String(body.kind)}" does not match the expected kind "${info.kind}"`)
    }
    if (body.metadata !== undefined && !isObj(body.metadata)) throw badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: json: cannot unmarshal into metadata`)
    return body
  }

  private checkNamespace(info: ResourceInfo, namespace: string, name: string, creating: boolean) {
    if (!info.namespaced) return
    const ns = this.store.get(namespacesInfo, "", namespace)
    if (ns === undefined) throw notFound(namespacesInfo, namespace)
    if (creating && ns.metadata?.deletionTimestamp !== undefined) {
      const msg = `${info.resource} "${name}" is forbidden: unable to create new content in namespace ${namespace} because it is being terminated`
      throw new ApiError(failure(403, "Forbidden", msg, { name, kind: info.resource }))
    }
  }

  private allocateIP(): string {
    for (;;) {
      const n = 1 + Math.floor(Math.random() * (1 << 20) - 2)
      const ip = `10.${96 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`
      if (!this.usedIPs.has(ip) && (n & 255) !== 0) return ip
    }
  }

  private allocateServiceIPs(obj: Obj) {
    const spec = obj.spec
    if (spec.type === "ExternalName") return
    if (spec.clusterIP === "None") {
      spec.clusterIPs = ["None"]
      return
    }
    if (typeof spec.clusterIP === "string" && spec.clusterIP !== "") {
      if (this.usedIPs.has(spec.clusterIP)) {
        throw invalid("Service", "", obj.metadata.name, [{
          type: "Invalid value",
          field: "spec.clusterIPs",
          value: [spec.clusterIP],
          detail: `failed to allocate IP ${spec.clusterIP}: provided IP is already allocated`
        }])
      }
    } else spec.clusterIP = this.allocateIP()
    spec.clusterIPs = [spec.clusterIP]
  }

  create(info: ResourceInfo, namespace: string, rawBody: unknown, opts: WriteOptions = {}): Obj {
    const body = clone(this.checkBody(info, rawBody))
    this.prune(info, body, opts)
    const meta: Obj = isObj(body.metadata) ? body.metadata : {}
    body.metadata = meta
    const ns = info.namespaced ? namespace : ""
    if (info.namespaced) {
      if (meta.namespace !== undefined && meta.namespace !== "" && meta.namespace !== ns) {
        throw badRequest("the namespace of the provided object does not match the namespace sent on the request")
      }
      meta.namespace = ns
    } else delete meta.namespace
    const generated = (meta.name === undefined || meta.name === "") && typeof meta.generateName === "string" && meta.generateName !== ""
    if (generated) meta.name = `${String(meta.generateName).slice(0, 58)}${generateSuffix()}`
    if (!opts.internal) this.checkNamespace(info, ns, meta.name ?? "", true)
    meta.uid = randomUUID()
    meta.creationTimestamp = nowRfc3339()
    delete meta.deletionTimestamp
    delete meta.deletionGracePeriodSeconds
    const rvGiven = meta.resourceVersion !== undefined && meta.resourceVersion !== ""
    delete meta.resourceVersion
    const obj = this.typed(info, body)
    obj.apiVersion = apiVersionOf(info)
    obj.kind = info.kind
    applyCreateDefaults(info.kind, obj)
    if (!opts.internal) validateObject(info, obj)
    if (rvGiven) throw internalError("resourceVersion should not be set on objects to be created")
    for (let attempt = 0; this.store.get(info, ns, obj.metadata.name) !== undefined; attempt++) {
      if (!generated || attempt >= 7) throw alreadyExists(info, obj.metadata.name, generated)
      obj.metadata.name = `${String(meta.generateName).slice(0, 58)}${generateSuffix()}`
    }
    if (info.kind === "Service") this.allocateServiceIPs(obj)
    if (opts.dryRun) return obj
    if (info.kind === "Service") for (const ip of obj.spec.clusterIPs ?? []) if (ip !== "None") this.usedIPs.add(ip)
    return this.store.create(info, obj)
  }

  /** PUT semantics. `subresource` "status" replaces only the status. */
  update(info: ResourceInfo, namespace: string, name: string, rawBody: unknown, subresource: string, opts: WriteOptions = {}): Obj {
    const body = clone(this.checkBody(info, rawBody))
    this.prune(info, body, opts)
    const old = this.get(info, namespace, name)
    const meta: Obj = isObj(body.metadata) ? body.metadata : {}
    if (meta.name !== undefined && meta.name !== name) {
      throw badRequest(`the name of the object (${String(meta.name)}) does not match the name on the URL (${name})`)
    }
    if (info.namespaced && meta.namespace !== undefined && meta.namespace !== "" && meta.namespace !== old.metadata.namespace) {
      throw badRequest("the namespace of the provided object does not match the namespace sent on the request")
    }
    if (meta.resourceVersion !== undefined && meta.resourceVersion !== "" && meta.resourceVersion !== old.metadata.resourceVersion) {
      throw conflict(info, name)
    }
    let next: Obj
    if (subresource === "status") {
      next = clone(old)
      next.status = body.status
    } else {
      next = this.typed(info, body)
      next.apiVersion = apiVersionOf(info)
      next.kind = info.kind
      next.metadata = { ...meta }
      if (info.hasStatus && !opts.internal) next.status = clone(old.status)
    }
    for (const k of ["uid", "creationTimestamp", "namespace", "name"] as const) {
      if (old.metadata[k] !== undefined) next.metadata[k] = old.metadata[k]
    }
    if (!opts.internal) {
      for (const k of ["deletionTimestamp", "deletionGracePeriodSeconds"] as const) {
        if (old.metadata[k] !== undefined) next.metadata[k] = old.metadata[k]
        else delete next.metadata[k]
      }
    }
    next.metadata.resourceVersion = old.metadata.resourceVersion
    if (subresource !== "status") applyUpdateDefaults(info.kind, next)
    if (!opts.internal) {
      if (info.kind === "Service" && subresource !== "status") this.keepServiceIPs(old, next)
      validateObject(info, next)
      this.checkImmutable(info, old, next)
    }
    if (opts.dryRun) return next
    if (next.metadata.deletionTimestamp !== undefined && (next.metadata.finalizers ?? []).length === 0) {
      return this.removeNow(info, next)
    }
    return this.store.update(info, next, old)
  }

  private keepServiceIPs(old: Obj, next: Obj) {
    next.spec ??= {}
    if (next.spec.clusterIP === undefined || next.spec.clusterIP === "") next.spec.clusterIP = old.spec?.clusterIP
    if (next.spec.clusterIPs === undefined) next.spec.clusterIPs = old.spec?.clusterIPs
    if (next.spec.clusterIP !== old.spec?.clusterIP) {
      throw invalid("Service", "", old.metadata.name, [{ type: "Invalid value", field: "spec.clusterIPs[0]", value: next.spec.clusterIP, detail: "may not change once set" }])
    }
  }

  private checkImmutable(info: ResourceInfo, old: Obj, next: Obj) {
    const errs: Array<FieldError> = []
    if (info.kind === "Pod") {
      if (!sameIgnoringAllowed(old.spec, next.spec)) {
        errs.push({
          type: "Forbidden",
          field: "spec",
          detail: "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
        })
      }
    }
    if (info.kind === "PersistentVolumeClaim") {
      const strip = (spec: Obj) => {
        const s = clone(spec ?? {})
        delete s.resources
        delete s.volumeName
        return canonicalJson(s)
      }
      if (strip(old.spec) !== strip(next.spec)) {
        errs.push({ type: "Forbidden", field: "spec", detail: "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims" })
      }
    }
    if (errs.length > 0) throw invalid(info.kind, info.group, old.metadata.name, errs)
  }

  /** PATCH of any of the four types; server-side apply creates a missing object. */
  patch(
    info: ResourceInfo,
    namespace: string,
    name: string,
    contentType: string,
    text: string,
    subresource: string,
    params: { fieldManager?: string | undefined; dryRun?: boolean; fieldValidation?: string | undefined; warnings?: Array<string> },
    onCreate: () => void
  ): { obj: Obj; created: boolean } {
    const type = contentType.split(";")[0]!.trim().toLowerCase()
    if (![JsonPatch, MergePatch, StrategicMergePatch, ApplyPatchYaml].includes(type)) {
      throw unsupportedMediaType(
        `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json`
      )
    }
    let doc: unknown
    try {
      doc = type === ApplyPatchYaml ? parseYaml(text) : JSON.parse(text)
    } catch (e) {
      throw badRequest(`error decoding patch: ${(e as Error).message}`)
    }
    if (type === ApplyPatchYaml && (params.fieldManager === undefined || params.fieldManager === "")) {
      throw invalid("PatchOptions", "meta.k8s.io", "", [{ type: "Required value", field: "fieldManager", detail: "is required for apply patch" }])
    }
    const existing = this.store.get(info, info.namespaced ? namespace : "", name)
    if (existing === undefined) {
      if (type !== ApplyPatchYaml) throw notFound(info, name)
      onCreate()
      const body = this.checkBody(info, doc)
      if (body.metadata?.name !== undefined && body.metadata.name !== name) {
        throw badRequest(`the name of the object (${String(body.metadata.name)}) does not match the name on the URL (${name})`)
      }
      return { obj: this.create(info, namespace, { ...body, metadata: { ...(body.metadata ?? {}), name } }, { ...params, dryRun: params.dryRun === true }), created: true }
    }
    let patched: Obj
    switch (type) {
      case JsonPatch:
        patched = applyJsonPatch(existing, doc)
        break
      case MergePatch:
        if (!isObj(doc)) throw badRequest("json: cannot unmarshal array into Go value of type map[string]interface {}")
        patched = applyMergePatch(existing, doc) as Obj
        break
      default:
        if (type === ApplyPatchYaml) this.checkBody(info, doc)
        patched = applyStrategicMergePatch(existing, doc)
    }
    if (!isObj(patched.metadata)) patched.metadata = {}
    if (patched.metadata.resourceVersion === undefined) patched.metadata.resourceVersion = existing.metadata.resourceVersion
    return { obj: this.update(info, namespace, name, patched, subresource, { ...params, dryRun: params.dryRun === true }), created: false }
  }

  removeNow(info: ResourceInfo, obj: Obj): Obj {
    if (info.kind === "Service") for (const ip of obj.spec?.clusterIPs ?? []) this.usedIPs.delete(ip)
    return this.store.remove(info, obj)
  }

  delete(info: ResourceInfo, namespace: string, name: string, opts: DeleteOptions = {}): DeleteResult {
    const old = this.get(info, namespace, name)
    const pre = opts.preconditions
    if (pre?.uid !== undefined && pre.uid !== old.metadata.uid) {
      throw conflict(info, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`)
    }
    if (pre?.resourceVersion !== undefined && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw conflict(info, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${old.metadata.resourceVersion}`)
    }
    const answer = (obj: Obj, removed: boolean): DeleteResult => ({
      code: 200,
      body: info.returnDeletedObject ? obj : success(info, name, old.metadata.uid),
      removed
    })
    if (info.kind === "Pod") {
      let grace = opts.gracePeriodSeconds ?? old.spec?.terminationGracePeriodSeconds ?? 30
      const phase = old.status?.phase
      if (!old.spec?.nodeName || phase === "Succeeded" || phase === "Failed") grace = 0
      if (grace < 0) grace = 1
      if (grace > 0) {
        const current = old.metadata.deletionGracePeriodSeconds
        if (current !== undefined && current <= grace) return answer(old, false)
        const next = clone(old)
        next.metadata.deletionTimestamp = nowRfc3339(grace)
        next.metadata.deletionGracePeriodSeconds = grace
        if (opts.dryRun) return answer(next, false)
        return answer(this.store.update(info, next, old), false)
      }
      if (opts.dryRun) return answer(old, true)
      return answer(this.removeNow(info, old), true)
    }
    if (info.kind === "Namespace" || (old.metadata.finalizers ?? []).length > 0) {
      if (old.metadata.deletionTimestamp !== undefined) return answer(old, false)
      const next = clone(old)
      next.metadata.deletionTimestamp = nowRfc3339()
      next.metadata.deletionGracePeriodSeconds = 0
      if (info.kind === "Namespace") next.status = { ...(next.status ?? {}), phase: "Terminating" }
      if (opts.dryRun) return answer(next, false)
      return answer(this.store.update(info, next, old), false)
    }
    if (opts.dryRun) return answer(old, true)
    return answer(this.removeNow(info, old), true)
  }
}

const canonicalJson = (v: unknown): string => JSON.stringify(sortDeep(v))
const sortDeep = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(sortDeep)
  if (isObj(v)) return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortDeep(v[k])]))
  return v
}
const sameIgnoringAllowed = (a: Obj, b: Obj) => {
  const strip = (spec: Obj) => {
    const s = clone(spec ?? {})
    for (const c of s.containers ?? []) delete c.image
    for (const c of s.initContainers ?? []) delete c.image
    delete s.activeDeadlineSeconds
    delete s.tolerations
    delete s.terminationGracePeriodSeconds
    return canonicalJson(s)
  }
  return strip(a) === strip(b)
}
