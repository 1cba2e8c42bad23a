// The sharing tables: `session_shares` (a named user's `view` or `control` access to a session), `share_links`
// (expiring, revocable links; only the SHA-256 of a link's token is stored) and `session_control_modes` (a
// session's control mode when the owner changed it from `exclusive`). Rows go with their session.
import { Effect } from "effect"
import { date, dateOrUndefined, type Db, type Row, strOrUndefined } from "./db.ts"
import type { StoreError } from "./error.ts"

export type ShareAccess = "view" | "control"
export type ControlMode = "exclusive" | "shared"

export interface ShareRecord {
  readonly sessionId: string
  readonly userId: string
  readonly access: ShareAccess
  readonly createdBy: string
  readonly createdAt: Date
}

export interface ShareLinkRecord {
  readonly id: string
  readonly sessionId: string
  readonly tokenHash: string
  readonly access: ShareAccess
  readonly label: string | undefined
  readonly createdBy: string
  readonly createdAt: Date
  readonly expiresAt: Date
  /** Exchanges allowed (undefined: any number until it expires). */
  readonly maxUses: number | undefined
  readonly uses: number
  readonly revokedAt: Date | undefined
}

export interface SharesTable {
  /** Inserts or changes the access of (session, user). */
  readonly put: (share: ShareRecord) => Effect.Effect<ShareRecord, StoreError>
  /** Whether there was a share to remove. */
  readonly remove: (sessionId: string, userId: string) => Effect.Effect<boolean, StoreError>
  readonly get: (sessionId: string, userId: string) => Effect.Effect<ShareRecord | undefined, StoreError>
  /** A session's shares (oldest first), or one user's (`byUser`). */
  readonly list: (filter: { readonly sessionId: string } | { readonly userId: string }) => Effect.Effect<ReadonlyArray<ShareRecord>, StoreError>
  readonly putLink: (link: ShareLinkRecord) => Effect.Effect<ShareLinkRecord, StoreError>
  readonly getLink: (id: string) => Effect.Effect<ShareLinkRecord | undefined, StoreError>
  readonly linkByTokenHash: (hash: string) => Effect.Effect<ShareLinkRecord | undefined, StoreError>
  readonly links: (sessionId: string) => Effect.Effect<ReadonlyArray<ShareLinkRecord>, StoreError>
  /**
   * Counts one use of a live link (not revoked, not expired at `now`, uses left), in one statement so that
   * concurrent exchanges cannot exceed max_uses; undefined when the link cannot be used.
   */
  readonly useLink: (id: string, now: Date) => Effect.Effect<ShareLinkRecord | undefined, StoreError>
  readonly revokeLink: (id: string, now: Date) => Effect.Effect<ShareLinkRecord | undefined, StoreError>
  readonly controlMode: (sessionId: string) => Effect.Effect<ControlMode, StoreError>
  readonly setControlMode: (sessionId: string, mode: ControlMode, now: Date) => Effect.Effect<void, StoreError>
}

const toShare = (r: Row): ShareRecord => ({
  sessionId: r.session_id as string,
  userId: r.user_id as string,
  access: r.access as ShareAccess,
  createdBy: r.created_by as string,
  createdAt: date(r.created_at)
})

const toLink = (r: Row): ShareLinkRecord => ({
  id: r.id as string,
  sessionId: r.session_id as string,
  tokenHash: r.token_hash as string,
  access: r.access as ShareAccess,
  label: strOrUndefined(r.label),
  createdBy: r.created_by as string,
  createdAt: date(r.created_at),
  expiresAt: date(r.expires_at),
  maxUses: r.max_uses === null || r.max_uses === undefined ? undefined : Number(r.max_uses),
  uses: Number(r.uses),
  revokedAt: dateOrUndefined(r.revoked_at)
})

