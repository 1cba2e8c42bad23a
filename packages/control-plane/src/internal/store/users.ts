// The `users` table: who owns sessions. Rows are written from each verified JWT (Sessions keeps the role
// current) and, with what the identity provider says about the person (display name, email, groups, the
// `iss sub` they log in as), at each OpenID Connect login. `disabled_at` set: every credential of theirs is refused.
import type { UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import type { Role } from "../../Auth.ts"
import { date, dateOrUndefined, type Db, type Row, strOrUndefined } from "./db.ts"
import { StoreError } from "./error.ts"

export interface UserRecord {
  readonly id: UserId
  readonly name: string
  readonly role: Role
  readonly displayName: string | undefined
  readonly email: string | undefined
  readonly groups: ReadonlyArray<string>
  /** `<issuer> <sub>` of the identity-provider account this user logs in as (undefined: never logged in). */
  readonly subject: string | undefined
  readonly lastSeenAt: Date | undefined
  readonly disabledAt: Date | undefined
  readonly createdAt: Date
  readonly updatedAt: Date
}

export type NewUser = Pick<UserRecord, "id" | "name" | "role">
/** What a login tells about a user. */
export type LoginUser = Pick<UserRecord, "id" | "role" | "displayName" | "email" | "groups"> & { readonly subject: string }

export interface UsersTable {
  /** Conflict if the id exists. */
  readonly insert: (user: NewUser) => Effect.Effect<UserRecord, StoreError>
  /** Inserts, or updates name and role of an existing user (e.g. from each verified JWT). */
  readonly upsert: (user: NewUser) => Effect.Effect<UserRecord, StoreError>
  /**
   * Inserts or updates a user from a login and marks them seen. Conflict when the id belongs to another
   * identity-provider account (another `subject`), or the account already has another id.
   */
  readonly recordLogin: (user: LoginUser) => Effect.Effect<UserRecord, StoreError>
  readonly get: (id: string) => Effect.Effect<UserRecord, StoreError>
  readonly list: () => Effect.Effect<ReadonlyArray<UserRecord>, StoreError>
  /** At most `limit` users by id, after `after`. */
  readonly page: (limit: number, after: string | undefined) => Effect.Effect<ReadonlyArray<UserRecord>, StoreError>
  /** Sets or clears `disabled_at`; NotFound for an unknown id. */
  readonly setDisabled: (id: string, disabled: boolean) => Effect.Effect<UserRecord, StoreError>
  /** Whether the user exists and is disabled (one primary-key lookup: it runs on every request). */
  readonly isDisabled: (id: string) => Effect.Effect<boolean, StoreError>
  /** Which of `ids` are disabled users, in one lookup (requests checked together). */
  readonly disabledAmong: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlySet<string>, StoreError>
  readonly touch: (id: string) => Effect.Effect<void, StoreError>
}

const groupsOf = (v: unknown): ReadonlyArray<string> => {
  const parsed = typeof v === "string" ? JSON.parse(v) : v
  return Array.isArray(parsed) ? parsed.filter((g): g is string => typeof g === "string") : []
}

export const toUser = (r: Row): UserRecord => ({
  id: r.id as UserId,
  name: r.name as string,
  role: r.role as Role,
  displayName: strOrUndefined(r.display_name),
  email: strOrUndefined(r.email),
  groups: groupsOf(r.groups),
  subject: strOrUndefined(r.subject),
  lastSeenAt: dateOrUndefined(r.last_seen_at),
  disabledAt: dateOrUndefined(r.disabled_at),
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

export const makeUsers = ({ json, now, one, q, sql }: Db): UsersTable => ({
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
  recordLogin: Effect.fn("Store.users.recordLogin")(function*(u: LoginUser) {
    const at = yield* now
    const row = {
      id: u.id,
      name: u.id,
      role: u.role,
      display_name: u.displayName ?? null,
      email: u.email ?? null,
      groups: json(u.groups),
      subject: u.subject,
      last_seen_at: at,
      created_at: at,
      updated_at: at
    }
    const rows = yield* q(
      "user",
      u.id,
      sql<Row>`INSERT INTO users ${sql.insert(row)}
        ON CONFLICT (id) DO UPDATE SET role = EXCLUDED.role, display_name = EXCLUDED.display_name, email = EXCLUDED.email,
          groups = EXCLUDED.groups, subject = EXCLUDED.subject, last_seen_at = EXCLUDED.last_seen_at, updated_at = EXCLUDED.updated_at
        WHERE users.subject IS NULL OR users.subject = EXCLUDED.subject
        RETURNING *`
    )
    if (rows.length === 0) {
      return yield* StoreError.conflict("user", u.id, `user ${JSON.stringify(u.id)} belongs to another identity-provider account`)
    }
    return toUser(rows[0]!)
  }),
  get: Effect.fn("Store.users.get")(function*(id: string) {
    return yield* one("user", id, yield* q("user", id, sql<Row>`SELECT * FROM users WHERE id = ${id}`), toUser)
  }),
  list: Effect.fn("Store.users.list")(function*() {
    return (yield* q("user", "*", sql<Row>`SELECT * FROM users ORDER BY id`)).map(toUser)
  }),
  page: Effect.fn("Store.users.page")(function*(limit: number, after: string | undefined) {
    const rows = after === undefined
      ? sql<Row>`SELECT * FROM users ORDER BY id LIMIT ${limit}`
      : sql<Row>`SELECT * FROM users WHERE id > ${after} ORDER BY id LIMIT ${limit}`
    return (yield* q("user", "*", rows)).map(toUser)
  }),
  setDisabled: Effect.fn("Store.users.setDisabled")(function*(id: string, disabled: boolean) {
    const at = yield* now
    const rows = yield* q(
      "user",
      id,
      disabled
        ? sql<Row>`UPDATE users SET disabled_at = COALESCE(disabled_at, ${at}), updated_at = ${at} WHERE id = ${id} RETURNING *`
        : sql<Row>`UPDATE users SET disabled_at = NULL, updated_at = ${at} WHERE id = ${id} RETURNING *`
    )
    return yield* one("user", id, rows, toUser)
  }),
  isDisabled: Effect.fn("Store.users.isDisabled")(function*(id: string) {
    const rows = yield* q("user", id, sql<Row>`SELECT disabled_at FROM users WHERE id = ${id}`)
    return rows.length > 0 && rows[0]!.disabled_at !== null
  }),
  disabledAmong: Effect.fn("Store.users.disabledAmong")(function*(ids: ReadonlyArray<string>) {
    if (ids.length === 0) return new Set<string>()
    const rows = yield* q("user", ids[0]!, sql<Row>`SELECT id FROM users WHERE id IN ${sql.in(ids)} AND disabled_at IS NOT NULL`)
    return new Set(rows.map((r) => r.id as string))
  }),
  touch: Effect.fn("Store.users.touch")(function*(id: string) {
    yield* q("user", id, sql`UPDATE users SET last_seen_at = ${yield* now} WHERE id = ${id}`)
  })
})
