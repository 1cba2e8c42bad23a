// Lifecycle policy: idle and lifetime limits, with a warning before any automatic action.
//
// Each session is created with a policy (its template's fields, else the control plane's defaults), kept on its
// record: `idle_timeout` (no user input for this long -> `idle_action`), `max_lifetime` (hard limit from
// creation -> delete), `warn_before`. Activity is user input only: key, pointer and clipboard messages a viewer
// sends through the VNC proxy (screen updates and the viewer's own requests are not), or an API keep-alive
// (capped by max_lifetime, which nothing moves). A session is governed while running; its idle clock starts
// when it is first seen running (again after a resume).
//
// Warnings: once the next deadline is within `warn_before`, the session is *warned* (the API shows
// `expires_at`, `expiry_reason`, `expiry_warning`; viewers show a banner); the action runs no earlier than
// `warn_before` after the warning first showed, so nothing happens without a warning visible that long. Input
// or a keep-alive that moves the deadline out of the window clears the warning.
//
// The activity figures live in this replica's memory (the proxy that relays a viewer sees its input); after a
// restart every running session's idle clock starts again.
import type { SessionId } from "@streamspace/protocol"
import { formatDuration } from "@streamspace/protocol"
import { Duration, Effect } from "effect"
import type { IdleAction, SessionPolicy } from "../store/sessions.ts"
import type { SessionRecord, TemplateRecord } from "../../Store.ts"

export type { IdleAction }
export type ExpiryReason = "idle_timeout" | "max_lifetime"

export type { SessionPolicy }

/** The control plane's defaults (SESSION_IDLE_TIMEOUT, SESSION_MAX_LIFETIME, SESSION_IDLE_ACTION, SESSION_WARN_BEFORE). */
export interface PolicyDefaults {
  readonly idleTimeout: Duration.Duration
  readonly maxLifetime: Duration.Duration
  /** Undefined: hibernate where the session has a persistent home, else delete. */
  readonly idleAction: IdleAction | undefined
  readonly warnBefore: Duration.Duration
}

export const DEFAULT_POLICY: PolicyDefaults = {
  idleTimeout: Duration.zero,
  maxLifetime: Duration.zero,
  idleAction: undefined,
  warnBefore: Duration.minutes(5)
}

/** The template's policy fields as written (`30m`), undefined where it takes the default. */
export interface TemplatePolicy {
  readonly idleTimeout?: string | undefined
  readonly maxLifetime?: string | undefined
  readonly idleAction?: IdleAction | undefined
  readonly warnBefore?: string | undefined
}

const ms = (written: string | undefined, fallback: Duration.Duration, parse: (s: string) => Duration.Duration | undefined) =>
  Math.round(Duration.toMillis(written === undefined ? fallback : parse(written) ?? fallback))

/** The policy a new session gets. A session without a persistent home cannot hibernate: it is deleted. */
export const resolvePolicy = (
  template: TemplateRecord & TemplatePolicy,
  defaults: PolicyDefaults,
  persistentHome: boolean,
  parse: (s: string) => Duration.Duration | undefined
): SessionPolicy => {
  const action = template.idleAction ?? defaults.idleAction ?? (persistentHome ? "hibernate" : "delete")
  return {
    idle_timeout_ms: ms(template.idleTimeout, defaults.idleTimeout, parse),
    max_lifetime_ms: ms(template.maxLifetime, defaults.maxLifetime, parse),
    idle_action: action === "hibernate" && !persistentHome ? "delete" : action,
    warn_before_ms: ms(template.warnBefore, defaults.warnBefore, parse)
  }
}

interface Warning {
  readonly reason: ExpiryReason
  readonly shownAt: number
  actAt: number
}

/** What the control plane knows about one running session's activity. */
export interface Activity {
  /** When the session was first seen running (the idle clock's start). */
  readonly since: number
  lastInputAt?: number
  lastInputBy?: string
  lastKeepaliveAt?: number
  lastKeepaliveBy?: string
  warning?: Warning
  /** The action was started (at most once). */
  acting?: boolean
}

export interface Deadline {
  readonly at: number
  readonly reason: ExpiryReason
  readonly action: IdleAction
}

/** The next limit a session reaches, without the warning's grace. */
export const nominalDeadline = (s: SessionRecord, a: Activity | undefined): Deadline | undefined => {
  const p = s.policy
  if (p === undefined) return undefined
  let next: Deadline | undefined
  if (p.idle_timeout_ms > 0) {
    const last = Math.max(a?.since ?? s.updatedAt.getTime(), a?.lastInputAt ?? 0, a?.lastKeepaliveAt ?? 0)
    next = { at: last + p.idle_timeout_ms, reason: "idle_timeout", action: p.idle_action }
  }
  if (p.max_lifetime_ms > 0) {
    const at = s.createdAt.getTime() + p.max_lifetime_ms
    if (next === undefined || at <= next.at) next = { at, reason: "max_lifetime", action: "delete" }
  }
  return next
}