export const makeShares = ({ q, sql }: Db): SharesTable => ({
  put: Effect.fn("Store.shares.put")(function*(s: ShareRecord) {
    const rows = yield* q(
      "share",
      `${s.sessionId}/${s.userId}`,
      sql<Row>`INSERT INTO session_shares ${sql.insert({ session_id: s.sessionId, user_id: s.userId, access: s.access, created_by: s.createdBy, created_at: s.createdAt })}
        ON CONFLICT (session_id, user_id) DO UPDATE SET access = EXCLUDED.access RETURNING *`
    )
    return toShare(rows[0]!)
  }),
  remove: Effect.fn("Store.shares.remove")(function*(sessionId: string, userId: string) {
    const rows = yield* q("share", `${sessionId}/${userId}`, sql<Row>`DELETE FROM session_shares WHERE session_id = ${sessionId} AND user_id = ${userId} RETURNING 1 AS gone`)
    return rows.length > 0
  }),
  get: Effect.fn("Store.shares.get")(function*(sessionId: string, userId: string) {
    const rows = yield* q("share", `${sessionId}/${userId}`, sql<Row>`SELECT * FROM session_shares WHERE session_id = ${sessionId} AND user_id = ${userId}`)
    return rows.length === 0 ? undefined : toShare(rows[0]!)
  }),
  list: Effect.fn("Store.shares.list")(function*(filter) {
    const where = "sessionId" in filter ? sql`session_id = ${filter.sessionId}` : sql`user_id = ${filter.userId}`
    return (yield* q("share", "*", sql<Row>`SELECT * FROM session_shares WHERE ${where} ORDER BY created_at, user_id`)).map(toShare)
  }),
  putLink: Effect.fn("Store.shares.putLink")(function*(l: ShareLinkRecord) {
    const rows = yield* q(
      "share_link",
      l.id,
      sql<Row>`INSERT INTO share_links ${
        sql.insert({
          id: l.id,
          session_id: l.sessionId,
          token_hash: l.tokenHash,
          access: l.access,
          label: l.label ?? null,
          created_by: l.createdBy,
          created_at: l.createdAt,
          expires_at: l.expiresAt,
          max_uses: l.maxUses ?? null,
          uses: l.uses,
          revoked_at: l.revokedAt ?? null
        })
      } RETURNING *`
    )
    return toLink(rows[0]!)
  }),
  getLink: Effect.fn("Store.shares.getLink")(function*(id: string) {
    const rows = yield* q("share_link", id, sql<Row>`SELECT * FROM share_links WHERE id = ${id}`)
    return rows.length === 0 ? undefined : toLink(rows[0]!)
  }),
  linkByTokenHash: Effect.fn("Store.shares.linkByTokenHash")(function*(hash: string) {
    const rows = yield* q("share_link", "(token)", sql<Row>`SELECT * FROM share_links WHERE token_hash = ${hash}`)
    return rows.length === 0 ? undefined : toLink(rows[0]!)
  }),
  links: Effect.fn("Store.shares.links")(function*(sessionId: string) {
    return (yield* q("share_link", "*", sql<Row>`SELECT * FROM share_links WHERE session_id = ${sessionId} ORDER BY created_at, id`)).map(toLink)
  }),
  useLink: Effect.fn("Store.shares.useLink")(function*(id: string, now: Date) {
    const rows = yield* q(
      "share_link",
      id,
      sql<Row>`UPDATE share_links SET uses = uses + 1
        WHERE id = ${id} AND revoked_at IS NULL AND expires_at > ${now} AND (max_uses IS NULL OR uses < max_uses) RETURNING *`
    )
    return rows.length === 0 ? undefined : toLink(rows[0]!)
  }),
  revokeLink: Effect.fn("Store.shares.revokeLink")(function*(id: string, now: Date) {
    const rows = yield* q("share_link", id, sql<Row>`UPDATE share_links SET revoked_at = COALESCE(revoked_at, ${now}) WHERE id = ${id} RETURNING *`)
    return rows.length === 0 ? undefined : toLink(rows[0]!)
  }),
  controlMode: Effect.fn("Store.shares.controlMode")(function*(sessionId: string) {
    const rows = yield* q("share", sessionId, sql<Row>`SELECT mode FROM session_control_modes WHERE session_id = ${sessionId}`)
    return rows.length === 0 ? "exclusive" : (rows[0]!.mode as ControlMode)
  }),
  setControlMode: Effect.fn("Store.shares.setControlMode")(function*(sessionId: string, mode: ControlMode, now: Date) {
    yield* q(
      "share",
      sessionId,
      sql`INSERT INTO session_control_modes ${sql.insert({ session_id: sessionId, mode, updated_at: now })}
        ON CONFLICT (session_id) DO UPDATE SET mode = EXCLUDED.mode, updated_at = EXCLUDED.updated_at`
    )
  })
})

/** The same tables in memory (for tests of the services above the store). */
export const memoryShares = (): SharesTable => {
  const shares = new Map<string, ShareRecord>()
  const links = new Map<string, ShareLinkRecord>()
  const modes = new Map<string, ControlMode>()
  const key = (s: string, u: string) => `${s}\u0000${u}`
  const live = (l: ShareLinkRecord, now: Date) => l.revokedAt === undefined && l.expiresAt > now && (l.maxUses === undefined || l.uses < l.maxUses)
  return {
    put: (s) => Effect.sync(() => {
      const row = { ...(shares.get(key(s.sessionId, s.userId)) ?? s), access: s.access }
      shares.set(key(s.sessionId, s.userId), row)
      return row
    }),
    remove: (s, u) => Effect.sync(() => shares.delete(key(s, u))),
    get: (s, u) => Effect.sync(() => shares.get(key(s, u))),
    list: (filter) =>
      Effect.sync(() => [...shares.values()].filter((s) => ("sessionId" in filter ? s.sessionId === filter.sessionId : s.userId === filter.userId))),
    putLink: (l) => Effect.sync(() => (links.set(l.id, l), l)),
    getLink: (id) => Effect.sync(() => links.get(id)),
    linkByTokenHash: (hash) => Effect.sync(() => [...links.values()].find((l) => l.tokenHash === hash)),
    links: (sessionId) => Effect.sync(() => [...links.values()].filter((l) => l.sessionId === sessionId)),
    useLink: (id, now) =>
      Effect.sync(() => {
        const l = links.get(id)
        if (l === undefined || !live(l, now)) return undefined
        const used = { ...l, uses: l.uses + 1 }
        links.set(id, used)
        return used
      }),
    revokeLink: (id, now) =>
      Effect.sync(() => {
        const l = links.get(id)
        if (l === undefined) return undefined
        const revoked = { ...l, revokedAt: l.revokedAt ?? now }
        links.set(id, revoked)
        return revoked
      }),
    controlMode: (s) => Effect.sync(() => modes.get(s) ?? "exclusive"),
    setControlMode: (s, mode) => Effect.sync(() => void modes.set(s, mode))
  }
}
