// Validation of written objects: the structural pass from the official OpenAPI schemas (kubernetes-models)
// plus the hand-written subset of apiserver rules (pkg/apis/core/validation) with the server's exact texts.
import { ConfigMap } from "kubernetes-models/v1/ConfigMap"
import { Event } from "kubernetes-models/v1/Event"
import { Namespace } from "kubernetes-models/v1/Namespace"
import { PersistentVolumeClaim } from "kubernetes-models/v1/PersistentVolumeClaim"
import { Pod } from "kubernetes-models/v1/Pod"
import { Secret } from "kubernetes-models/v1/Secret"
import { Service } from "kubernetes-models/v1/Service"
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount"
import { ClusterRole } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole"
import { ClusterRoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding"
import { Role } from "kubernetes-models/rbac.authorization.k8s.io/v1/Role"
import { RoleBinding } from "kubernetes-models/rbac.authorization.k8s.io/v1/RoleBinding"
import { ApiError, badRequest, type FieldError, invalid } from "./status.ts"
import type { ResourceInfo } from "./resources.ts"
import type { Obj } from "./store.ts"

// Go's RegexError: note the two spaces before "or" (the "', " + " or " join).
const regexError = (msg: string, re: string, ...examples: Array<string>) =>
  `${msg} (e.g. ${examples.map((e) => `'${e}'`).join(",  or ")}, regex used for validation is '${re}')`

const dns1123LabelRe = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
const dns1123SubdomainRe = `${dns1123LabelRe}(\\.${dns1123LabelRe})*`
const dns1035LabelRe = "[a-z]([-a-z0-9]*[a-z0-9])?"
const qualifiedNameRe = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
const labelValueRe = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
const full = (re: string) => new RegExp(`^(?:${re})$`)

const maxLen = (n: number) => `must be no more than ${n} characters`

export const isDNS1123Subdomain = (v: string): Array<string> => {
  const errs: Array<string> = []
  if (v.length > 253) errs.push(maxLen(253))
  if (!full(dns1123SubdomainRe).test(v)) {
    errs.push(regexError("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character", dns1123SubdomainRe, "example.com"))
  }
  return errs
}

export const isDNS1123Label = (v: string): Array<string> => {
  const errs: Array<string> = []
  if (v.length > 63) errs.push(maxLen(63))
  if (!full(dns1123LabelRe).test(v)) {
    errs.push(regexError("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character", dns1123LabelRe, "my-name", "123-abc"))
  }
  return errs
}

export const isDNS1035Label = (v: string): Array<string> => {
  const errs: Array<string> = []
  if (v.length > 63) errs.push(maxLen(63))
  if (!full(dns1035LabelRe).test(v)) {
    errs.push(regexError("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character", dns1035LabelRe, "my-name", "abc-123"))
  }
  return errs
}

const isQualifiedName = (v: string): Array<string> => {
  const parts = v.split("/")
  let name = v
  const errs: Array<string> = []
  if (parts.length === 2) {
    const [prefix, n] = parts as [string, string]
    name = n
    if (prefix.length === 0) errs.push("prefix part must be non-empty")
    else for (const m of isDNS1123Subdomain(prefix)) errs.push(`prefix part ${m}`)
  } else if (parts.length > 2) {
    return [regexError("a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", qualifiedNameRe, "MyName", "my.name", "123-abc") + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
  }
  if (name.length === 0) errs.push("name part must be non-empty")
  else if (name.length > 63) errs.push(`name part ${maxLen(63)}`)
  if (name.length > 0 && !full(qualifiedNameRe).test(name)) {
    errs.push(`name part ${regexError("must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", qualifiedNameRe, "MyName", "my.name", "123-abc")}`)
  }
  return errs
}

const isLabelValue = (v: string): Array<string> => {
  const errs: Array<string> = []
  if (v.length > 63) errs.push(maxLen(63))
  if (!full(labelValueRe).test(v)) {
    errs.push(regexError("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character", labelValueRe, "MyValue", "my_value", "12345"))
  }
  return errs
}

const isValidPortName = (v: string): Array<string> => {
  const errs: Array<string> = []
  if (v.length > 15) errs.push(maxLen(15))
  if (!/^[-a-z0-9]+$/.test(v)) errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
  if (v.includes("--")) errs.push("must not contain consecutive hyphens")
  if (!/[a-z]/.test(v)) errs.push("must contain at least one letter (a-z)")
  if (v.startsWith("-") || v.endsWith("-")) errs.push("must not begin or end with a hyphen")
  return errs
}

const portRange = "must be between 1 and 65535, inclusive"

type Errs = Array<FieldError>

const nameValidator = (info: ResourceInfo): (v: string) => Array<string> => {
  switch (info.kind) {
    case "Service":
      return isDNS1035Label
    case "Namespace":
      return isDNS1123Label
    case "Role":
    case "RoleBinding":
    case "ClusterRole":
    case "ClusterRoleBinding":
      return (v) => (v.includes("/") || v.includes("%") || v === "." || v === ".." ? [`may not contain '/' or '%'`] : [])
    default:
      return isDNS1123Subdomain
  }
}

const validateMeta = (info: ResourceInfo, obj: Obj, errs: Errs) => {
  const meta = obj.metadata ?? {}
  const validName = nameValidator(info)
  if (typeof meta.name !== "string" || meta.name === "") {
    errs.push({ type: "Required value", field: "metadata.name", detail: "name or generateName is required" })
  } else {
    for (const m of validName(meta.name)) errs.push({ type: "Invalid value", field: "metadata.name", value: meta.name, detail: m })
  }
  const labels = meta.labels ?? {}
  for (const [k, v] of Object.entries(labels)) {
    for (const m of isQualifiedName(k)) errs.push({ type: "Invalid value", field: "metadata.labels", value: k, detail: m })
    if (typeof v === "string") for (const m of isLabelValue(v)) errs.push({ type: "Invalid value", field: "metadata.labels", value: v, detail: m })
  }
  for (const k of Object.keys(meta.annotations ?? {})) {
    for (const m of isQualifiedName(k.toLowerCase())) errs.push({ type: "Invalid value", field: "metadata.annotations", value: k, detail: m })
  }
}

const validateContainers = (list: unknown, path: string, errs: Errs, required: boolean) => {
  if (!Array.isArray(list) || list.length === 0) {
    if (required) errs.push({ type: "Required value", field: path })
    return
  }
  const names = new Set<string>()
  list.forEach((c: Obj, i: number) => {
    const p = `${path}[${i}]`
    if (typeof c?.name !== "string" || c.name === "") errs.push({ type: "Required value", field: `${p}.name` })
    else {
      for (const m of isDNS1123Label(c.name)) errs.push({ type: "Invalid value", field: `${p}.name`, value: c.name, detail: m })
      if (names.has(c.name)) errs.push({ type: "Duplicate value", field: `${p}.name`, value: c.name })
      names.add(c.name)
    }
    if (typeof c?.image !== "string" || c.image.trim() === "") errs.push({ type: "Required value", field: `${p}.image` })
    const portNames = new Set<string>()
    ;(Array.isArray(c?.ports) ? c.ports : []).forEach((port: Obj, j: number) => {
      const pp = `${p}.ports[${j}]`
      if (typeof port.name === "string" && port.name !== "") {
        for (const m of isValidPortName(port.name)) errs.push({ type: "Invalid value", field: `${pp}.name`, value: port.name, detail: m })
        if (portNames.has(port.name)) errs.push({ type: "Duplicate value", field: `${pp}.name`, value: port.name })
        portNames.add(port.name)
      }
      if (port.containerPort === undefined || port.containerPort === 0) errs.push({ type: "Required value", field: `${pp}.containerPort` })
      else if (typeof port.containerPort === "number" && (port.containerPort < 1 || port.containerPort > 65535)) {
        errs.push({ type: "Invalid value", field: `${pp}.containerPort`, value: port.containerPort, detail: portRange })
      }
      if (typeof port.hostPort === "number" && port.hostPort !== 0 && (port.hostPort < 1 || port.hostPort > 65535)) {
        errs.push({ type: "Invalid value", field: `${pp}.hostPort`, value: port.hostPort, detail: portRange })
      }
    })
  })
}

const validatePod = (obj: Obj, errs: Errs) => {
  const spec = obj.spec ?? {}
  const vols = new Set<string>()
  ;(Array.isArray(spec.volumes) ? spec.volumes : []).forEach((v: Obj, i: number) => {
    const p = `spec.volumes[${i}]`
    if (typeof v?.name !== "string" || v.name === "") errs.push({ type: "Required value", field: `${p}.name` })
    else {
      for (const m of isDNS1123Label(v.name)) errs.push({ type: "Invalid value", field: `${p}.name`, value: v.name, detail: m })
      if (vols.has(v.name)) errs.push({ type: "Duplicate value", field: `${p}.name`, value: v.name })
      vols.add(v.name)
    }
    if (v?.persistentVolumeClaim !== undefined && (typeof v.persistentVolumeClaim.claimName !== "string" || v.persistentVolumeClaim.claimName === "")) {
      errs.push({ type: "Required value", field: `${p}.persistentVolumeClaim.claimName` })
    }
  })
  validateContainers(spec.containers, "spec.containers", errs, true)
  validateContainers(spec.initContainers, "spec.initContainers", errs, false)
  for (const [field, list] of [["spec.containers", spec.containers], ["spec.initContainers", spec.initContainers]] as const) {
    ;(Array.isArray(list) ? list : []).forEach((c: Obj, i: number) => {
      ;(Array.isArray(c?.volumeMounts) ? c.volumeMounts : []).forEach((vm: Obj, j: number) => {
        if (typeof vm?.name === "string" && !vols.has(vm.name)) {
          errs.push({ type: "Not found", field: `${field}[${i}].volumeMounts[${j}].name`, value: vm.name })
        }
      })
    })
  }
  if (typeof spec.terminationGracePeriodSeconds === "number" && spec.terminationGracePeriodSeconds < 0) {
    errs.push({ type: "Invalid value", field: "spec.terminationGracePeriodSeconds", value: spec.terminationGracePeriodSeconds, detail: "must be greater than or equal to 0" })
  }
}

const validateService = (obj: Obj, errs: Errs) => {
  const spec = obj.spec ?? {}
  const ports: Array<Obj> = Array.isArray(spec.ports) ? spec.ports : []
  const headless = spec.clusterIP === "None"
  if (ports.length === 0 && !headless && spec.type !== "ExternalName") errs.push({ type: "Required value", field: "spec.ports" })
  const names = new Set<string>()
  ports.forEach((p: Obj, i: number) => {
    const pp = `spec.ports[${i}]`
    if (ports.length > 1 && (typeof p.name !== "string" || p.name === "")) errs.push({ type: "Required value", field: `${pp}.name` })
    else if (typeof p.name === "string" && p.name !== "") {
      for (const m of isDNS1123Label(p.name)) errs.push({ type: "Invalid value", field: `${pp}.name`, value: p.name, detail: m })
      if (names.has(p.name)) errs.push({ type: "Duplicate value", field: `${pp}.name`, value: p.name })
      names.add(p.name)
    }
    const port = typeof p.port === "number" ? p.port : 0
    if (port < 1 || port > 65535) errs.push({ type: "Invalid value", field: `${pp}.port`, value: port, detail: portRange })
    // A defaulted targetPort (= port) is reported once, on port, as in the reference output.
    if (typeof p.targetPort === "number" && p.targetPort !== port && (p.targetPort < 1 || p.targetPort > 65535)) {
      errs.push({ type: "Invalid value", field: `${pp}.targetPort`, value: p.targetPort, detail: portRange })
    } else if (typeof p.targetPort === "string") {
      for (const m of isValidPortName(p.targetPort)) errs.push({ type: "Invalid value", field: `${pp}.targetPort`, value: p.targetPort, detail: m })
    }
  })
}

const accessModes = ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]

const validatePvc = (obj: Obj, errs: Errs) => {
  const spec = obj.spec ?? {}
  const modes: Array<unknown> = Array.isArray(spec.accessModes) ? spec.accessModes : []
  if (modes.length === 0) errs.push({ type: "Required value", field: "spec.accessModes", detail: "at least 1 access mode is required" })
  for (const m of modes) {
    if (typeof m === "string" && !accessModes.includes(m)) {
      errs.push({ type: "Unsupported value", field: "spec.accessModes", value: m, detail: `supported values: ${accessModes.map((a) => JSON.stringify(a)).join(", ")}` })
    }
  }
  if (spec.resources?.requests?.storage === undefined) errs.push({ type: "Required value", field: "spec.resources[storage]" })
}

const quantityRe = /^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$/
const quantityMsg = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"

const cannotHandle = (info: ResourceInfo, why: string) =>
  badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: ${why}`)

const checkQuantities = (info: ResourceInfo, obj: Obj) => {
  const lists: Array<unknown> = []
  if (info.kind === "Pod") for (const c of [...(obj.spec?.containers ?? []), ...(obj.spec?.initContainers ?? [])]) lists.push(c?.resources?.requests, c?.resources?.limits)
  if (info.kind === "PersistentVolumeClaim") lists.push(obj.spec?.resources?.requests, obj.spec?.resources?.limits)
  for (const l of lists) {
    if (l === null || typeof l !== "object") continue
    for (const q of Object.values(l as Record<string, unknown>)) {
      if (typeof q === "string" && !quantityRe.test(q)) throw cannotHandle(info, quantityMsg)
    }
  }
}

// deno-lint-ignore no-explicit-any
const models: Record<string, new (o: any) => { validate(): void }> = {
  Pod,
  Service,
  PersistentVolumeClaim,
  Secret,
  ConfigMap,
  Event,
  Namespace,
  ServiceAccount,
  Role,
  RoleBinding,
  ClusterRole,
  ClusterRoleBinding
}

const goTypes: Record<string, string> = { integer: "int32", number: "float64", string: "string", boolean: "bool", object: "struct", array: "slice" }
const jsType = (v: unknown) => Array.isArray(v) ? "array" : v === null ? "null" : typeof v === "object" ? "object" : typeof v

const pointerToField = (ptr: string) => {
  let out = ""
  for (const seg of ptr.split("/").slice(1)) {
    if (/^\d+$/.test(seg)) out += `[${seg}]`
    else out += out === "" ? seg : `.${seg}`
  }
  return out
}

const at = (obj: unknown, ptr: string): unknown => {
  let cur: any = obj
  for (const seg of ptr.split("/").slice(1)) cur = cur?.[seg]
  return cur
}

interface AjvError {
  instancePath: string
  keyword: string
  params: Record<string, any>
  message?: string
}

/** The structural pass; type errors are decode errors (400) on a real server, the rest are 422 causes. */
const structural = (info: ResourceInfo, obj: Obj, errs: Errs) => {
  const Model = models[info.kind]
  if (Model === undefined) return
  let ajvErrors: Array<AjvError> = []
  try {
    new Model(obj).validate()
  } catch (e) {
    ajvErrors = ((e as { errors?: Array<AjvError> }).errors) ?? []
  }
  for (const e of ajvErrors) {
    if (e.keyword === "type") {
      const value = at(obj, e.instancePath)
      const goPath = pointerToField(e.instancePath).replace(/\[\d+\]/g, "")
      const want = goTypes[String(e.params.type).split(",")[0]!] ?? String(e.params.type)
      throw cannotHandle(info, `json: cannot unmarshal ${jsType(value) === "object" ? "object" : jsType(value)} into Go struct field ${info.kind}.${goPath} of type ${want}`)
    }
  }
  for (const e of ajvErrors) {
    if (e.keyword === "required") {
      const base = pointerToField(e.instancePath)
      errs.push({ type: "Required value", field: base === "" ? e.params.missingProperty : `${base}.${e.params.missingProperty}` })
    } else if (e.keyword === "enum") {
      const allowed: Array<unknown> = e.params.allowedValues ?? []
      errs.push({
        type: "Unsupported value",
        field: pointerToField(e.instancePath),
        value: at(obj, e.instancePath),
        detail: `supported values: ${allowed.map((a) => JSON.stringify(a)).join(", ")}`
      })
    }
  }
}

/** Throws the 400/422 ApiError a real apiserver would answer for this object, or returns. */
export const validateObject = (info: ResourceInfo, obj: Obj): void => {
  checkQuantities(info, obj)
  const errs: Errs = []
  validateMeta(info, obj, errs)
  structural(info, obj, errs)
  if (info.kind === "Pod") validatePod(obj, errs)
  if (info.kind === "Service") validateService(obj, errs)
  if (info.kind === "PersistentVolumeClaim") validatePvc(obj, errs)
  if (errs.length === 0) return
  const seen = new Set<string>()
  const unique = errs.filter((e) => {
    const k = `${e.field}|${e.type}|${JSON.stringify(e.value)}|${e.detail ?? ""}`
    if (seen.has(k)) return false
    seen.add(k)
    return true
  })
  throw invalid(info.kind, info.group, obj.metadata?.name ?? "", unique)
}

export const isApiError = (e: unknown): e is ApiError => e instanceof ApiError
