// VNC tickets: browsers cannot set headers on WebSockets, so `POST /api/v1/sessions/:id/vnc-ticket` issues a
// short-lived ticket bound to one session and one user, and the viewer passes it in the query string.
//
// A ticket is signed (internal/peer/signing.ts, with a key derived from CLUSTER_SECRET), so whichever replica the
// viewer's WebSocket lands on can check it without shared memory. It expires after VNC_TICKET_TTL and is single
// use: `claim` records its id (the Store's `vnc_ticket_uses` row, shared by every replica on the database; in
// memory where no Store is provided) and refuses an id claimed before.
import type { SessionId, UserId } from "@streamspace/protocol"
import { Clock, Duration, Effect, type Option, type Redacted, Schema } from "effect"
import { randomBytes } from "node:crypto"
import type { User } from "../../Auth.ts"
import { deriveKey, sign, verify } from "../peer/signing.ts"

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

const invalid = (message: string) => new VncProxyError({ reason: "InvalidTicket", message })

/** Records the use of a ticket id valid until `expiresAtMs`; false when it was used before. */
export type ClaimTicket = (jti: string, expiresAtMs: number) => Effect.Effect<boolean, { readonly message: string }>

/** Ticket ids redeemed by this process until they expire (no Store: one replica). */
export const memoryClaims = (): ClaimTicket => {
  const used = new Map<string, number>()
  return (jti, expiresAtMs) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      for (const [id, exp] of used) if (exp <= now) used.delete(id)
      if (used.has(jti)) return false
      used.set(jti, expiresAtMs)
      return true
    })
}

const isStrings = (u: unknown): u is ReadonlyArray<string> => Array.isArray(u) && u.every((g) => typeof g === "string")

export const makeTickets = (ttl: Duration.Duration, clusterSecret: Option.Option<Redacted.Redacted<string>>, claim: ClaimTicket = memoryClaims()) => {
  const key = deriveKey(clusterSecret, "vnc-ticket")
  const ttlMs = Math.max(1, Duration.toMillis(ttl))
  return {
    /** A new ticket for a session the user may see (through a share link: `linkId`). */
    issue: (user: User, sessionId: SessionId, linkId?: string): Effect.Effect<VncTicket> =>
      Effect.map(Clock.currentTimeMillis, (now) => {
        const exp = now + ttlMs
        const viewerId = newViewerId()
        const ticket = sign(key, {
          typ: "vnc-ticket",
          jti: randomBytes(16).toString("base64url"),
          sid: sessionId,
          uid: user.id,
          role: user.role,
          grp: user.groups,
          vid: viewerId,
          ...(linkId === undefined ? {} : { lid: linkId }),
          exp
        })
        return { ticket, sessionId, expiresAt: new Date(exp), viewerId }
      }),
    /** Checks a ticket and takes it out of circulation; the user it was issued to. */
    redeem: Effect.fnUntraced(function*(ticket: string, sessionId: string) {
      const now = yield* Clock.currentTimeMillis
      const claims = verify(key, ticket)
      if (claims === undefined || claims.typ !== "vnc-ticket" || typeof claims.jti !== "string" || typeof claims.exp !== "number" ||
        typeof claims.uid !== "string" || (claims.role !== "admin" && claims.role !== "user") || !isStrings(claims.grp) ||
        typeof claims.vid !== "string" || (claims.lid !== undefined && typeof claims.lid !== "string")) {
        return yield* invalid("VNC ticket is unknown or was already used")
      }
      if (claims.exp <= now) return yield* invalid("VNC ticket has expired")
      const first = yield* claim(claims.jti, claims.exp).pipe(Effect.mapError((e) => invalid(`VNC ticket could not be checked: ${e.message}`)))
      if (!first) return yield* invalid("VNC ticket is unknown or was already used")
      if (claims.sid !== sessionId) return yield* invalid("VNC ticket was issued for another session")
      const user: User = { id: claims.uid as UserId, role: claims.role, groups: claims.grp }
      return { user, viewerId: claims.vid, linkId: claims.lid } satisfies Redeemed
    })
  }
}

export const newViewerId = () => `v-${randomBytes(6).toString("hex")}`
