// The store's environment variables. The control plane's config service embeds this description,
// so these variables are read in one place and fail at start with a message naming the variable.
import { Config, Option, Redacted, Schema } from "effect"

/** Where the store keeps its data. */
export interface StoreSettings {
  /** A real PostgreSQL (`postgres://` or `postgresql://` URL); when set, the embedded database is not used. */
  readonly databaseUrl: Option.Option<Redacted.Redacted<string>>
  /** Directory of the embedded PGlite database (ignored with `databaseUrl` or `inMemory`). */
  readonly dataDir: string
  /** Keep the embedded database in memory: everything is lost at exit. */
  readonly inMemory: boolean
}

const PostgresUrl = Schema.String.pipe(
  Schema.check(
    Schema.isPattern(/^postgres(ql)?:\/\/.+/, { message: "must be a postgres:// or postgresql:// URL" })
  )
)

/**
 * `DATABASE_URL` (optional, secret), `DATA_DIR` (default `./data`), `DATABASE_IN_MEMORY` (default false).
 */
export const StoreConfig: Config.Config<StoreSettings> = Config.all({
  databaseUrl: Config.option(Config.schema(PostgresUrl, "DATABASE_URL").pipe(Config.map(Redacted.make))),
  dataDir: Config.NonEmptyString("DATA_DIR").pipe(Config.withDefault("./data")),
  inMemory: Config.Boolean("DATABASE_IN_MEMORY").pipe(Config.withDefault(false))
})
