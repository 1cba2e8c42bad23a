// What every table module of the Store shares: the SQL client, the clock, JSON columns, row-to-value
// helpers and the mapping of driver errors onto StoreError (a duplicate key is a Conflict, a missing
// reference a NotFound, the rest Database).
import { PgClient } from "@effect/sql-pg"
import { Effect } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { SqlError } from "effect/sql/SqlError"
import { type Entity, StoreError } from "./error.ts"

export type Row = Record<string, unknown>

export const date = (v: unknown): Date => (v instanceof Date ? v : new Date(String(v)))
export const dateOrUndefined = (v: unknown): Date | undefined => (v === null || v === undefined ? undefined : date(v))
export const strOrUndefined = (v: unknown): string | undefined => (v === null || v === undefined ? undefined : String(v))

const dbError = (entity: Entity, id: string) => (e: SqlError): StoreError => {
  switch (e.reason._tag) {
    case "UniqueViolation":
      return StoreError.conflict(entity, id, `${entity} ${JSON.stringify(id)} already exists`)
    case "ConstraintError":
      return StoreError.conflict(entity, id, `${entity} ${JSON.stringify(id)} violates a constraint: ${e.reason.message ?? e.message}`)
    default:
      return StoreError.database(e, `${entity} ${JSON.stringify(id)}`)
  }
}

/** The database as the table modules use it. */
export const makeDb = Effect.gen(function*() {
  const sql = yield* SqlClient
  const pg = yield* PgClient.PgClient

  /** Now, from Effect's Clock (so TestClock controls the stored times). */
  const now = Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (ms) => new Date(ms))
  const json = (v: unknown) => pg.json(v ?? null)
  const jsonOrNull = (v: unknown) => (v === undefined || v === null ? null : pg.json(v))

  /** Runs a query for one entity, mapping driver errors. */
  const q = <A>(entity: Entity, id: string, eff: Effect.Effect<A, SqlError>) => Effect.mapError(eff, dbError(entity, id))

  /** The first row mapped, or NotFound. */
  const one = <A>(entity: Entity, id: string, rows: ReadonlyArray<Row>, to: (r: Row) => A) =>
    rows.length === 0 ? Effect.fail(StoreError.notFound(entity, id)) : Effect.succeed(to(rows[0]!))

  const mustExist = (entity: Entity, id: string, table: string, column: string) =>
    q(entity, id, sql<Row>`SELECT 1 AS found FROM ${sql(table)} WHERE ${sql(column)} = ${id}`).pipe(
      Effect.flatMap((rows) => (rows.length === 0 ? Effect.fail(StoreError.notFound(entity, id)) : Effect.void))
    )

  /**
   * Runs an INSERT whose references are enforced by foreign keys. When one fails (a ConstraintError), `refs`
   * looks each reference up and fails with NotFound for the missing one; otherwise the error maps as usual.
   * The common case is one round trip; the lookups only run after a failure.
   */
  const refsChecked = <A>(entity: Entity, id: string, stmt: Effect.Effect<A, SqlError>, refs: Effect.Effect<void, StoreError>) =>
    stmt.pipe(
      Effect.catch((e: SqlError) =>
        e.reason._tag === "ConstraintError" ? Effect.andThen(refs, Effect.fail(dbError(entity, id)(e))) : Effect.fail(dbError(entity, id)(e))
      )
    )

  return { sql, now, json, jsonOrNull, q, one, mustExist, refsChecked }
})

export type Db = Effect.Success<typeof makeDb>

/** What a transition or resend did: `changed` is false when the row was already there or past it. */
export interface Transition<A> {
  readonly changed: boolean
  readonly row: A
}
