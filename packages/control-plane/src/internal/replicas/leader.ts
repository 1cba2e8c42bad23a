// Cluster singletons under a PostgreSQL advisory lock: a replica runs the work only while it holds the lock
// on a connection of its own. The lock is the session's, so PostgreSQL frees it when the leader's connection
// ends (process killed, network cut), and another replica takes over at its next try. The leader checks its
// connection every `checkEvery`: when the check fails it stops the work before another replica could start it
// only if the database has noticed too — so the work must be safe to run twice for a moment (every singleton
// here is idempotent per row as well).
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect } from "effect"

/** A stable 32-bit key for a singleton's name (two-key advisory locks: namespace, name). */
const LOCK_NAMESPACE = 0x5354 // "ST"
const keyOf = (name: string): number => {
  let h = 0
  for (let i = 0; i < name.length; i++) h = (Math.imul(h, 31) + name.charCodeAt(i)) | 0
  return h
}

/**
 * Runs `work` while this replica holds the advisory lock `name` (and `eligible` says it may lead, e.g. its
 * lease runs); tries again every `checkEvery` otherwise. Never returns.
 */
export const asLeader = (
  pg: PgClient.PgClient,
  name: string,
  work: Effect.Effect<void>,
  checkEvery: Duration.Duration,
  eligible: Effect.Effect<boolean>
): Effect.Effect<never> => {
  const term = Effect.scoped(Effect.gen(function*() {
    if (!(yield* eligible)) return
    const conn = yield* pg.reserve
    const rows = yield* conn.execute("SELECT pg_try_advisory_lock($1, $2) AS locked", [LOCK_NAMESPACE, keyOf(name)], undefined)
    if (rows[0]?.["locked"] !== true) return
    // Released with the session (the connection goes back to the pool on scope close: unlock explicitly).
    yield* Effect.addFinalizer(() => conn.execute("SELECT pg_advisory_unlock($1, $2)", [LOCK_NAMESPACE, keyOf(name)], undefined).pipe(Effect.ignore))
    yield* Effect.logInfo(`leader of ${name}`)
    const holding = Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(checkEvery)
        if (!(yield* eligible)) return
        yield* conn.execute("SELECT 1", [], undefined).pipe(Effect.timeout(checkEvery))
      }
    })
    yield* Effect.raceFirst(holding, Effect.andThen(work, Effect.never)).pipe(Effect.ignore)
    yield* Effect.logWarning(`no longer leader of ${name}`)
  })).pipe(Effect.ignore)
  return Effect.forever(Effect.andThen(term, Effect.sleep(checkEvery)))
}

