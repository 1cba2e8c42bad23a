// What this agent can host, as `hello` and heartbeats report it: from the namespace's ResourceQuotas when
// one limits cpu and memory, else MAX_SESSIONS sessions at the default size.
import type { Capacity } from "@streamspace/protocol"
import { parseQuantity } from "@streamspace/protocol"
import { Effect } from "effect"
import type { AgentConfigShape } from "../AgentConfig.ts"
import type { KubernetesError } from "./kubeError.ts"

type CapacityConfig = Pick<AgentConfigShape, "maxSessions" | "sessionDefaultCpu" | "sessionDefaultMemory">

/** Kubernetes quantity for `value` base units: millicores for CPU, the largest exact binary unit for bytes. */
const formatCpu = (cores: number): string => `${Math.round(cores * 1000)}m`
const formatBytes = (bytes: number): string => {
  for (const [unit, f] of [["Ti", 2 ** 40], ["Gi", 2 ** 30], ["Mi", 2 ** 20], ["Ki", 2 ** 10]] as const) {
    if (bytes >= f && Number.isInteger(bytes / f)) return `${bytes / f}${unit}`
  }
  return String(Math.round(bytes))
}

/** Capacity from ResourceQuota `hard` lists (the tightest wins), or undefined when none limits cpu and memory. */
export const capacityFromQuotas = (
  quotas: ReadonlyArray<{ readonly hard?: Readonly<Record<string, string>> }>,
  maxSessions: number
): Capacity | undefined => {
  let cpu: number | undefined
  let memory: number | undefined
  let pods: number | undefined
  const min = (a: number | undefined, q: string | undefined) => {
    const v = q === undefined ? undefined : parseQuantity(q)
    return v === undefined ? a : a === undefined ? v : Math.min(a, v)
  }
  for (const q of quotas) {
    const h = q.hard ?? {}
    cpu = min(cpu, h["requests.cpu"] ?? h["cpu"])
    memory = min(memory, h["requests.memory"] ?? h["memory"])
    pods = min(pods, h["pods"])
  }
  if (cpu === undefined || memory === undefined) return undefined
  return { cpu: formatCpu(cpu), memory: formatBytes(memory), max_sessions: Math.min(maxSessions, pods ?? maxSessions) }
}

/** The fallback when no quota is readable: what MAX_SESSIONS sessions at the default size would use. */
export const capacityFromConfig = (config: CapacityConfig): Capacity => ({
  cpu: formatCpu((parseQuantity(config.sessionDefaultCpu) ?? 1) * config.maxSessions),
  memory: formatBytes((parseQuantity(config.sessionDefaultMemory) ?? 2 ** 31) * config.maxSessions),
  max_sessions: config.maxSessions
})

/** Capacity from the quotas `listQuotas` reads; once they are known to be unreadable (403, 404) they are not asked for again. */
export const makeCapacity = (
  config: CapacityConfig,
  listQuotas: Effect.Effect<ReadonlyArray<{ readonly hard?: Readonly<Record<string, string>> }>, KubernetesError>
): Effect.Effect<Capacity> => {
  let quotaReadable = true
  return Effect.gen(function*() {
    const fallback = capacityFromConfig(config)
    if (!quotaReadable) return fallback
    const quotas = yield* listQuotas.pipe(
      Effect.catch((e) =>
        Effect.gen(function*() {
          if (e.reason === "Forbidden" || e.reason === "NotFound") {
            quotaReadable = false
            yield* Effect.logInfo(`capacity from MAX_SESSIONS x session defaults: resource quotas are not readable (${e.message})`)
          }
          return []
        })
      )
    )
    return capacityFromQuotas(quotas, config.maxSessions) ?? fallback
  }).pipe(Effect.withSpan("Kubernetes.capacity"))
}
