// The `vnc_ticket_uses` table: the VNC tickets already redeemed, by ticket id, until they expire. A signed ticket
// is checked by whichever replica the viewer reaches; this row is what makes it single use across all of them.
import { Effect } from "effect"
import type { Db, Row } from "./db.ts"
import type { StoreError } from "./error.ts"

export interface TicketUsesTable {
  /** Records the use of ticket `jti` (valid until `expiresAt`); false when it was used before. Drops expired rows. */
  readonly claim: (jti: string, expiresAt: Date) => Effect.Effect<boolean, StoreError>
}

export const makeTicketUses = ({ q, sql, now }: Db): TicketUsesTable => ({
  claim: Effect.fn("Store.ticketUses.claim")(function*(jti: string, expiresAt: Date) {
    yield* q("ticket", jti, sql`DELETE FROM vnc_ticket_uses WHERE expires_at < ${yield* now}`)
    const rows = yield* q(
      "ticket",
      jti,
      sql<Row>`INSERT INTO vnc_ticket_uses ${sql.insert({ jti, expires_at: expiresAt })} ON CONFLICT (jti) DO NOTHING RETURNING jti`
    )
    return rows.length === 1
  })
})
