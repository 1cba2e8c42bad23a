// Label and field selectors (k8s.io/apimachinery/pkg/labels and pkg/fields), parsed from query strings.
import { badRequest } from "./status.ts"

type Requirement =
  | { readonly op: "eq" | "neq"; readonly key: string; readonly value: string }
  | { readonly op: "in" | "notin"; readonly key: string; readonly values: ReadonlyArray<string> }
  | { readonly op: "exists" | "notexists"; readonly key: string }

export type LabelSelector = ReadonlyArray<Requirement>

const keyRe = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/
const valueRe = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/

const bad = (why: string) => badRequest(`unable to parse requirement: ${why}`)

const checkKey = (key: string) => {
  if (!keyRe.test(key)) throw bad(`<nil>: Invalid value: "${key}": invalid label key "${key}"`)
}
const checkValue = (v: string) => {
  if (v.length > 63 || !valueRe.test(v)) throw bad(`values[0]: Invalid value: "${v}": invalid label value`)
}

/** Splits on top-level commas (commas inside `( )` belong to set expressions). */
const splitTop = (s: string): Array<string> => {
  const out: Array<string> = []
  let depth = 0
  let cur = ""
  for (const ch of s) {
    if (ch === "(") depth++
    if (ch === ")") depth--
    if (ch === "," && depth === 0) {
      out.push(cur)
      cur = ""
    } else cur += ch
  }
  out.push(cur)
  return out
}

export const parseLabelSelector = (raw: string | null | undefined): LabelSelector => {
  if (raw === null || raw === undefined) return []
  const sel = raw.trim()
  if (sel === "") return []
  const reqs: Array<Requirement> = []
  for (const partRaw of splitTop(sel)) {
    const part = partRaw.trim()
    if (part === "") throw badRequest(`found '', expected: !, identifier, or 'end of string'`)
    let m: RegExpExecArray | null
    if ((m = /^(\S+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(part)) !== null) {
      const key = m[1]!
      checkKey(key)
      const values = m[3]!.split(",").map((v) => v.trim())
      if (m[2] === "in" && values.length === 1 && values[0] === "") throw badRequest(`unable to parse requirement: for 'in', 'notin' operators, values set can't be empty`)
      for (const v of values) checkValue(v)
      reqs.push({ op: m[2] as "in" | "notin", key, values })
    } else if ((m = /^([^!=\s]+)\s*(==|=|!=)\s*(\S*)$/.exec(part)) !== null) {
      const key = m[1]!
      checkKey(key)
      checkValue(m[3]!)
      reqs.push({ op: m[2] === "!=" ? "neq" : "eq", key, value: m[3]! })
    } else if ((m = /^!\s*(\S+)$/.exec(part)) !== null) {
      checkKey(m[1]!)
      reqs.push({ op: "notexists", key: m[1]! })
    } else if (/^\S+$/.test(part)) {
      checkKey(part)
      reqs.push({ op: "exists", key: part })
    } else {
      throw badRequest(`unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt`)
    }
  }
  return reqs
}

export const matchesLabels = (sel: LabelSelector, labels: Record<string, string> | undefined): boolean => {
  const l = labels ?? {}
  for (const r of sel) {
    const has = Object.prototype.hasOwnProperty.call(l, r.key)
    const v = l[r.key]
    switch (r.op) {
      case "eq":
        if (!has || v !== r.value) return false
        break
      case "neq":
        if (has && v === r.value) return false
        break
      case "in":
        if (!has || !r.values.includes(v!)) return false
        break
      case "notin":
        if (has && r.values.includes(v!)) return false
        break
      case "exists":
        if (!has) return false
        break
      case "notexists":
        if (has) return false
        break
    }
  }
  return true
}

export interface FieldRequirement {
  readonly field: string
  readonly op: "eq" | "neq"
  readonly value: string
}
export type FieldSelector = ReadonlyArray<FieldRequirement>

export const parseFieldSelector = (raw: string | null | undefined, supported: ReadonlyArray<string>): FieldSelector => {
  if (raw === null || raw === undefined || raw.trim() === "") return []
  const out: Array<FieldRequirement> = []
  for (const partRaw of raw.split(",")) {
    const part = partRaw.trim()
    const m = /^([^!=]+)(==|=|!=)(.*)$/.exec(part)
    if (m === null) throw badRequest(`invalid selector: '${raw}'; can't understand '${part}'`)
    const field = m[1]!.trim()
    if (!supported.includes(field)) throw badRequest(`field label not supported: ${field}`)
    out.push({ field, op: m[2] === "!=" ? "neq" : "eq", value: m[3]!.trim() })
  }
  return out
}

const fieldValue = (obj: any, field: string): string => {
  switch (field) {
    case "status.podIPs":
      return (obj?.status?.podIPs ?? []).map((p: any) => p.ip).join(",")
    case "spec.hostNetwork":
      return String(obj?.spec?.hostNetwork === true)
    default: {
      let cur = obj
      for (const k of field.split(".")) cur = cur?.[k]
      return cur === undefined || cur === null ? "" : String(cur)
    }
  }
}

export const matchesFields = (sel: FieldSelector, obj: unknown): boolean => {
  for (const r of sel) {
    const v = fieldValue(obj, r.field)
    if (r.field === "status.podIPs" && r.op === "eq") {
      if (!v.split(",").includes(r.value)) return false
      continue
    }
    if (r.op === "eq" ? v !== r.value : v === r.value) return false
  }
  return true
}

/** The name a `metadata.name=X` field selector pins, for RBAC resourceNames. */
export const selectedName = (sel: FieldSelector): string | undefined =>
  sel.find((r) => r.field === "metadata.name" && r.op === "eq")?.value
