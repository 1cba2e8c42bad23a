// Store: the control plane's durable state (users, templates, agents, sessions with their state history,
// commands with every lifecycle timestamp) in PostgreSQL or embedded PGlite, through effect/sql. It owns the
// schema (migrated when the layer starts) and the few invariants that must hold under concurrency: state
// machines only move forward, and writes that belong together (a session change and its history row) land in
// one statement. Policy (who may do what, when a command times out, placement) belongs to the services on top.
//
// One module per table under internal/store/, each with its record type and row mapper. Records are the one
// shape of each entity in the control plane: branded ids, the protocol's types for wire values (capacity,
// session spec, command payloads), `undefined` for absent values, `Date` for timestamps (from Effect's Clock,
// so TestClock controls them).
import { Context, Effect, Layer } from "effect"
import { isSqlError } from "effect/sql/SqlError"
import * as Database from "./Database.ts"
import { type AgentsTable, makeAgents } from "./internal/store/agents.ts"
import { type AuditTable, makeAudit } from "./internal/store/audit.ts"
import { type CommandsTable, makeCommands } from "./internal/store/commands.ts"
import { makeDb } from "./internal/store/db.ts"
import { type HomesTable, makeHomes } from "./internal/store/homes.ts"
import { type LoginsTable, makeLogins } from "./internal/store/logins.ts"
import { StoreError } from "./internal/store/error.ts"
import { runMigrations } from "./internal/store/migrations.ts"
import { makeRecordingPolicies, type RecordingPoliciesTable } from "./internal/store/recordingPolicies.ts"
import { makeSessions, type SessionsTable } from "./internal/store/sessions.ts"
import { makeShares, type SharesTable } from "./internal/store/shares.ts"
import { makeTeams, type TeamsTable } from "./internal/store/teams.ts"
import { makeTemplates, type TemplatesTable } from "./internal/store/templates.ts"
import { makeTicketUses, type TicketUsesTable } from "./internal/store/ticketUses.ts"
import { makeUsers, type UsersTable } from "./internal/store/users.ts"

export type { AgentBeat, AgentRecord, AgentRegistration, EnrollmentState } from "./internal/store/agents.ts"
export { type AuditEvent, type AuditPage, auditPage, type AuditTable, type NewAuditEvent } from "./internal/store/audit.ts"
export type { CommandRecord, NewCommand } from "./internal/store/commands.ts"
export type { HomeRecord } from "./internal/store/homes.ts"
export type { Transition } from "./internal/store/db.ts"
export { Conflict, DatabaseFailure, type Entity, NotFound, StoreError } from "./internal/store/error.ts"
export type { Actor, NewSession, SessionEvent, SessionFilter, SessionKey, SessionRecord, TransitionDetail } from "./internal/store/sessions.ts"
export {
  DEFAULT_RESOURCES,
  type NewTemplate,
  patchedTemplate,
  type TemplatePatch,
  type TemplateRecord,
  templateRecord
} from "./internal/store/templates.ts"
export type { HomeCharge, NewTeam, TeamPatch, TeamQuota, TeamRecord, TeamsTable } from "./internal/store/teams.ts"
export type { ControlMode, ShareAccess, ShareLinkRecord, ShareRecord, SharesTable } from "./internal/store/shares.ts"
export type { RecordingPoliciesTable, RecordingPolicy } from "./internal/store/recordingPolicies.ts"
export type { LoginAttemptRecord, LoginSessionRecord, LoginsTable, NewLoginSession } from "./internal/store/logins.ts"
export type { LoginUser, NewUser, UserRecord } from "./internal/store/users.ts"

export interface StoreShape {
  readonly users: UsersTable
  readonly templates: TemplatesTable
  readonly agents: AgentsTable
  readonly sessions: SessionsTable
  readonly commands: CommandsTable
  readonly audit: AuditTable
  readonly homes: HomesTable
  readonly shares: SharesTable
  readonly teams: TeamsTable
  readonly recordingPolicies: RecordingPoliciesTable
  readonly logins: LoginsTable
  readonly ticketUses: TicketUsesTable
  /**
   * Runs `effect` in one database transaction: store calls inside it commit or roll back together. Nested
   * calls use savepoints. On PGlite the one connection is held for the whole transaction, so keep it short
   * and never wait on other work.
   */
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
}

/** Runs the migrations, then serves the tables over the `SqlClient`/`PgClient` in context. */
export const make = Effect.gen(function*() {
  yield* runMigrations.pipe(Effect.mapError((e) => StoreError.database(e, "migrations failed")))
  const db = yield* makeDb
  return Store.of({
    users: makeUsers(db),
    templates: makeTemplates(db),
    agents: makeAgents(db),
    sessions: makeSessions(db),
    commands: makeCommands(db),
    audit: makeAudit(db),
    homes: makeHomes(db),
    shares: makeShares(db),
    teams: makeTeams(db),
    recordingPolicies: makeRecordingPolicies(db),
    logins: makeLogins(db),
    ticketUses: makeTicketUses(db),
    withTransaction: (effect) =>
      db.sql.withTransaction(effect).pipe(
        Effect.mapError((e) => (isSqlError(e) ? StoreError.database(e, "transaction failed") : e))
      )
  })
})

export class Store extends Context.Service<Store, StoreShape>()("control-plane/Store") {
  /** The store over the database in context. */
  static readonly layerNoDeps: Layer.Layer<Store, StoreError, Database.Sql> = Layer.effect(Store, Effect.suspend(() => make))
  /** The store on the database chosen by `DATABASE_URL`, `DATA_DIR`, `DATABASE_IN_MEMORY`. */
  static readonly layer = Store.layerNoDeps.pipe(Layer.provide(Database.layerFromEnv))
  /** The store on a fresh in-memory PGlite: for tests. */
  static readonly layerMemory = Store.layerNoDeps.pipe(Layer.provide(Database.layerMemory))
  /** The store on the database chosen by its settings (what ControlPlaneConfig parsed). */
  static readonly layerSettings = (settings: Database.DatabaseSettings) => Store.layerNoDeps.pipe(Layer.provide(Database.layer(settings)))
}
