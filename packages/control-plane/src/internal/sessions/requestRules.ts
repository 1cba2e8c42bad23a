// What a session or template request may ask for, beyond its shape: bounded `env` (one user's 900 KiB values
// once grew the control plane by a gigabyte), no user env over the variables the platform sets, and resources
// that are quantities above zero. Resource bounds against a template are checked in `resourceBounds.ts`.
import { EnvVars, parseQuantity, Quantity } from "@streamspace/protocol"
import { Schema } from "effect"

/** Most variables in one request's `env`. */
export const MAX_ENV_VARS = 64
/** Longest variable name, in characters. */
export const MAX_ENV_NAME_CHARS = 256
/** Largest value, in UTF-8 bytes. */
export const MAX_ENV_VALUE_BYTES = 32 * 1024
/** Largest `env` altogether (names and values), in UTF-8 bytes. */
export const MAX_ENV_TOTAL_BYTES = 64 * 1024

/** Prefixes of the variables the platform sets in a session (the agent's and the desktop image's); a user may not set them. */
export const RESERVED_ENV_PREFIXES: ReadonlyArray<string> = ["STREAMSPACE_", "VNC_"]

const utf8 = (s: string) => Buffer.byteLength(s, "utf8")

const envIssue = (env: { readonly [k: string]: string }) => {
  const names = Object.keys(env)
  if (names.length > MAX_ENV_VARS) return `env has ${names.length} variables; at most ${MAX_ENV_VARS} are allowed`
  let total = 0
  for (const name of names) {
    if (name.length > MAX_ENV_NAME_CHARS) {
      return { path: [name.slice(0, 64)], issue: `environment variable name is ${name.length} characters; at most ${MAX_ENV_NAME_CHARS} are allowed` }
    }
    const size = utf8(env[name]!)
    if (size > MAX_ENV_VALUE_BYTES) return { path: [name], issue: `value is ${size} bytes; at most ${MAX_ENV_VALUE_BYTES} are allowed` }
    total += utf8(name) + size
  }
  return total > MAX_ENV_TOTAL_BYTES ? `env is ${total} bytes (names and values); at most ${MAX_ENV_TOTAL_BYTES} are allowed` : undefined
}

/** Environment variables an admin may put in a template: valid names, bounded count and sizes. */
export const TemplateEnv = EnvVars.pipe(Schema.check(Schema.makeFilter(envIssue)))

/** Environment variables a user may ask for: a template's rules, and none the platform sets. */
export const UserEnv = TemplateEnv.pipe(
  Schema.check(
    Schema.makeFilter((env: { readonly [k: string]: string }) => {
      const reserved = Object.keys(env).find((k) => RESERVED_ENV_PREFIXES.some((p) => k.toUpperCase().startsWith(p)))
      return reserved === undefined
        ? undefined
        : { path: [reserved], issue: `"${reserved}" is reserved: variables starting with ${RESERVED_ENV_PREFIXES.join(" or ")} are set by the platform` }
    })
  )
)

/** A quantity above zero: `cpu: "0"` or `memory: "0"` would leave the pod without a request or a memory limit. */
const PositiveQuantity = Quantity.pipe(
  Schema.check(Schema.makeFilter((q: string) => ((parseQuantity(q) ?? 0) > 0 ? undefined : "must be greater than zero")))
)

/** Requested resources: quantities above zero. */
export const RequestResources = Schema.Struct({
  cpu: Schema.optionalKey(PositiveQuantity),
  memory: Schema.optionalKey(PositiveQuantity)
})

const Bound = Schema.Struct({
  cpu: Schema.optionalKey(PositiveQuantity),
  memory: Schema.optionalKey(PositiveQuantity)
})

/** A template's bounds on what a session made from it may request (`min`, `max`, each per resource). */
export const ResourceBounds = Schema.Struct({
  min: Schema.optionalKey(Bound),
  max: Schema.optionalKey(Bound)
}).pipe(
  Schema.check(Schema.makeFilter((b: { readonly min?: { readonly cpu?: string; readonly memory?: string }; readonly max?: { readonly cpu?: string; readonly memory?: string } }) => {
    for (const r of ["cpu", "memory"] as const) {
      const lo = b.min?.[r]
      const hi = b.max?.[r]
      if (lo !== undefined && hi !== undefined && parseQuantity(lo)! > parseQuantity(hi)!) {
        return { path: ["min", r], issue: `min ${r} ${lo} is above max ${r} ${hi}` }
      }
    }
    return undefined
  }))
)
export type ResourceBounds = typeof ResourceBounds.Type
