// Browser logins: `login_sessions` (one row per logged-in browser, keyed by the SHA-256 of its cookie, so the
// table does not hold usable credentials) and `login_attempts` (an authorization request in flight: its
// state, nonce and PKCE verifier, keyed by the SHA-256 of the browser's login cookie, taken once).
import type { UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import type { Role } from "../../Auth.ts"
import { date, type Db, type Row, strOrUndefined } from "./db.ts"
import type { StoreError } from "./error.ts"

export interface LoginSessionRecord {
  readonly idHash: string
  readonly userId: UserId
  readonly role: Role
  readonly groups: ReadonlyArray<string>
  readonly csrfToken: string
  /** The provider's ID token, kept for its logout (`id_token_hint`). */
  readonly idToken: string | undefined
  readonly createdAt: Date
  readonly lastSeenAt: Date
  /** The absolute end (LOGIN_MAX_LIFETIME); the idle end is lastSeenAt + LOGIN_IDLE_TIMEOUT. */
  readonly expiresAt: Date
  /** From the user's row: a disabled user's logins are refused. */
  readonly userDisabled: boolean
}

export type NewLoginSession = Omit<LoginSessionRecord, "userDisabled">

export interface LoginAttemptRecord {
  readonly idHash: string
  readonly state: string
  readonly nonce: string
  readonly codeVerifier: string
  readonly returnTo: string
  readonly expiresAt: Date
}

export interface LoginsTable {
  readonly insert: (s: NewLoginSession) => Effect.Effect<void, StoreError>
  readonly get: (idHash: string) => Effect.Effect<LoginSessionRecord | undefined, StoreError>
  readonly touch: (idHash: string, at: Date) => Effect.Effect<void, StoreError>
  /** Deletes one login; what it was, if it existed. */
  readonly remove: (idHash: string) => Effect.Effect<LoginSessionRecord | undefined, StoreError>
  /** Deletes every login of a user (sign out everywhere); how many there were. */
  readonly removeUser: (userId: string) => Effect.Effect<number, StoreError>
  /** Deletes logins and attempts past their end. */
  readonly removeExpired: (now: Date, idleCutoff: Date) => Effect.Effect<void, StoreError>
  readonly insertAttempt: (a: LoginAttemptRecord) => Effect.Effect<void, StoreError>
  /** Deletes and returns an attempt (each is used once). */
  readonly takeAttempt: (idHash: string) => Effect.Effect<LoginAttemptRecord | undefined, StoreError>
}

const toLogin = (r: Row): LoginSessionRecord => ({
  idHash: r.id_hash as string,
  userId: r.user_id as UserId,
  role: r.role as Role,
  groups: (typeof r.groups === "string" ? JSON.parse(r.groups) : r.groups) as ReadonlyArray<string>,
  csrfToken: r.csrf_token as string,
  idToken: strOrUndefined(r.id_token),
  createdAt: date(r.created_at),
  lastSeenAt: date(r.last_seen_at),
  expiresAt: date(r.expires_at),
  userDisabled: r.disabled_at !== null && r.disabled_at !== undefined
})

export const makeLogins = ({ json, q, sql }: Db): LoginsTable => ({
  insert: Effect.fn("Store.logins.insert")(function*(s: NewLoginSession) {
    yield* q("login", s.userId, sql`INSERT INTO login_sessions ${sql.insert({
      id_hash: s.idHash,
      user_id: s.userId,
      role: s.role,
      groups: json(s.groups),
      csrf_token: s.csrfToken,
      id_token: s.idToken ?? null,
      created_at: s.createdAt,
      last_seen_at: s.lastSeenAt,
      expires_at: s.expiresAt
    })}`)
  }),
  get: Effect.fn("Store.logins.get")(function*(idHash: string) {
    const rows = yield* q("login", "-", sql<Row>`SELECT l.*, u.disabled_at FROM login_sessions l JOIN users u ON u.id = l.user_id WHERE l.id_hash = ${idHash}`)
    return rows.length === 0 ? undefined : toLogin(rows[0]!)
  }),
  touch: Effect.fn("Store.logins.touch")(function*(idHash: string, at: Date) {
    yield* q("login", "-", sql`UPDATE login_sessions SET last_seen_at = ${at} WHERE id_hash = ${idHash}`)
  }),
  remove: Effect.fn("Store.logins.remove")(function*(idHash: string) {
    const rows = yield* q("login", "-", sql<Row>`DELETE FROM login_sessions WHERE id_hash = ${idHash} RETURNING *, NULL AS disabled_at`)
    return rows.length === 0 ? undefined : toLogin(rows[0]!)
  }),
  removeUser: Effect.fn("Store.logins.removeUser")(function*(userId: string) {
    return (yield* q("login", userId, sql<Row>`DELETE FROM login_sessions WHERE user_id = ${userId} RETURNING id_hash`)).length
  }),
  removeExpired: Effect.fn("Store.logins.removeExpired")(function*(now: Date, idleCutoff: Date) {
    yield* q("login", "*", sql`DELETE FROM login_sessions WHERE expires_at <= ${now} OR last_seen_at <= ${idleCutoff}`)
    yield* q("login", "*", sql`DELETE FROM login_attempts WHERE expires_at <= ${now}`)
  }),
  insertAttempt: Effect.fn("Store.logins.insertAttempt")(function*(a: LoginAttemptRecord) {
    yield* q("login", "-", sql`INSERT INTO login_attempts ${sql.insert({
      id_hash: a.idHash,
      state: a.state,
      nonce: a.nonce,
      code_verifier: a.codeVerifier,
      return_to: a.returnTo,
      expires_at: a.expiresAt
    })}`)
  }),
  takeAttempt: Effect.fn("Store.logins.takeAttempt")(function*(idHash: string) {
    const rows = yield* q("login", "-", sql<Row>`DELETE FROM login_attempts WHERE id_hash = ${idHash} RETURNING *`)
    if (rows.length === 0) return undefined
    const r = rows[0]!
    return {
      idHash: r.id_hash as string,
      state: r.state as string,
      nonce: r.nonce as string,
      codeVerifier: r.code_verifier as string,
      returnTo: r.return_to as string,
      expiresAt: date(r.expires_at)
    }
  })
})
