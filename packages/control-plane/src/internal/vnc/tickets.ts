// Single-use VNC tickets: browsers cannot set headers on WebSockets, so `POST /api/v1/sessions/:id/vnc-ticket`
// issues a short-lived ticket bound to one session and one user, and the viewer passes it in the query string.
import type { SessionId } from "@streamspace/protocol"
import { Clock, Duration, Effect, Schema } from "effect"
import { randomBytes } from "node:crypto"
import type { User } from "../../Auth.ts"

export class VncProxyError extends Schema.TaggedError<VncProxyError>()("VncProxyError", {
  reason: Schema.Literals(["NotFound", "InvalidTicket", "LimitExceeded", "AgentOffline"]),
  message: Schema.String
}) {}

export interface VncTicket {
  readonly ticket: string
  readonly sessionId: SessionId
  readonly expiresAt: Date
  /** The id the viewer opened with this ticket has in the session's presence list (control requests name it). */
  readonly viewerId: string
}

/** Who redeemed a ticket: the user it was issued to, the viewer id, and the share link it came from if any. */
export interface Redeemed {
  readonly user: User
  readonly viewerId: string
  readonly linkId: string | undefined
}

export const makeTickets = (ttl: Duration.Duration) => {
  const tickets = new Map<string, { readonly user: User; readonly sessionId: SessionId; readonly expiresAtMs: number; readonly viewerId: string; readonly linkId: string | undefined }>()
  const ttlMs = Math.max(1, Duration.toMillis(ttl))
  return {
    /** A new ticket for a session the user may see; expired ones are dropped on the way. */
    issue: (user: User, sessionId: SessionId, linkId?: string): Effect.Effect<VncTicket> =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        for (const [t, v] of tickets) if (v.expiresAtMs <= now) tickets.delete(t)
        const ticket = randomBytes(24).toString("base64url")
        const viewerId = newViewerId()
        tickets.set(ticket, { user, sessionId, expiresAtMs: now + ttlMs, viewerId, linkId })
        return { ticket, sessionId, expiresAt: new Date(now + ttlMs), viewerId }
      }),
    /** Takes a ticket out of circulation (single use, whatever the outcome) and checks it; the user it was issued to. */
    redeem: Effect.fnUntraced(function*(ticket: string, sessionId: string) {
      const entry = tickets.get(ticket)
      tickets.delete(ticket)
      if (entry === undefined) return yield* new VncProxyError({ reason: "InvalidTicket", message: "VNC ticket is unknown or was already used" })
      if (entry.expiresAtMs <= (yield* Clock.currentTimeMillis)) return yield* new VncProxyError({ reason: "InvalidTicket", message: "VNC ticket has expired" })
      if (entry.sessionId !== sessionId) return yield* new VncProxyError({ reason: "InvalidTicket", message: "VNC ticket was issued for another session" })
      return { user: entry.user, viewerId: entry.viewerId, linkId: entry.linkId } satisfies Redeemed
    })
  }
}

export const newViewerId = () => `v-${randomBytes(6).toString("hex")}`
