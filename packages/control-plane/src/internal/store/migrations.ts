// The store's schema, as ordered migrations run by effect/sql's Migrator at start (recorded in
// `effect_sql_migrations`; all pending ones run in one transaction under a table lock, so two
// control planes starting together do not both migrate). Never edit a released migration: add one.
//
// Timestamps are timestamptz written by the store from Effect's Clock (not the database's now()),
// so tests with TestClock see the times they set. Every statement is its own query: the extended
// protocol that sql-pg speaks runs one statement per query.
import { Effect } from "effect"
import * as Migrator from "effect/sql/Migrator"
import { SqlClient } from "effect/sql/SqlClient"

const statements = (...queries: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    for (const q of queries) yield* sql.unsafe(q)
  })

const initial = statements(
  `CREATE TABLE users (
    id text PRIMARY KEY,
    name text NOT NULL,
    role text NOT NULL CHECK (role IN ('admin', 'user')),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  )`,
  `CREATE TABLE templates (
    name text PRIMARY KEY,
    display_name text NOT NULL,
    image text NOT NULL,
    cpu text NOT NULL,
    memory text NOT NULL,
    env jsonb NOT NULL DEFAULT '{}'::jsonb,
    vnc_port integer NOT NULL CHECK (vnc_port BETWEEN 1 AND 65535),
    persistent_home boolean NOT NULL DEFAULT false,
    shared_home boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  )`,
  `CREATE TABLE agents (
    id text PRIMARY KEY,
    platform text NOT NULL,
    region text NOT NULL,
    version text NOT NULL,
    status text NOT NULL CHECK (status IN ('online', 'offline', 'warning', 'error')),
    enrollment text NOT NULL CHECK (enrollment IN ('pending', 'approved', 'rejected', 'revoked')),
    credential_hash text,
    previous_credential_hash text,
    previous_credential_expires_at timestamptz,
    capacity jsonb NOT NULL,
    active_sessions integer NOT NULL DEFAULT 0,
    last_heartbeat timestamptz,
    draining boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    enrollment_changed_at timestamptz
  )`,
  `CREATE TABLE sessions (
    id text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id),
    template text NOT NULL REFERENCES templates (name),
    agent_id text REFERENCES agents (id),
    state text NOT NULL CHECK (state IN ('pending', 'creating', 'running', 'terminating', 'terminated', 'failed')),
    reason text,
    message text,
    spec jsonb NOT NULL,
    region text,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  )`,
  `CREATE INDEX sessions_user_id ON sessions (user_id)`,
  `CREATE INDEX sessions_agent_id_state ON sessions (agent_id, state)`,
  `CREATE TABLE session_history (
    seq bigserial PRIMARY KEY,
    session_id text NOT NULL REFERENCES sessions (id),
    state text NOT NULL,
    reason text,
    message text,
    at timestamptz NOT NULL
  )`,
  `CREATE INDEX session_history_session_id ON session_history (session_id, seq)`,
  `CREATE TABLE commands (
    id text PRIMARY KEY,
    agent_id text NOT NULL REFERENCES agents (id),
    session_id text REFERENCES sessions (id),
    action text NOT NULL,
    payload jsonb NOT NULL,
    traceparent text,
    state text NOT NULL CHECK (state IN ('pending', 'sent', 'ack', 'completed', 'failed')),
    result jsonb,
    error jsonb,
    attempts integer NOT NULL DEFAULT 0,
    deadline_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    sent_at timestamptz,
    acked_at timestamptz,
    completed_at timestamptz,
    failed_at timestamptz
  )`,
  `CREATE INDEX commands_unfinished ON commands (agent_id, created_at) WHERE state IN ('pending', 'sent', 'ack')`,
  `CREATE INDEX commands_session_id ON commands (session_id)`
)

const seedDemoTemplate = statements(
  `INSERT INTO templates (name, display_name, image, cpu, memory, env, vnc_port, persistent_home, shared_home, created_at, updated_at)
   VALUES ('demo', 'Demo desktop', 'streamspace/demo-desktop:latest', '500m', '512Mi', '{}'::jsonb, 5900, false, false, now(), now())
   ON CONFLICT (name) DO NOTHING`
)

/**
 * Session lifecycle (issue 16): the hibernation states, each template's idle and lifetime policy (null: the
 * control plane's default) and the policy a session was created with.
 */
