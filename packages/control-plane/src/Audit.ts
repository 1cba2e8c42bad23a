// Audit: the record of who did what — agent approvals, rejections, rotations, revocations, drains, template
// changes, session creates and deletes — each with the acting user's `sub` and role, kept in the Store's
// `audit_log` table and readable by admins (GET /api/v1/audit, newest first, paginated). Every event is also
// one log line carrying `actor`, so the log alone says who acted. Recording never fails the action it
// describes (the action has happened): a write that fails is logged as an error instead. Later features
// (sharing, lifecycle) record their events through `record` too.
import { Context, Effect, Layer, Schema } from "effect"
import type { User } from "./Auth.ts"
import { GROUP_COMMIT_MAX, makeGroupCommit } from "./internal/groupCommit.ts"
import { type AuditEvent, type AuditPage, type AuditTable, auditPage, type NewAuditEvent, Store } from "./Store.ts"

export class AuditError extends Schema.TaggedError<AuditError>()("AuditError", {
  reason: Schema.Literals(["Unavailable"]),
  message: Schema.String
}) {}

/** Who acted: a user from a verified token, or the control plane itself. */
export type Actor = User | "system"

export interface AuditTarget {
  readonly type: string
  readonly id: string
}

export interface AuditShape {
  /** Records one event (and logs it with the actor); never fails. */
  readonly record: (actor: Actor, action: string, target: AuditTarget, details?: Readonly<Record<string, unknown>>) => Effect.Effect<void>
  /** Newest first; `before` is the `nextCursor` of the previous page. */
  readonly list: (options: { readonly limit: number; readonly before?: number | undefined }) => Effect.Effect<AuditPage, AuditError>
}

export const make = Effect.fnUntraced(function*(table: AuditTable) {
  // Events recorded while others are being written go together, in one statement (group commit): a burst of
  // creates records one event each.
  const insert = yield* makeGroupCommit({ one: table.insert, many: table.insertMany, max: GROUP_COMMIT_MAX })
  const record = Effect.fn("Audit.record")(function*(actor: Actor, action: string, target: AuditTarget, details: Readonly<Record<string, unknown>> = {}) {
    const event: NewAuditEvent = {
      actor: actor === "system" ? "system" : actor.id,
      actorRole: actor === "system" ? "system" : actor.role,
      action,
      targetType: target.type,
      targetId: target.id,
      details
    }
    yield* Effect.logInfo(`audit: ${action} ${target.type} ${target.id}`).pipe(
      Effect.annotateLogs({ actor: event.actor, actor_role: event.actorRole, audit_action: action, target_type: target.type, target_id: target.id })
    )
    // Uninterruptible: a client hanging up right after the action must not lose its record.
    yield* insert(event).pipe(
      Effect.catch((e) => Effect.logError(`audit: could not record ${action} by ${event.actor}: ${e.message}`)),
      Effect.asVoid,
      Effect.uninterruptible
    )
  })
  const list = Effect.fn("Audit.list")(function*(options: { readonly limit: number; readonly before?: number | undefined }) {
    return yield* table.page(options).pipe(Effect.mapError((e) => new AuditError({ reason: "Unavailable", message: `the audit log cannot be read: ${e.message}` })))
  })
  return Audit.of({ record, list })
})

/** An AuditTable in memory (for tests of the services above the store). */
export const memoryTable = (): AuditTable => {
  const rows: Array<AuditEvent> = []
  const insert = (e: NewAuditEvent) =>
    Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (ms) => {
      const row: AuditEvent = { ...e, seq: rows.length + 1, at: new Date(ms) }
      rows.push(row)
      return row
    })
  return {
    insert,
    insertMany: (events) => Effect.forEach(events, insert),
    page: ({ before, limit }) => Effect.sync(() => auditPage(rows.filter((r) => before === undefined || r.seq < before).reverse().slice(0, limit + 1), limit))
  }
}

export class Audit extends Context.Service<Audit, AuditShape>()("control-plane/Audit") {
  /** On the Store's audit_log table. */
  static readonly layer = Layer.effect(Audit, Effect.flatMap(Store, (store) => make(store.audit)))
  /** In memory: for tests. */
  static readonly layerMemory = Layer.effect(Audit, Effect.suspend(() => make(memoryTable())))
}
