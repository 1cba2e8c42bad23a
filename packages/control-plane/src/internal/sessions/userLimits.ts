// Per-user limits on sessions: how many live sessions one user may hold, and how many creates they may make in
// any minute (a sliding window of the creates admitted, per control-plane replica). One user filling the only
// agent, or flooding creates, must not deny service to everyone else. Admins are not limited.
import { parseQuantity } from "@streamspace/protocol"
import type { Resources } from "@streamspace/protocol"
import type { TemplateRecord } from "../../Store.ts"

const MINUTE_MS = 60_000

/** Why a create was refused: the setting that limits it, a message naming it, and when to retry (rate only). */
export interface LimitRefusal {
  readonly limit: string
  readonly message: string
  readonly retryAfterSeconds?: number | undefined
}

/** Creates admitted per user in the last minute; `admit` records one when the user is under `perMinute`. */
export const makeCreateRate = (perMinute: number) => {
  const recent = new Map<string, Array<number>>()
  return {
    admit: (userId: string, now: number): LimitRefusal | undefined => {
      if (perMinute <= 0) return undefined
      const times = (recent.get(userId) ?? []).filter((t) => t > now - MINUTE_MS)
      if (times.length >= perMinute) {
        recent.set(userId, times)
        const retryAfterSeconds = Math.max(1, Math.ceil((times[0]! + MINUTE_MS - now) / 1000))
        return {
          limit: "SESSION_CREATES_PER_MINUTE",
          message: `too many session creates: at most ${perMinute} per minute per user (SESSION_CREATES_PER_MINUTE); retry in ${retryAfterSeconds} s`,
          retryAfterSeconds
        }
      }
      times.push(now)
      recent.set(userId, times)
      // Forget users idle for a minute, so the map holds only recent creators.
      if (recent.size > 1024) for (const [u, ts] of recent) if (ts.every((t) => t <= now - MINUTE_MS)) recent.delete(u)
      return undefined
    }
  }
}

/** The refusal when a user already holds `live` sessions and may hold at most `max` (0 = no limit). */
export const sessionsRefusal = (live: number, max: number): LimitRefusal | undefined =>
  max > 0 && live >= max
    ? {
      limit: "MAX_SESSIONS_PER_USER",
      message: `too many sessions: you have ${live} live sessions, the most one user may have (MAX_SESSIONS_PER_USER=${max}); delete one first`
    }
    : undefined

type Bounds = { readonly min: { readonly cpu: string; readonly memory: string }; readonly max: { readonly cpu: string; readonly memory: string } }

/**
 * Checks the resources a session will request against its template's bounds (each left out: the control plane's
 * SESSION_MIN_/MAX_ settings). The field at fault and why, or undefined.
 */
export const resourcesIssue = (resources: Resources, template: Pick<TemplateRecord, "name" | "resourceBounds">, defaults: Bounds) => {
  for (const r of ["cpu", "memory"] as const) {
    const asked = resources[r]
    if (asked === undefined) continue
    const value = parseQuantity(asked) ?? 0
    const min = template.resourceBounds?.min?.[r] ?? defaults.min[r]
    const max = template.resourceBounds?.max?.[r] ?? defaults.max[r]
    const source = (bound: "min" | "max") =>
      template.resourceBounds?.[bound]?.[r] !== undefined ? `template "${template.name}"` : `SESSION_${bound.toUpperCase()}_${r.toUpperCase()}`
    if (value < parseQuantity(min)!) return { field: `resources.${r}`, message: `resources.${r}: ${asked} is below the minimum ${min} (${source("min")})` }
    if (value > parseQuantity(max)!) return { field: `resources.${r}`, message: `resources.${r}: ${asked} is above the maximum ${max} (${source("max")})` }
  }
  return undefined
}