/** The session's lifecycle as the API shows it. */
export const lifecycleJson = (s: SessionRecord, a: Activity | undefined) => {
  const p = s.policy
  const governed = s.state === "running"
  const next = governed ? nominalDeadline(s, a) : undefined
  const at = a?.warning !== undefined ? a.warning.actAt : next?.at
  const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString())
  const dur = (n: number) => (n > 0 ? formatDuration(Duration.millis(n)) : null)
  return {
    expires_at: iso(at),
    expiry_reason: a?.warning?.reason ?? next?.reason ?? null,
    /** True while the warning shows (banner in every viewer). */
    expiry_warning: governed && a?.warning !== undefined,
    policy: p === undefined ? null : {
      idle_timeout: dur(p.idle_timeout_ms),
      max_lifetime: dur(p.max_lifetime_ms),
      idle_action: p.idle_action,
      warn_before: formatDuration(Duration.millis(p.warn_before_ms))
    },
    /** Why the session is alive or going away. */
    activity: {
      last_input_at: iso(a?.lastInputAt),
      last_input_by: a?.lastInputBy ?? null,
      last_keepalive_at: iso(a?.lastKeepaliveAt),
      last_keepalive_by: a?.lastKeepaliveBy ?? null,
      next_action: next === undefined ? null : next.action,
      next_action_at: iso(at)
    }
  }
}

export type LifecycleJson = ReturnType<typeof lifecycleJson>

export interface PolicyBook {
  readonly activity: Map<SessionId, Activity>
}

export const makePolicyBook = (): PolicyBook => ({ activity: new Map() })

/** Notes user input from a viewer (only while the session runs). */
export const noteInput = (book: PolicyBook, s: SessionRecord | undefined, viewer: string, now: number) => {
  if (s === undefined || s.state !== "running") return
  const a = activityOf(book, s, now)
  a.lastInputAt = now
  a.lastInputBy = viewer
  clearIfMoved(s, a, now)
}

export const noteKeepalive = (book: PolicyBook, s: SessionRecord, by: string, now: number) => {
  const a = activityOf(book, s, now)
  a.lastKeepaliveAt = now
  a.lastKeepaliveBy = by
  clearIfMoved(s, a, now)
}

/** Activity that moved the deadline out of the warning window clears the warning at once (the API shows it). */
const clearIfMoved = (s: SessionRecord, a: Activity, now: number) => {
  const next = nominalDeadline(s, a)
  if (a.warning !== undefined && a.acting !== true && (next === undefined || next.at > now + (s.policy?.warn_before_ms ?? 0))) delete a.warning
}

const activityOf = (book: PolicyBook, s: SessionRecord, now: number): Activity => {
  let a = book.activity.get(s.id)
  if (a === undefined) {
    a = { since: now }
    book.activity.set(s.id, a)
  }
  return a
}

/**
 * One pass over the sessions at `now`: starts the idle clock of newly running sessions, forgets the others,
 * shows, moves and clears warnings, and returns the sessions whose warned deadline has come.
 */
export const due = (book: PolicyBook, sessions: Iterable<SessionRecord>, now: number): ReadonlyArray<readonly [SessionRecord, Deadline]> => {
  const out: Array<readonly [SessionRecord, Deadline]> = []
  const seen = new Set<SessionId>()
  for (const s of sessions) {
    if (s.state !== "running" || s.policy === undefined) continue
    seen.add(s.id)
    const a = activityOf(book, s, now)
    const next = nominalDeadline(s, a)
    if (next === undefined || a.acting === true) continue
    const warnBefore = s.policy.warn_before_ms
    if (next.at > now + warnBefore) {
      delete a.warning
      continue
    }
    if (a.warning === undefined || a.warning.reason !== next.reason) a.warning = { reason: next.reason, shownAt: now, actAt: 0 }
    a.warning.actAt = Math.max(next.at, a.warning.shownAt + warnBefore)
    if (now >= a.warning.actAt) {
      a.acting = true
      out.push([s, next])
    }
  }
  for (const id of book.activity.keys()) if (!seen.has(id)) book.activity.delete(id)
  return out
}

/** For logs: `idle_timeout after 30m without input`. */
export const describeExpiry = (s: SessionRecord, d: Deadline) =>
  d.reason === "idle_timeout"
    ? `no user input for ${formatDuration(Duration.millis(s.policy?.idle_timeout_ms ?? 0))}: ${d.action}`
    : `max_lifetime of ${formatDuration(Duration.millis(s.policy?.max_lifetime_ms ?? 0))} reached: delete`

export const logExpiry = (s: SessionRecord, d: Deadline) =>
  Effect.logInfo(`session expires (${describeExpiry(s, d)})`).pipe(Effect.annotateLogs({ session_id: s.id, reason: d.reason, action: d.action }))
