// The `audit_log` table: who did what to which object, append-only. Rows are numbered by `seq` (a bigserial),
// which is also the pagination cursor: pages run newest first, and the next page holds the rows below the last
// seq of this one, so rows written meanwhile never shift a page.
import { Array as Arr, Effect } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"
import { date, type Db, type Row } from "./db.ts"
import type { StoreError } from "./error.ts"

export interface AuditEvent {
  readonly seq: number
  readonly at: Date
  /** The acting user's `sub` (or `system` for the control plane's own actions). */
  readonly actor: string
  readonly actorRole: string
  /** Dotted name, e.g. `agent.approve`, `session.create`. */
  readonly action: string
  /** What was acted on: `agent`, `session`, `template`, ... */
  readonly targetType: string
  readonly targetId: string
  readonly details: Readonly<Record<string, unknown>>
}

export type NewAuditEvent = Omit<AuditEvent, "seq" | "at">

export interface AuditPage {
  readonly events: ReadonlyArray<AuditEvent>
  /** The cursor of the next (older) page, when there may be one. */
  readonly nextCursor: number | undefined
}

export interface AuditTable {
  readonly insert: (event: NewAuditEvent) => Effect.Effect<AuditEvent, StoreError>
  /** Inserts several, in order, in one statement (group commit): all or none. */
  readonly insertMany: (events: NonEmptyReadonlyArray<NewAuditEvent>) => Effect.Effect<ReadonlyArray<AuditEvent>, StoreError>
  /** Newest first, at most `limit`, older than `before` when given. */
  readonly page: (options: { readonly limit: number; readonly before?: number | undefined }) => Effect.Effect<AuditPage, StoreError>
}

export const toAuditEvent = (r: Row): AuditEvent => ({
  seq: Number(r.seq),
  at: date(r.at),
  actor: r.actor as string,
  actorRole: r.actor_role as string,
  action: r.action as string,
  targetType: r.target_type as string,
  targetId: r.target_id as string,
  details: (r.details ?? {}) as Record<string, unknown>
})

/** A page from rows fetched with limit + 1 (the extra row only says whether there is a next page). */
export const auditPage = (rows: ReadonlyArray<AuditEvent>, limit: number): AuditPage => {
  const events = rows.slice(0, limit)
  return { events, nextCursor: rows.length > limit ? events[events.length - 1]!.seq : undefined }
}

export const makeAudit = ({ json, now, q, sql }: Db): AuditTable => {
  const row = (e: NewAuditEvent, at: Date) => ({ at, actor: e.actor, actor_role: e.actorRole, action: e.action, target_type: e.targetType, target_id: e.targetId, details: json(e.details) })
  return {
    insert: Effect.fn("Store.audit.insert")(function*(e: NewAuditEvent) {
      const at = yield* now
      const rows = yield* q("audit", e.action, sql<Row>`INSERT INTO audit_log ${sql.insert(row(e, at))} RETURNING *`)
      return toAuditEvent(rows[0]!)
    }),
    insertMany: Effect.fn("Store.audit.insertMany")(function*(events: NonEmptyReadonlyArray<NewAuditEvent>) {
      const at = yield* now
      // seq follows the order of the rows in the statement.
      const rows = yield* q("audit", events[0].action, sql<Row>`INSERT INTO audit_log ${sql.insert(Arr.map(events, (e) => row(e, at)))} RETURNING *`)
      return rows.map(toAuditEvent).sort((a, b) => a.seq - b.seq)
    }),
    page: Effect.fn("Store.audit.page")(function*(options: { readonly limit: number; readonly before?: number | undefined }) {
      const rows = options.before === undefined
        ? yield* q("audit", "*", sql<Row>`SELECT * FROM audit_log ORDER BY seq DESC LIMIT ${options.limit + 1}`)
        : yield* q("audit", "*", sql<Row>`SELECT * FROM audit_log WHERE seq < ${options.before} ORDER BY seq DESC LIMIT ${options.limit + 1}`)
      return auditPage(rows.map(toAuditEvent), options.limit)
    })
  }
}
