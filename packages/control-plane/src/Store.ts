// Store: the control plane's durable state (users, templates, agents, sessions with their state
// history, commands with every lifecycle timestamp) in PostgreSQL or embedded PGlite, through
// effect/sql. It owns the schema (migrated when the layer starts) and the few invariants that must
// hold under concurrency: state machines only move forward, and writes that belong together
// (a session change and its history row) land in one transaction. Policy (who may do what, when a
// command times out, placement) belongs to the services built on top.
//
// Rows are plain TypeScript values: string ids, literal unions for states, `Date` for timestamps
// (taken from Effect's Clock, so TestClock controls them), camelCase fields. JSON columns keep the
// wire shape they were given (e.g. capacity `{cpu, memory, max_sessions}`).
import { PgClient } from "@effect/sql-pg"
import { Context, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import { isSqlError, type SqlError } from "effect/sql/SqlError"
import type { Fragment } from "effect/sql/Statement"
import * as Database from "./Database.ts"
import { runMigrations } from "./internal/migrations.ts"
import { type Entity, StoreError } from "./internal/StoreError.ts"

export { Conflict, DatabaseFailure, type Entity, NotFound, StoreError } from "./internal/StoreError.ts"
export { StoreConfig, type StoreSettings } from "./internal/StoreConfig.ts"

// ---------------------------------------------------------------------------------------------
// Rows

export type Role = "admin" | "user"

export interface User {
  readonly id: string
  readonly name: string
  readonly role: Role
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface NewUser {
  readonly id: string
  readonly name: string
  readonly role: Role
}

export interface Template {
  readonly name: string
  readonly displayName: string
  readonly image: string
  /** Default CPU request, a Kubernetes quantity such as `500m`. */
  readonly cpu: string
  /** Default memory request, a Kubernetes quantity such as `512Mi`. */
  readonly memory: string
  readonly env: Readonly<Record<string, string>>
  readonly vncPort: number
  readonly persistentHome: boolean
  readonly sharedHome: boolean
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface NewTemplate {
  readonly name: string
  readonly displayName: string
  readonly image: string
  readonly cpu: string
  readonly memory: string
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly vncPort: number
  readonly persistentHome?: boolean | undefined
  readonly sharedHome?: boolean | undefined
}

/** What the agent reports about itself; `offline` is only ever set by the control plane. Draining is a separate flag. */
export type AgentStatus = "online" | "offline" | "warning" | "error"
export type EnrollmentState = "pending" | "approved" | "rejected" | "revoked"

/** Allocatable capacity in the wire shape: `{"cpu": "8000m", "memory": "16Gi", "max_sessions": 100}`. */
export interface Capacity {
  readonly cpu: string
  readonly memory: string
  readonly max_sessions: number
}

export interface Agent {
  readonly id: string
  readonly platform: string
  readonly region: string
  readonly version: string
  readonly status: AgentStatus
  readonly enrollment: EnrollmentState
  /** Hash of the current per-agent credential (null until approved, cleared on revoke). */
  readonly credentialHash: string | null
  /** Hash of the credential replaced by the last rotation, valid until `previousCredentialExpiresAt`. */
  readonly previousCredentialHash: string | null
  readonly previousCredentialExpiresAt: Date | null
  readonly capacity: Capacity
  readonly activeSessions: number
  readonly lastHeartbeat: Date | null
  readonly draining: boolean
  readonly createdAt: Date
  readonly updatedAt: Date
  readonly enrollmentChangedAt: Date | null
}

/** The agent's `hello`, as the hub records it. */
export interface AgentHello {
  readonly id: string
  readonly platform: string
  readonly region: string
  readonly version: string
  readonly capacity: Capacity
  /** Default `online`. */
  readonly status?: AgentStatus | undefined
  /** Default 0. */
  readonly activeSessions?: number | undefined
}

export interface AgentHeartbeat {
  readonly status: AgentStatus
  readonly activeSessions: number
  /** Left unchanged when absent. */
  readonly capacity?: Capacity | undefined
}

export type SessionState = "pending" | "creating" | "running" | "terminating" | "terminated" | "failed"

export interface Session {
  readonly id: string
  readonly userId: string
  readonly template: string
  /** Null until placed on an agent. */
  readonly agentId: string | null
  readonly state: SessionState
  /** Short machine-readable cause of the last state, e.g. `ImagePullBackOff`, `AgentLost`. */
  readonly reason: string | null
  readonly message: string | null
  /** The resolved session spec as sent to the agent (wire shape, stored as jsonb). */
  readonly spec: unknown
  /** The region asked for, if any. */
  readonly region: string | null
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface NewSession {
  readonly id: string
  readonly userId: string
  readonly template: string
  readonly agentId: string | null
  readonly spec: unknown
  readonly region?: string | null | undefined
}

/** One row of a session's state history (the first is `pending`, written by `sessions.insert`). */
export interface SessionEvent {
  readonly sessionId: string
  readonly state: SessionState
  readonly reason: string | null
  readonly message: string | null
  readonly at: Date
}

export interface SessionFilter {
  readonly userId?: string | undefined
  readonly agentId?: string | undefined
  readonly states?: ReadonlyArray<SessionState> | undefined
}

export type CommandState = "pending" | "sent" | "ack" | "completed" | "failed"

/** The error of a failed command, in the wire shape (`retryable` is kept when given). */
export interface CommandFailure {
  readonly code: string
  readonly message: string
  readonly retryable?: boolean | undefined
}

export interface Command {
  readonly id: string
  readonly agentId: string
  readonly sessionId: string | null
  /** `create_session`, `delete_session`, `list_sessions`, `vnc_connect`, `vnc_disconnect`, ... */
  readonly action: string
  /** The command's arguments (wire shape). */
  readonly payload: unknown
  readonly traceparent: string | null
  readonly state: CommandState
  readonly result: unknown
  readonly error: CommandFailure | null
  /** How many times it was sent (0 while pending). */
  readonly attempts: number
  readonly deadlineAt: Date
  readonly createdAt: Date
  readonly sentAt: Date | null
  readonly ackedAt: Date | null
  readonly completedAt: Date | null
  readonly failedAt: Date | null
}

export interface NewCommand {
  readonly id: string
  readonly agentId: string
  readonly sessionId?: string | null | undefined
  readonly action: string
  readonly payload: unknown
  readonly traceparent?: string | null | undefined
  readonly deadlineAt: Date
}

/** What a transition or resend did: `changed` is false when the row was already there or past it. */
export interface Transition<A> {
  readonly changed: boolean
  readonly row: A
}

// ---------------------------------------------------------------------------------------------
// The service

export interface StoreShape {
  readonly users: {
    /** Conflict if the id exists. */
    readonly insert: (user: NewUser) => Effect.Effect<User, StoreError>
    /** Inserts, or updates name and role of an existing user (e.g. from each verified JWT). */
    readonly upsert: (user: NewUser) => Effect.Effect<User, StoreError>
    readonly get: (id: string) => Effect.Effect<User, StoreError>
    readonly list: () => Effect.Effect<ReadonlyArray<User>, StoreError>
  }
  readonly templates: {
    /** Conflict if the name exists. */
    readonly insert: (template: NewTemplate) => Effect.Effect<Template, StoreError>
    readonly get: (name: string) => Effect.Effect<Template, StoreError>
    readonly list: () => Effect.Effect<ReadonlyArray<Template>, StoreError>
  }
  readonly agents: {
    /**
     * Records a `hello`: a new id is inserted with enrollment `pending`; a known one gets its platform,
     * region, version, capacity, status and active sessions updated (enrollment and credentials untouched).
     * Either way `lastHeartbeat` is now.
     */
    readonly register: (hello: AgentHello) => Effect.Effect<{ readonly agent: Agent; readonly created: boolean }, StoreError>
    readonly get: (id: string) => Effect.Effect<Agent, StoreError>
    readonly list: () => Effect.Effect<ReadonlyArray<Agent>, StoreError>
    /** Sets status, active sessions, capacity (if given) and `lastHeartbeat` = now. */
    readonly heartbeat: (id: string, beat: AgentHeartbeat) => Effect.Effect<Agent, StoreError>
    readonly setStatus: (id: string, status: AgentStatus) => Effect.Effect<Agent, StoreError>
    readonly setDraining: (id: string, draining: boolean) => Effect.Effect<Agent, StoreError>
    /** pending | rejected | revoked -> approved with this credential hash (no previous one). Conflict if approved. */
    readonly approve: (id: string, credentialHash: string) => Effect.Effect<Agent, StoreError>
    /** pending -> rejected. Conflict otherwise. */
    readonly reject: (id: string) => Effect.Effect<Agent, StoreError>
    /** pending | approved -> revoked, clearing both credential hashes. Conflict otherwise. */
    readonly revoke: (id: string) => Effect.Effect<Agent, StoreError>
    /**
     * Approved agents only (else Conflict): the current hash becomes the previous one, valid until
     * `previousValidUntil`; `credentialHash` becomes current.
     */
    readonly rotateCredential: (
      id: string,
      credentialHash: string,
      previousValidUntil: Date
    ) => Effect.Effect<Agent, StoreError>
  }
  readonly sessions: {
    /**
     * Inserts in state `pending` with its first history row, in one transaction. NotFound if the user,
     * template or agent does not exist; Conflict if the id exists.
     */
    readonly insert: (session: NewSession) => Effect.Effect<Session, StoreError>
    readonly get: (id: string) => Effect.Effect<Session, StoreError>
    /** Oldest first. */
    readonly list: (filter?: SessionFilter) => Effect.Effect<ReadonlyArray<Session>, StoreError>
    /**
     * Moves forward only: pending -> creating -> running -> terminating -> terminated (steps may be
     * skipped), or to failed from any non-final state. terminated and failed are final. When it moves,
     * reason/message are set (null when absent) and a history row is appended in the same transaction;
     * otherwise nothing is written and `changed` is false. NotFound for an unknown id.
     */
    readonly transition: (
      id: string,
      to: Exclude<SessionState, "pending">,
      detail?: { readonly reason?: string | undefined; readonly message?: string | undefined }
    ) => Effect.Effect<Transition<Session>, StoreError>
    /** The state history, oldest first. NotFound for an unknown id. */
    readonly history: (id: string) => Effect.Effect<ReadonlyArray<SessionEvent>, StoreError>
    /** Sessions not yet terminated or failed, per agent (agents with none are absent). */
    readonly countActiveByAgent: () => Effect.Effect<ReadonlyMap<string, number>, StoreError>
  }
  readonly commands: {
    /** Inserts in state `pending`, attempts 0. NotFound if the agent or session does not exist; Conflict if the id exists. */
    readonly insert: (command: NewCommand) => Effect.Effect<Command, StoreError>
    readonly get: (id: string) => Effect.Effect<Command, StoreError>
    /** pending, sent and ack commands (of one agent, or all), oldest first: what to redeliver or time out after a restart. */
    readonly listUnfinished: (agentId?: string) => Effect.Effect<ReadonlyArray<Command>, StoreError>
    /** A session's commands, oldest first. */
    readonly listBySession: (sessionId: string) => Effect.Effect<ReadonlyArray<Command>, StoreError>
    /**
     * Moves forward only: pending -> sent -> ack -> completed | failed (steps may be skipped; completed
     * and failed are final). Stamps `sentAt` (and counts an attempt), `ackedAt`, `completedAt` with
     * `result`, or `failedAt` with `error`. Returns `changed: false` and writes nothing when the command
     * is already there or past it. NotFound for an unknown id.
     */
    readonly transition: (
      id: string,
      to: Exclude<CommandState, "pending">,
      outcome?: { readonly result?: unknown; readonly error?: CommandFailure | undefined }
    ) => Effect.Effect<Transition<Command>, StoreError>
    /** Records a redelivery of a `sent` or `ack` command: attempts + 1 and `sentAt` = now, state unchanged. */
    readonly resend: (id: string) => Effect.Effect<Transition<Command>, StoreError>
  }
  /**
   * Runs `effect` in one database transaction: store calls inside it commit or roll back together
   * (e.g. a session and its create command). Nested calls use savepoints. On PGlite the one
   * connection is held for the whole transaction, so keep it short and never wait on other work.
   */
  readonly withTransaction: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E | StoreError, R>
}

export class Store extends Context.Service<Store, StoreShape>()("control-plane/Store") {
  /** Runs the migrations, then serves the store over the `SqlClient`/`PgClient` it is given. */
  // suspend: `make` is defined below the class
  static readonly layerNoDeps: Layer.Layer<Store, StoreError, Database.Sql> = Layer.effect(Store, Effect.suspend(() => make))
  /** The store on the database chosen by `DATABASE_URL`, `DATA_DIR`, `DATABASE_IN_MEMORY`. */
  static readonly layer = Store.layerNoDeps.pipe(Layer.provide(Database.layerFromEnv))
  /** The store on a fresh in-memory PGlite: for tests. */
  static readonly layerMemory = Store.layerNoDeps.pipe(Layer.provide(Database.layerMemory))
  /** The store on the database chosen by explicit settings (what a config service passes). */
  static readonly layerSettings = (settings: Database.StoreSettings) =>
    Store.layerNoDeps.pipe(Layer.provide(Database.layer(settings)))
}

// ---------------------------------------------------------------------------------------------
// Implementation

type Row = Record<string, unknown>

const date = (v: unknown): Date => (v instanceof Date ? v : new Date(String(v)))
const dateOrNull = (v: unknown): Date | null => (v === null || v === undefined ? null : date(v))
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v))

const toUser = (r: Row): User => ({
  id: r.id as string,
  name: r.name as string,
  role: r.role as Role,
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

const toTemplate = (r: Row): Template => ({
  name: r.name as string,
  displayName: r.display_name as string,
  image: r.image as string,
  cpu: r.cpu as string,
  memory: r.memory as string,
  env: (r.env ?? {}) as Record<string, string>,
  vncPort: Number(r.vnc_port),
  persistentHome: r.persistent_home as boolean,
  sharedHome: r.shared_home as boolean,
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

const toAgent = (r: Row): Agent => ({
  id: r.id as string,
  platform: r.platform as string,
  region: r.region as string,
  version: r.version as string,
  status: r.status as AgentStatus,
  enrollment: r.enrollment as EnrollmentState,
  credentialHash: strOrNull(r.credential_hash),
  previousCredentialHash: strOrNull(r.previous_credential_hash),
  previousCredentialExpiresAt: dateOrNull(r.previous_credential_expires_at),
  capacity: r.capacity as Capacity,
  activeSessions: Number(r.active_sessions),
  lastHeartbeat: dateOrNull(r.last_heartbeat),
  draining: r.draining as boolean,
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at),
  enrollmentChangedAt: dateOrNull(r.enrollment_changed_at)
})

const toSession = (r: Row): Session => ({
  id: r.id as string,
  userId: r.user_id as string,
  template: r.template as string,
  agentId: strOrNull(r.agent_id),
  state: r.state as SessionState,
  reason: strOrNull(r.reason),
  message: strOrNull(r.message),
  spec: r.spec,
  region: strOrNull(r.region),
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

const toSessionEvent = (r: Row): SessionEvent => ({
  sessionId: r.session_id as string,
  state: r.state as SessionState,
  reason: strOrNull(r.reason),
  message: strOrNull(r.message),
  at: date(r.at)
})

const toCommand = (r: Row): Command => ({
  id: r.id as string,
  agentId: r.agent_id as string,
  sessionId: strOrNull(r.session_id),
  action: r.action as string,
  payload: r.payload,
  traceparent: strOrNull(r.traceparent),
  state: r.state as CommandState,
  result: r.result ?? null,
  error: (r.error ?? null) as CommandFailure | null,
  attempts: Number(r.attempts),
  deadlineAt: date(r.deadline_at),
  createdAt: date(r.created_at),
  sentAt: dateOrNull(r.sent_at),
  ackedAt: dateOrNull(r.acked_at),
  completedAt: dateOrNull(r.completed_at),
  failedAt: dateOrNull(r.failed_at)
})

/** Where each target state may be reached from (forward only). */
const sessionFrom: Record<Exclude<SessionState, "pending">, ReadonlyArray<SessionState>> = {
  creating: ["pending"],
  running: ["pending", "creating"],
  terminating: ["pending", "creating", "running"],
  terminated: ["pending", "creating", "running", "terminating"],
  failed: ["pending", "creating", "running", "terminating"]
}
const commandFrom: Record<Exclude<CommandState, "pending">, ReadonlyArray<CommandState>> = {
  sent: ["pending"],
  ack: ["pending", "sent"],
  completed: ["pending", "sent", "ack"],
  failed: ["pending", "sent", "ack"]
}
const ACTIVE_SESSION_STATES: ReadonlyArray<SessionState> = ["pending", "creating", "running", "terminating"]
const UNFINISHED_COMMAND_STATES: ReadonlyArray<CommandState> = ["pending", "sent", "ack"]

/** Maps driver errors: a duplicate key is a Conflict, a missing reference a NotFound, the rest Database. */
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

const make = Effect.gen(function*() {
  const sql = yield* SqlClient
  const pg = yield* PgClient.PgClient

  yield* runMigrations.pipe(Effect.mapError((e) => StoreError.database(e, "migrations failed")))

  const now = Effect.map(Effect.clockWith((c) => c.currentTimeMillis), (ms) => new Date(ms))
  const json = (v: unknown) => pg.json(v ?? null)
  const jsonOrNull = (v: unknown) => (v === undefined || v === null ? null : pg.json(v))

  /** Runs a query for one entity, mapping driver errors. */
  const q = <A>(entity: Entity, id: string, eff: Effect.Effect<A, SqlError>) => Effect.mapError(eff, dbError(entity, id))

  const one = <A>(entity: Entity, id: string, rows: ReadonlyArray<Row>, to: (r: Row) => A) =>
    rows.length === 0 ? Effect.fail(StoreError.notFound(entity, id)) : Effect.succeed(to(rows[0]!))

  const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
    sql.withTransaction(effect).pipe(
      Effect.mapError((e): E | StoreError => (isSqlError(e) ? StoreError.database(e, "transaction failed") : e as E))
    )

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

  // --- users

  const users: StoreShape["users"] = {
    insert: Effect.fn("Store.users.insert")(function*(u: NewUser) {
      const at = yield* now
      const rows = yield* q("user", u.id, sql<Row>`INSERT INTO users ${sql.insert({ id: u.id, name: u.name, role: u.role, created_at: at, updated_at: at })} RETURNING *`)
      return toUser(rows[0]!)
    }),
    upsert: Effect.fn("Store.users.upsert")(function*(u: NewUser) {
      const at = yield* now
      const rows = yield* q(
        "user",
        u.id,
        sql<Row>`INSERT INTO users ${sql.insert({ id: u.id, name: u.name, role: u.role, created_at: at, updated_at: at })}
          ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, role = EXCLUDED.role, updated_at = EXCLUDED.updated_at
          RETURNING *`
      )
      return toUser(rows[0]!)
    }),
    get: Effect.fn("Store.users.get")(function*(id: string) {
      return yield* one("user", id, yield* q("user", id, sql<Row>`SELECT * FROM users WHERE id = ${id}`), toUser)
    }),
    list: Effect.fn("Store.users.list")(function*() {
      return (yield* q("user", "*", sql<Row>`SELECT * FROM users ORDER BY id`)).map(toUser)
    })
  }

  // --- templates

  const templates: StoreShape["templates"] = {
    insert: Effect.fn("Store.templates.insert")(function*(t: NewTemplate) {
      const at = yield* now
      const rows = yield* q(
        "template",
        t.name,
        sql<Row>`INSERT INTO templates ${
          sql.insert({
            name: t.name,
            display_name: t.displayName,
            image: t.image,
            cpu: t.cpu,
            memory: t.memory,
            env: json(t.env ?? {}),
            vnc_port: t.vncPort,
            persistent_home: t.persistentHome ?? false,
            shared_home: t.sharedHome ?? false,
            created_at: at,
            updated_at: at
          })
        } RETURNING *`
      )
      return toTemplate(rows[0]!)
    }),
    get: Effect.fn("Store.templates.get")(function*(name: string) {
      return yield* one("template", name, yield* q("template", name, sql<Row>`SELECT * FROM templates WHERE name = ${name}`), toTemplate)
    }),
    list: Effect.fn("Store.templates.list")(function*() {
      return (yield* q("template", "*", sql<Row>`SELECT * FROM templates ORDER BY name`)).map(toTemplate)
    })
  }

  // --- agents

  const getAgent = (id: string) =>
    q("agent", id, sql<Row>`SELECT * FROM agents WHERE id = ${id}`).pipe(Effect.flatMap((rows) => one("agent", id, rows, toAgent)))

  /** An UPDATE ... RETURNING * of one agent; NotFound when no row matched. */
  const updateAgent = (id: string, stmt: Effect.Effect<ReadonlyArray<Row>, SqlError>) =>
    q("agent", id, stmt).pipe(Effect.flatMap((rows) => one("agent", id, rows, toAgent)))

  /** An enrollment change allowed only from `from`: Conflict naming the current state otherwise. */
  const enroll = (
    id: string,
    verb: string,
    from: ReadonlyArray<EnrollmentState>,
    set: Fragment
  ) =>
    Effect.gen(function*() {
      const at = yield* now
      const rows = yield* q(
        "agent",
        id,
        sql<Row>`UPDATE agents SET ${set}, enrollment_changed_at = ${at}, updated_at = ${at}
          WHERE id = ${id} AND enrollment IN ${sql.in(from)} RETURNING *`
      )
      if (rows.length > 0) return toAgent(rows[0]!)
      const current = yield* getAgent(id)
      return yield* Effect.fail(
        StoreError.conflict("agent", id, `cannot ${verb} agent ${JSON.stringify(id)}: it is ${current.enrollment}`)
      )
    })

  const agents: StoreShape["agents"] = {
    register: Effect.fn("Store.agents.register")(function*(h: AgentHello) {
      const at = yield* now
      const rows = yield* q(
        "agent",
        h.id,
        sql<Row>`INSERT INTO agents ${
          sql.insert({
            id: h.id,
            platform: h.platform,
            region: h.region,
            version: h.version,
            status: h.status ?? "online",
            enrollment: "pending",
            capacity: json(h.capacity),
            active_sessions: h.activeSessions ?? 0,
            last_heartbeat: at,
            draining: false,
            created_at: at,
            updated_at: at
          })
        }
        ON CONFLICT (id) DO UPDATE SET platform = EXCLUDED.platform, region = EXCLUDED.region, version = EXCLUDED.version,
          status = EXCLUDED.status, capacity = EXCLUDED.capacity, active_sessions = EXCLUDED.active_sessions,
          last_heartbeat = EXCLUDED.last_heartbeat, updated_at = EXCLUDED.updated_at
        RETURNING *, (xmax = 0) AS inserted`
      )
      const row = rows[0]!
      return { agent: toAgent(row), created: row.inserted === true }
    }),
    get: Effect.fn("Store.agents.get")(function*(id: string) {
      return yield* getAgent(id)
    }),
    list: Effect.fn("Store.agents.list")(function*() {
      return (yield* q("agent", "*", sql<Row>`SELECT * FROM agents ORDER BY id`)).map(toAgent)
    }),
    heartbeat: Effect.fn("Store.agents.heartbeat")(function*(id: string, beat: AgentHeartbeat) {
      const at = yield* now
      const capacity = beat.capacity === undefined ? sql`capacity` : sql`${json(beat.capacity)}`
      return yield* updateAgent(
        id,
        sql<Row>`UPDATE agents SET status = ${beat.status}, active_sessions = ${beat.activeSessions}, capacity = ${capacity},
          last_heartbeat = ${at}, updated_at = ${at} WHERE id = ${id} RETURNING *`
      )
    }),
    setStatus: Effect.fn("Store.agents.setStatus")(function*(id: string, status: AgentStatus) {
      const at = yield* now
      return yield* updateAgent(id, sql<Row>`UPDATE agents SET status = ${status}, updated_at = ${at} WHERE id = ${id} RETURNING *`)
    }),
    setDraining: Effect.fn("Store.agents.setDraining")(function*(id: string, draining: boolean) {
      const at = yield* now
      return yield* updateAgent(id, sql<Row>`UPDATE agents SET draining = ${draining}, updated_at = ${at} WHERE id = ${id} RETURNING *`)
    }),
    approve: Effect.fn("Store.agents.approve")(function*(id: string, credentialHash: string) {
      return yield* enroll(
        id,
        "approve",
        ["pending", "rejected", "revoked"],
        sql`enrollment = 'approved', credential_hash = ${credentialHash}, previous_credential_hash = NULL, previous_credential_expires_at = NULL`
      )
    }),
    reject: Effect.fn("Store.agents.reject")(function*(id: string) {
      return yield* enroll(id, "reject", ["pending"], sql`enrollment = 'rejected'`)
    }),
    revoke: Effect.fn("Store.agents.revoke")(function*(id: string) {
      return yield* enroll(
        id,
        "revoke",
        ["pending", "approved"],
        sql`enrollment = 'revoked', credential_hash = NULL, previous_credential_hash = NULL, previous_credential_expires_at = NULL`
      )
    }),
    rotateCredential: Effect.fn("Store.agents.rotateCredential")(
      function*(id: string, credentialHash: string, previousValidUntil: Date) {
        const at = yield* now
        const rows = yield* q(
          "agent",
          id,
          sql<Row>`UPDATE agents SET previous_credential_hash = credential_hash, previous_credential_expires_at = ${previousValidUntil},
            credential_hash = ${credentialHash}, updated_at = ${at}
            WHERE id = ${id} AND enrollment = 'approved' RETURNING *`
        )
        if (rows.length > 0) return toAgent(rows[0]!)
        const current = yield* getAgent(id)
        return yield* Effect.fail(
          StoreError.conflict("agent", id, `cannot rotate the credential of agent ${JSON.stringify(id)}: it is ${current.enrollment}`)
        )
      }
    )
  }

  // --- sessions

  const getSession = (id: string) =>
    q("session", id, sql<Row>`SELECT * FROM sessions WHERE id = ${id}`).pipe(Effect.flatMap((rows) => one("session", id, rows, toSession)))

  const sessions: StoreShape["sessions"] = {
    insert: Effect.fn("Store.sessions.insert")(function*(s: NewSession) {
      const at = yield* now
      // One statement (so atomic without a transaction): the session row and its first history row. A missing
      // user, template or agent fails the foreign key; only then is each looked up, to name it in NotFound.
      const rows = yield* refsChecked(
        "session",
        s.id,
        sql<Row>`WITH s AS (
            INSERT INTO sessions ${
          sql.insert({
            id: s.id,
            user_id: s.userId,
            template: s.template,
            agent_id: s.agentId,
            state: "pending",
            reason: null,
            message: null,
            spec: json(s.spec),
            region: s.region ?? null,
            created_at: at,
            updated_at: at
          })
        } RETURNING *
          ), h AS (
            INSERT INTO session_history (session_id, state, reason, message, at) SELECT id, state, reason, message, created_at FROM s
          )
          SELECT * FROM s`,
        Effect.gen(function*() {
          yield* mustExist("user", s.userId, "users", "id")
          yield* mustExist("template", s.template, "templates", "name")
          if (s.agentId !== null) yield* mustExist("agent", s.agentId, "agents", "id")
        })
      )
      return toSession(rows[0]!)
    }),
    get: Effect.fn("Store.sessions.get")(function*(id: string) {
      return yield* getSession(id)
    }),
    list: Effect.fn("Store.sessions.list")(function*(filter?: SessionFilter) {
      const clauses: Array<Fragment> = []
      if (filter?.userId !== undefined) clauses.push(sql`user_id = ${filter.userId}`)
      if (filter?.agentId !== undefined) clauses.push(sql`agent_id = ${filter.agentId}`)
      if (filter?.states !== undefined) {
        clauses.push(filter.states.length === 0 ? sql`false` : sql`state IN ${sql.in(filter.states)}`)
      }
      const where = clauses.length === 0 ? sql`` : sql`WHERE ${sql.and(clauses)}`
      return (yield* q("session", "*", sql<Row>`SELECT * FROM sessions ${where} ORDER BY created_at, id`)).map(toSession)
    }),
    transition: Effect.fn("Store.sessions.transition")(function*(
      id: string,
      to: Exclude<SessionState, "pending">,
      detail?: { readonly reason?: string | undefined; readonly message?: string | undefined }
    ) {
      const at = yield* now
      const reason = detail?.reason ?? null
      const message = detail?.message ?? null
      // One statement: the guarded update and, only when it matched, the history row.
      const rows = yield* q(
        "session",
        id,
        sql<Row>`WITH u AS (
            UPDATE sessions SET state = ${to}, reason = ${reason}, message = ${message}, updated_at = ${at}
            WHERE id = ${id} AND state IN ${sql.in(sessionFrom[to])} RETURNING *
          ), h AS (
            INSERT INTO session_history (session_id, state, reason, message, at) SELECT id, state, reason, message, updated_at FROM u
          )
          SELECT * FROM u`
      )
      if (rows.length === 0) return { changed: false, row: yield* getSession(id) }
      return { changed: true, row: toSession(rows[0]!) }
    }),
    history: Effect.fn("Store.sessions.history")(function*(id: string) {
      const rows = yield* q("session", id, sql<Row>`SELECT * FROM session_history WHERE session_id = ${id} ORDER BY seq`)
      if (rows.length === 0) yield* getSession(id) // NotFound, or (impossibly) a session without history
      return rows.map(toSessionEvent)
    }),
    countActiveByAgent: Effect.fn("Store.sessions.countActiveByAgent")(function*() {
      const rows = yield* q(
        "session",
        "*",
        sql<Row>`SELECT agent_id, count(*)::int AS n FROM sessions
          WHERE agent_id IS NOT NULL AND state IN ${sql.in(ACTIVE_SESSION_STATES)} GROUP BY agent_id`
      )
      return new Map(rows.map((r) => [r.agent_id as string, Number(r.n)]))
    })
  }

  // --- commands

  const getCommand = (id: string) =>
    q("command", id, sql<Row>`SELECT * FROM commands WHERE id = ${id}`).pipe(Effect.flatMap((rows) => one("command", id, rows, toCommand)))

  const commands: StoreShape["commands"] = {
    insert: Effect.fn("Store.commands.insert")(function*(c: NewCommand) {
      const at = yield* now
      const sessionId = c.sessionId ?? null
      const rows = yield* refsChecked(
        "command",
        c.id,
        sql<Row>`INSERT INTO commands ${
          sql.insert({
            id: c.id,
            agent_id: c.agentId,
            session_id: sessionId,
            action: c.action,
            payload: json(c.payload),
            traceparent: c.traceparent ?? null,
            state: "pending",
            result: null,
            error: null,
            attempts: 0,
            deadline_at: c.deadlineAt,
            created_at: at
          })
        } RETURNING *`,
        Effect.gen(function*() {
          yield* mustExist("agent", c.agentId, "agents", "id")
          if (sessionId !== null) yield* mustExist("session", sessionId, "sessions", "id")
        })
      )
      return toCommand(rows[0]!)
    }),
    get: Effect.fn("Store.commands.get")(function*(id: string) {
      return yield* getCommand(id)
    }),
    listUnfinished: Effect.fn("Store.commands.listUnfinished")(function*(agentId?: string) {
      const byAgent = agentId === undefined ? sql`` : sql`AND agent_id = ${agentId}`
      return (yield* q(
        "command",
        agentId ?? "*",
        sql<Row>`SELECT * FROM commands WHERE state IN ${sql.in(UNFINISHED_COMMAND_STATES)} ${byAgent} ORDER BY created_at, id`
      )).map(toCommand)
    }),
    listBySession: Effect.fn("Store.commands.listBySession")(function*(sessionId: string) {
      return (yield* q("command", sessionId, sql<Row>`SELECT * FROM commands WHERE session_id = ${sessionId} ORDER BY created_at, id`))
        .map(toCommand)
    }),
    transition: Effect.fn("Store.commands.transition")(function*(
      id: string,
      to: Exclude<CommandState, "pending">,
      outcome?: { readonly result?: unknown; readonly error?: CommandFailure | undefined }
    ) {
      const at = yield* now
      const set = to === "sent"
        ? sql`sent_at = ${at}, attempts = attempts + 1`
        : to === "ack"
        ? sql`acked_at = ${at}`
        : to === "completed"
        ? sql`completed_at = ${at}, result = ${jsonOrNull(outcome?.result)}`
        : sql`failed_at = ${at}, error = ${jsonOrNull(outcome?.error)}`
      const rows = yield* q(
        "command",
        id,
        sql<Row>`UPDATE commands SET state = ${to}, ${set} WHERE id = ${id} AND state IN ${sql.in(commandFrom[to])} RETURNING *`
      )
      if (rows.length === 0) return { changed: false, row: yield* getCommand(id) }
      return { changed: true, row: toCommand(rows[0]!) }
    }),
    resend: Effect.fn("Store.commands.resend")(function*(id: string) {
      const at = yield* now
      const rows = yield* q(
        "command",
        id,
        sql<Row>`UPDATE commands SET attempts = attempts + 1, sent_at = ${at} WHERE id = ${id} AND state IN ('sent', 'ack') RETURNING *`
      )
      if (rows.length === 0) return { changed: false, row: yield* getCommand(id) }
      return { changed: true, row: toCommand(rows[0]!) }
    })
  }

  return Store.of({ users, templates, agents, sessions, commands, withTransaction })
})
