// VNC tickets: browsers cannot set headers on WebSockets, so `POST /api/v1/sessions/:id/vnc-ticket` issues a
// short-lived ticket bound to one session and one user, and the viewer passes it in the query string.
//
// A ticket is signed (internal/peer/signing.ts, with a key derived from CLUSTER_SECRET), so whichever replica the
// viewer's WebSocket lands on can check it without shared memory. It expires after VNC_TICKET_TTL and is single
// use on each replica (a replica remembers the tickets it redeemed until they expire); across replicas a stolen
// ticket could be replayed within its TTL, which is why the TTL is short (default 60 s).
import type { SessionId, UserId } from "@streamspace/protocol"
import { Clock, Duration, Effect, type Option, type Redacted, Schema } from "effect"
import { randomBytes } from "node:crypto"
import type { User } from "../../Auth.ts"
import { deriveKey, sign, verify } from "../peer/signing.ts"

export class VncProxyError extends Schema.TaggedError<VncProxyError>()("VncProxyError", {
  reason: Schema.Literals(["NotFound", "InvalidTicket", "LimitExceeded"]),
  message: Schema.String
}) {}

export interface VncTicket {
  readonly ticket: string
  readonly sessionId: SessionId
  readonly expiresAt: Date
}

const invalid = (message: string) => new VncProxyError({ reason: "InvalidTicket", message })

export const makeTickets = (ttl: Duration.Duration, clusterSecret: Option.Option<Redacted.Redacted<string>>) => {
  const key = deriveKey(clusterSecret, "vnc-ticket")
  /** Ticket ids redeemed on this replica, with their expiry: a second use is refused. */
  const used = new Map<string, number>()
  const ttlMs = Math.max(1, Duration.toMillis(ttl))
  return {
    /** A new ticket for a session the user may see. */
    issue: (user: User, sessionId: SessionId): Effect.Effect<VncTicket> =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const exp = now + ttlMs
        const ticket = sign(key, { typ: "vnc-ticket", jti: randomBytes(16).toString("base64url"), sid: sessionId, uid: user.id, role: user.role, exp })
        return { ticket, sessionId, expiresAt: new Date(exp) }
      }),
    /** Checks a ticket and takes it out of circulation on this replica; the user it was issued to. */
    redeem: Effect.fnUntraced(function*(ticket: string, sessionId: string) {
      const now = yield* Clock.currentTimeMillis
      for (const [jti, exp] of used) if (exp <= now) used.delete(jti)
      const claims = verify(key, ticket)
      if (claims === undefined || claims.typ !== "vnc-ticket" || typeof claims.jti !== "string" || typeof claims.exp !== "number" ||
        typeof claims.uid !== "string" || (claims.role !== "admin" && claims.role !== "user")) {
        return yield* invalid("VNC ticket is unknown or was already used")
      }
      if (used.has(claims.jti)) return yield* invalid("VNC ticket is unknown or was already used")
      used.set(claims.jti, claims.exp)
      if (claims.exp <= now) return yield* invalid("VNC ticket has expired")
      if (claims.sid !== sessionId) return yield* invalid("VNC ticket was issued for another session")
      return { id: claims.uid as UserId, role: claims.role } satisfies User
    })
  }
}
