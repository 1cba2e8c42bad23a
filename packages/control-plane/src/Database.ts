// The control plane's SQL connection: one driver (@effect/sql-pg) for both stores.
//
// * `DATABASE_URL=postgres://...`: a real PostgreSQL, through a pool.
// * otherwise an embedded PGlite (Postgres in WebAssembly) persisted in `DATA_DIR`, or in memory,
//   run in a worker thread of this process (so its CPU time does not block the event loop) and
//   served over the Postgres wire protocol by pglite-socket on a unix socket in a private temp
//   directory (no TCP port: the embedded server has no authentication).
//
// PGlite is one backend session: every connection shares it, so the pool holds exactly one
// connection (and the socket server accepts a few, only so a reconnect never finds the slot
// taken by a dying socket). Queries from concurrent fibers queue for that connection; a
// transaction keeps it until commit. Closing the layer closes the client, then the socket
// server, then PGlite, which flushes to DATA_DIR.
import { PgClient } from "@effect/sql-pg"
import { BooleanString, secretSetting, setting, SettingError } from "@streamspace/protocol"
import { Duration, Effect, Layer, Option, Redacted, Schema } from "effect"
import type { SqlClient } from "effect/sql"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { secureDataDir, tightenFiles } from "./internal/dataDir.ts"
import { startPgliteThread } from "./internal/pgliteThread.ts"
import { StoreError } from "./internal/store/error.ts"

/** Where the store keeps its data. */
export interface DatabaseSettings {
  /** A real PostgreSQL (`postgres://` or `postgresql://` URL); when set, the embedded database is not used. */
  readonly databaseUrl: Option.Option<Redacted.Redacted<string>>
  /** Directory of the embedded PGlite database (ignored with `databaseUrl` or `inMemory`). */
  readonly dataDir: string
  /** Keep the embedded database in memory: everything is lost at exit. */
  readonly inMemory: boolean
}

/**
 * `DATABASE_URL` (optional, secret), `DATA_DIR` (default `./data`), `DATABASE_IN_MEMORY` (default false): read
 * here only (ControlPlaneConfig embeds it), so a bad value fails the start with one message naming the variable.
 */
export const readDatabaseSettings: Effect.Effect<DatabaseSettings, SettingError> = Effect.gen(function*() {
  const databaseUrl = yield* secretSetting("DATABASE_URL")
  if (Option.isSome(databaseUrl) && !/^postgres(ql)?:\/\/.+/.test(Redacted.value(databaseUrl.value))) {
    return yield* new SettingError({ variable: "DATABASE_URL", message: "DATABASE_URL is invalid: expected postgres://user:password@host:5432/database" })
  }
  const dataDir = yield* setting("DATA_DIR", Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: "must not be empty" }))), {
    default: "./data",
    expected: "a directory"
  })
  const inMemory = yield* setting("DATABASE_IN_MEMORY", BooleanString, { default: "false", expected: "true or false" })
  return { databaseUrl, dataDir, inMemory }
})

/** What a database layer provides: the generic `SqlClient` and the Postgres-specific `PgClient` (same object). */
export type Sql = PgClient.PgClient | SqlClient.SqlClient

const mapSqlError = <A, R>(self: Effect.Effect<A, unknown, R>, what: string) =>
  Effect.mapError(self, (e) => StoreError.database(e, what))

/** Makes the client and checks the connection now: sql-pg connects lazily, and a bad URL should stop the start. */
const connect = <R>(make: Effect.Effect<PgClient.PgClient, unknown, R>, what: string) =>
  make.pipe(
    Effect.tap((client) => client`SELECT 1`),
    (eff) => mapSqlError(eff, what)
  )

/** A real PostgreSQL server. `maxConnections` defaults to 10. */
export const layerPostgres = (options: {
  readonly url: Redacted.Redacted<string>
  readonly maxConnections?: number | undefined
}): Layer.Layer<Sql, StoreError> =>
  PgClient.layerFrom(
    connect(
      PgClient.make({
        url: options.url,
        maxConnections: options.maxConnections ?? 10,
        connectTimeout: Duration.seconds(10)
      }),
      "cannot connect to PostgreSQL (DATABASE_URL)"
    )
  )

/**
 * PGlite with its socket server, in a worker thread (internal/pgliteWorker.ts): its WebAssembly runs off the
 * control plane's event loop. The socket lives in a private temp directory (mode 0700).
 */
const startPglite = (dataDir: string | undefined) =>
  Effect.acquireRelease(
    mapSqlError(
      Effect.andThen(dataDir === undefined ? Effect.void : secureDataDir(dataDir), Effect.tryPromise(async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-pg-")) // mode 0700
        try {
          const thread = await startPgliteThread(dataDir, path.join(dir, ".s.PGSQL.5432"))
          if (dataDir !== undefined) tightenFiles(dataDir)
          return { dir, thread }
        } catch (e) {
          fs.rmSync(dir, { recursive: true, force: true })
          throw e
        }
      })),
      dataDir === undefined ? "cannot start the in-memory PGlite" : `cannot open the PGlite database in ${dataDir}`
    ),
    ({ dir, thread }) =>
      Effect.tryPromise(() => thread.close()).pipe(
        Effect.catch((e) => Effect.logWarning("PGlite close failed", e)),
        // What PGlite wrote while open and at close gets 0600 too.
        Effect.andThen(dataDir === undefined ? Effect.void : Effect.try(() => tightenFiles(dataDir)).pipe(Effect.catch((e) => Effect.logWarning(`could not make the files in ${dataDir} private`, e)))),
        Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      )
  )

/**
 * Embedded PGlite persisted in `dataDir` (created if missing), or in memory when `dataDir` is undefined.
 * Only one process may open a given `dataDir` at a time.
 */
export const layerPglite = (options: { readonly dataDir?: string | undefined }): Layer.Layer<Sql, StoreError> =>
  PgClient.layerFrom(
    Effect.gen(function*() {
      const { thread } = yield* startPglite(options.dataDir === undefined ? undefined : path.resolve(options.dataDir))
      return yield* connect(PgClient.make({
        path: thread.socketPath,
        username: "postgres",
        database: "postgres",
        maxConnections: 1,
        minConnections: 1,
        // keep the single connection: PGlite's session outlives sockets, so churn only leaks prepared statements
        idleTimeout: Duration.infinity,
        connectTimeout: Duration.seconds(30),
        // Statements from concurrent fibers are pipelined on the one connection (one socket write for all that
        // were submitted in the same tick) instead of each waiting for the previous one's round trip.
        // Transactions still take the connection for themselves.
        multiplex: true
      }), "cannot connect to the embedded PGlite")
    })
  )

/** Embedded PGlite in memory: for tests and throwaway runs. */
export const layerMemory: Layer.Layer<Sql, StoreError> = layerPglite({})

/** Chooses the database from settings: `databaseUrl` wins, then `inMemory`, else PGlite in `dataDir`. */
export const layer = (settings: DatabaseSettings): Layer.Layer<Sql, StoreError> =>
  Option.match(settings.databaseUrl, {
    onSome: (url) => layerPostgres({ url }),
    onNone: () => settings.inMemory ? layerMemory : layerPglite({ dataDir: settings.dataDir })
  })

/** `layer` with settings from `DATABASE_URL`, `DATA_DIR`, `DATABASE_IN_MEMORY`. */
export const layerFromEnv = Layer.unwrap(Effect.map(readDatabaseSettings, layer))