const sessionLifecycle = statements(
  `ALTER TABLE sessions DROP CONSTRAINT sessions_state_check`,
  `ALTER TABLE sessions ADD CONSTRAINT sessions_state_check
    CHECK (state IN ('pending', 'creating', 'running', 'terminating', 'terminated', 'failed', 'hibernating', 'hibernated'))`,
  `ALTER TABLE templates ADD COLUMN idle_timeout text`,
  `ALTER TABLE templates ADD COLUMN max_lifetime text`,
  `ALTER TABLE templates ADD COLUMN idle_action text CHECK (idle_action IN ('hibernate', 'delete'))`,
  `ALTER TABLE templates ADD COLUMN warn_before text`,
  `ALTER TABLE sessions ADD COLUMN policy jsonb`
)

/** One-time enrolment tokens, bound to an agent id (which may not have said hello yet), hashed, with an expiry. */
const enrollmentTokens = statements(
  `CREATE TABLE agent_enrollment_tokens (
    agent_id text PRIMARY KEY,
    token_hash text NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL
  )`
)

/** Who did what (issue 14): admin actions and session creates/deletes, with the acting user. */
const auditLog = statements(
  `CREATE TABLE audit_log (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    actor_role text NOT NULL,
    action text NOT NULL,
    target_type text NOT NULL,
    target_id text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb
  )`
)

/**
 * Per-template bounds on the resources a session may request (NULL: the control plane's settings apply), and
 * the indexes the session list's pages (newest first, all or one user's) are read by.
 */
const boundsAndPages = statements(
  `ALTER TABLE templates ADD COLUMN resource_bounds jsonb`,
  `CREATE INDEX sessions_newest ON sessions (created_at DESC, id DESC)`,
  `CREATE INDEX sessions_user_newest ON sessions (user_id, created_at DESC, id DESC)`
)

// Who made each state change (`user:<sub>`, `agent:<id>`, `system`); rows written before this have none.
const historyActor = statements(`ALTER TABLE session_history ADD COLUMN actor text`)

// A deleted template keeps its row (sessions made from it refer to it) with the time it was deleted; the API no
// longer shows it, and a new template of the same name takes the row over.
const templateDeletedAt = statements(`ALTER TABLE templates ADD COLUMN deleted_at timestamptz`)

// Home volumes as the agents last listed them, with what the control plane adds: when each was last used and,
// under a retention policy, when it will be deleted.
const homes = statements(
  `CREATE TABLE homes (
    id text PRIMARY KEY,
    agent_id text NOT NULL REFERENCES agents (id),
    name text NOT NULL,
    user_id text NOT NULL,
    size text,
    in_use boolean NOT NULL,
    created_at timestamptz NOT NULL,
    last_used_at timestamptz NOT NULL,
    reported_at timestamptz NOT NULL,
    expires_at timestamptz,
    UNIQUE (agent_id, name)
  )`,
  `CREATE INDEX homes_user_id ON homes (user_id)`
)

// Warm pods kept started per agent for a template (0: none).
const templateWarmPool = statements(`ALTER TABLE templates ADD COLUMN warm_pool integer NOT NULL DEFAULT 0 CHECK (warm_pool >= 0)`)

// VNC tickets redeemed (by ticket id) until they expire: single use across replicas.
const vncTicketUses = statements(`CREATE TABLE vnc_ticket_uses (jti text PRIMARY KEY, expires_at timestamptz NOT NULL)`)

const all = {
  "0001_initial": initial,
  "0002_seed_demo_template": seedDemoTemplate,
  "0003_session_lifecycle": sessionLifecycle,
  "0004_agent_enrollment_tokens": enrollmentTokens,
  "0005_audit_log": auditLog,
  "0006_template_bounds_and_session_pages": boundsAndPages,
  "0007_session_history_actor": historyActor,
  "0008_template_deleted_at": templateDeletedAt,
  "0009_homes": homes,
  "0010_template_warm_pool": templateWarmPool,
  "0011_vnc_ticket_uses": vncTicketUses
}

/** The names of all migrations, in order (a migrated database has recorded each once). */
export const MIGRATIONS: ReadonlyArray<string> = Object.keys(all)

export const migrations = Migrator.fromRecord(all)

/** Runs the pending migrations; returns the ones it ran as `[id, name]`. */
export const runMigrations = Migrator.make({})({ loader: migrations })
