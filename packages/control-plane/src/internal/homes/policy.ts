// The rules of home volumes, as pure functions: what a listed home's record becomes (in use, last use, a
// scheduled deletion cancelled by use) and what the retention policy does with it next.
import type { AgentId, HomeVolume } from "@streamspace/protocol"
import { Duration } from "effect"
import type { HomeRecord } from "../../Store.ts"

/** What the control plane's session records say about a home: a live session uses it; when the last one ended. */
export interface SessionUse {
  readonly live: boolean
  readonly lastEnded: Date | undefined
}

const latest = (...ds: ReadonlyArray<Date | undefined>): Date =>
  new Date(Math.max(...ds.map((d) => (d === undefined ? 0 : d.getTime()))))

/**
 * The record of a home the agent listed at `now`. In use (a pod mounts it, or a live session of its user has a
 * persistent home there: a session being created or hibernated counts) means used now. Any use since the
 * previous record cancels a scheduled deletion.
 */
export const recordOf = (id: string, agentId: AgentId, listed: HomeVolume, prev: HomeRecord | undefined, use: SessionUse, now: Date): HomeRecord => {
  const inUse = listed.in_use || use.live
  const lastUsedAt = inUse ? now : latest(prev?.lastUsedAt, use.lastEnded, new Date(listed.created_at))
  const usedSince = prev !== undefined && lastUsedAt.getTime() > prev.lastUsedAt.getTime()
  return {
    id,
    agentId,
    name: listed.name,
    userId: listed.user_id,
    size: listed.size,
    inUse,
    createdAt: new Date(listed.created_at),
    lastUsedAt,
    reportedAt: now,
    expiresAt: inUse || usedSince ? undefined : prev?.expiresAt
  }
}

export type RetentionStep =
  | { readonly _tag: "Keep" }
  /** Show the coming deletion: `expires_at` set, at least the warning period from now. */
  | { readonly _tag: "Warn"; readonly expiresAt: Date }
  /** A scheduled deletion no longer applies (used again, policy off or longer). */
  | { readonly _tag: "Cancel" }
  | { readonly _tag: "Delete" }

/**
 * The next step of the retention policy for a home at `now`: unused for `retention` -> deleted, but only after
 * `expires_at` has been visible for `warning`. Off (undefined retention) deletes nothing.
 */
export const retentionStep = (h: HomeRecord, retention: Duration.Duration | undefined, warning: Duration.Duration, now: Date): RetentionStep => {
  if (retention === undefined || h.inUse) return h.expiresAt === undefined ? { _tag: "Keep" } : { _tag: "Cancel" }
  const due = h.lastUsedAt.getTime() + Duration.toMillis(retention)
  const warnFrom = due - Duration.toMillis(warning)
  if (h.expiresAt !== undefined) {
    if (now.getTime() >= h.expiresAt.getTime()) return { _tag: "Delete" }
    return now.getTime() < warnFrom ? { _tag: "Cancel" } : { _tag: "Keep" }
  }
  if (now.getTime() < warnFrom) return { _tag: "Keep" }
  return { _tag: "Warn", expiresAt: new Date(Math.max(due, now.getTime() + Duration.toMillis(warning))) }
}
