// The control plane's SQL connection: one driver (@effect/sql-pg) for both stores.
//
// * `DATABASE_URL=postgres://...`: a real PostgreSQL, through a pool.
// * otherwise an embedded PGlite (Postgres in WebAssembly) persisted in `DATA_DIR`, or in memory,
//   served in-process over the Postgres wire protocol by pglite-socket on a unix socket in a
//   private temp directory (no TCP port: the embedded server has no authentication).
//
// PGlite is one backend session: every connection shares it, so the pool holds exactly one
// connection (and the socket server accepts a few, only so a reconnect never finds the slot
// taken by a dying socket). Queries from concurrent fibers queue for that connection; a
// transaction keeps it until commit. Closing the layer closes the client, then the socket
// server, then PGlite, which flushes to DATA_DIR.
import type { PGlite } from "@electric-sql/pglite"
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { PgClient } from "@effect/sql-pg"
import { Duration, Effect, Layer, Option, Redacted } from "effect"
import type { SqlClient } from "effect/sql"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { openPglite } from "./internal/pglite.ts"
import { StoreConfig, type StoreSettings } from "./internal/StoreConfig.ts"
import { StoreError } from "./internal/StoreError.ts"

export type { StoreSettings } from "./internal/StoreConfig.ts"

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

const startPglite = (dataDir: string | undefined) =>
  Effect.acquireRelease(
    mapSqlError(
      Effect.tryPromise(() => {
        if (dataDir !== undefined) fs.mkdirSync(dataDir, { recursive: true })
        return openPglite(dataDir)
      }),
      dataDir === undefined ? "cannot start the in-memory PGlite" : `cannot open the PGlite database in ${dataDir}`
    ),
    (db: PGlite) =>
      Effect.tryPromise(() => db.close()).pipe(
        Effect.catch((e) => Effect.logWarning("PGlite close failed", e))
      )
  )

const startSocketServer = (db: PGlite) =>
  Effect.acquireRelease(
    mapSqlError(
      Effect.tryPromise(async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-pg-")) // mode 0700
        const socketPath = path.join(dir, ".s.PGSQL.5432")
        const server = new PGLiteSocketServer({ db, path: socketPath, maxConnections: 4 })
        try {
          await server.start()
        } catch (e) {
          fs.rmSync(dir, { recursive: true, force: true })
          throw e
        }
        return { server, dir, socketPath }
      }),
      "cannot start the PGlite socket server"
    ),
    ({ dir, server }) =>
      Effect.tryPromise(() => server.stop()).pipe(
        Effect.catch((e) => Effect.logWarning("PGlite socket server stop failed", e)),
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
      const db = yield* startPglite(options.dataDir === undefined ? undefined : path.resolve(options.dataDir))
      const { socketPath } = yield* startSocketServer(db)
      return yield* connect(PgClient.make({
        path: socketPath,
        username: "postgres",
        database: "postgres",
        maxConnections: 1,
        minConnections: 1,
        // keep the single connection: PGlite's session outlives sockets, so churn only leaks prepared statements
        idleTimeout: Duration.infinity,
        connectTimeout: Duration.seconds(30)
      }), "cannot connect to the embedded PGlite")
    })
  )

/** Embedded PGlite in memory: for tests and throwaway runs. */
export const layerMemory: Layer.Layer<Sql, StoreError> = layerPglite({})

/** Chooses the database from settings: `databaseUrl` wins, then `inMemory`, else PGlite in `dataDir`. */
export const layer = (settings: StoreSettings): Layer.Layer<Sql, StoreError> =>
  Option.match(settings.databaseUrl, {
    onSome: (url) => layerPostgres({ url }),
    onNone: () => settings.inMemory ? layerMemory : layerPglite({ dataDir: settings.dataDir })
  })

/** `layer` with settings from `DATABASE_URL`, `DATA_DIR`, `DATABASE_IN_MEMORY`. */
export const layerFromEnv = Layer.unwrap(Effect.map(StoreConfig, layer))
