// The store's one error, with a reason the API maps to a status: NotFound -> 404, Conflict -> 409,
// Database -> 500/503. Lives here so Database.ts and Store.ts can both raise it; Store.ts re-exports it.
import { Predicate, Schema } from "effect"

export const Entity = Schema.Literals(["user", "template", "agent", "session", "command", "audit", "home", "share", "share_link", "team", "login", "ticket"])
export type Entity = typeof Entity.Type

/** No row with that key (or a row it refers to, e.g. a session's template, does not exist). */
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", {
  entity: Entity,
  id: Schema.String,
  message: Schema.String
}) {}

/** The row exists already, or its current state does not allow the change (e.g. approving an approved agent). */
export class Conflict extends Schema.TaggedError<Conflict>()("Conflict", {
  entity: Entity,
  id: Schema.String,
  message: Schema.String
}) {}

/** The database failed or could not be reached or started; `cause` holds the driver's error. */
export class DatabaseFailure extends Schema.TaggedError<DatabaseFailure>()("Database", {
  message: Schema.String,
  cause: Schema.Defect()
}) {}

export class StoreError extends Schema.TaggedError<StoreError>()("StoreError", {
  reason: Schema.Union([NotFound, Conflict, DatabaseFailure]),
  message: Schema.String
}) {
  static notFound(entity: Entity, id: string, message = `${entity} ${JSON.stringify(id)} not found`): StoreError {
    return new StoreError({ reason: new NotFound({ entity, id, message }), message })
  }
  static conflict(entity: Entity, id: string, message: string): StoreError {
    return new StoreError({ reason: new Conflict({ entity, id, message }), message })
  }
  static database(cause: unknown, message = "database error"): StoreError {
    const text = `${message}: ${describe(cause)}`
    return new StoreError({ reason: new DatabaseFailure({ message: text, cause }), message: text })
  }
}

/** The most useful line of a driver error: sql-pg's SqlError message is generic, the server's text is in its cause. */
const describe = (cause: unknown): string => {
  const parts: Array<string> = []
  let c: unknown = cause
  for (let i = 0; i < 4 && Predicate.hasProperty(c, "message"); i++) {
    const m = String(c.message)
    if (m.length > 0 && !parts.includes(m)) parts.push(m)
    c = Predicate.hasProperty(c, "cause") ? c.cause : undefined
  }
  return parts.length === 0 ? String(cause) : parts.join(": ")
}
