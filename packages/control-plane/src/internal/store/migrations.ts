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

// Sharing (issue 17): named users' access to a session, expiring share links (the token stored as its SHA-256
// only), and each session's control mode. All go with their session.
const sharing = statements(
  `CREATE TABLE session_shares (
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    access text NOT NULL CHECK (access IN ('view', 'control')),
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (session_id, user_id)
  )`,
  `CREATE INDEX session_shares_user_id ON session_shares (user_id)`,
  `CREATE TABLE share_links (
    id text PRIMARY KEY,
    session_id text NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    token_hash text NOT NULL UNIQUE,
    access text NOT NULL CHECK (access IN ('view', 'control')),
    label text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    max_uses integer CHECK (max_uses > 0),
    uses integer NOT NULL DEFAULT 0,
    revoked_at timestamptz
  )`,
  `CREATE INDEX share_links_session_id ON share_links (session_id)`,
  `CREATE TABLE session_control_modes (
    session_id text PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    mode text NOT NULL CHECK (mode IN ('exclusive', 'shared')),
    updated_at timestamptz NOT NULL
  )`
)

// Teams (issue 18): a group's quota and allowed templates and regions; each session records the team it is
// charged to (NULL: none). The partial index serves the per-team count of live sessions.
const teams = statements(
  `CREATE TABLE teams (
    name text PRIMARY KEY,
    group_name text NOT NULL,
    max_sessions integer CHECK (max_sessions >= 0),
    cpu text,
    memory text,
    storage text,
    templates jsonb,
    regions jsonb,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
  )`,
  `ALTER TABLE sessions ADD COLUMN team text`,
  // What the session requests, in whole units, so the database can sum a team's usage (its quota guard).
  `ALTER TABLE sessions ADD COLUMN cpu_millicores bigint`,
  `ALTER TABLE sessions ADD COLUMN memory_bytes bigint`,
  `CREATE INDEX sessions_team_live ON sessions (team) WHERE team IS NOT NULL AND state NOT IN ('terminated', 'failed')`
)

// Recording policy per template (no row: off) and the owner's choice per session (issue 17).
const recordingPolicies = statements(
  `CREATE TABLE recording_template_policies (
    template text PRIMARY KEY,
    policy text NOT NULL CHECK (policy IN ('off', 'optional', 'always')),
    updated_at timestamptz NOT NULL
  )`,
  `CREATE TABLE recording_session_choices (
    session_id text PRIMARY KEY,
    enabled boolean NOT NULL,
    updated_at timestamptz NOT NULL
  )`
)

// Users as identity providers describe them (display name, email, groups, the `iss sub` they log in as, last
// seen, disabled), browser login sessions (only a hash of the cookie is kept; the CSRF token; the ID token for
// the provider's logout), and logins in progress (state, nonce and PKCE verifier of an authorization request).
const usersAndLogins = statements(
  `ALTER TABLE users ADD COLUMN display_name text`,
  `ALTER TABLE users ADD COLUMN email text`,
  `ALTER TABLE users ADD COLUMN groups jsonb NOT NULL DEFAULT '[]'`,
  `ALTER TABLE users ADD COLUMN subject text UNIQUE`,
  `ALTER TABLE users ADD COLUMN last_seen_at timestamptz`,
  `ALTER TABLE users ADD COLUMN disabled_at timestamptz`,
  `CREATE TABLE login_sessions (
    id_hash text PRIMARY KEY,
    user_id text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('admin', 'user')),
    groups jsonb NOT NULL,
    csrf_token text NOT NULL,
    id_token text,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
  )`,
  `CREATE INDEX login_sessions_user_id ON login_sessions (user_id)`,
  `CREATE TABLE login_attempts (
    id_hash text PRIMARY KEY,
    state text NOT NULL,
    nonce text NOT NULL,
    code_verifier text NOT NULL,
    return_to text NOT NULL,
    expires_at timestamptz NOT NULL
  )`
)

// Per-template clipboard switches the VNC proxy enforces (true: allowed).
const templateClipboard = statements(
  `ALTER TABLE templates ADD COLUMN clipboard_upload boolean NOT NULL DEFAULT true`,
  `ALTER TABLE templates ADD COLUMN clipboard_download boolean NOT NULL DEFAULT true`
)

// Control-plane replicas on one PostgreSQL (Replicas.ts): each replica's lease, and which replica holds which
// agent's socket (trusted only while that replica's lease runs).
const replicas = statements(
  `CREATE TABLE control_plane_replicas (
    id text PRIMARY KEY,
    peer_url text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz NOT NULL
  )`,
  `CREATE TABLE agent_presence (
    agent_id text PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    replica_id text NOT NULL REFERENCES control_plane_replicas (id) ON DELETE CASCADE,
    since timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE INDEX agent_presence_replica_id ON agent_presence (replica_id)`
)

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
  "0011_sharing": sharing,
  "0012_teams": teams,
  "0013_recording_policies": recordingPolicies,
  "0014_users_and_logins": usersAndLogins,
  "0015_template_clipboard": templateClipboard,
  "0016_replicas": replicas,
  "0017_vnc_ticket_uses": vncTicketUses
}

/** The names of all migrations, in order (a migrated database has recorded each once). */
export const MIGRATIONS: ReadonlyArray<string> = Object.keys(all)

export const migrations = Migrator.fromRecord(all)

/** Runs the pending migrations; returns the ones it ran as `[id, name]`. */
export const runMigrations = Migrator.make({})({ loader: migrations })
