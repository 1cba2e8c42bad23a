// The `users` table: who owns sessions. Rows are written from each verified JWT (Sessions keeps the role current).
import type { UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import type { Role } from "../../Auth.ts"
import { date, type Db, type Row } from "./db.ts"
import type { StoreError } from "./error.ts"

export interface UserRecord {
  readonly id: UserId
  readonly name: string
  readonly role: Role
  readonly createdAt: Date
  readonly updatedAt: Date
}

export type NewUser = Pick<UserRecord, "id" | "name" | "role">

export interface UsersTable {
  /** Conflict if the id exists. */
  readonly insert: (user: NewUser) => Effect.Effect<UserRecord, StoreError>
  /** Inserts, or updates name and role of an existing user (e.g. from each verified JWT). */
  readonly upsert: (user: NewUser) => Effect.Effect<UserRecord, StoreError>
  readonly get: (id: string) => Effect.Effect<UserRecord, StoreError>
  readonly list: () => Effect.Effect<ReadonlyArray<UserRecord>, StoreError>
}

export const toUser = (r: Row): UserRecord => ({
  id: r.id as UserId,
  name: r.name as string,
  role: r.role as Role,
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

export const makeUsers = ({ now, one, q, sql }: Db): UsersTable => ({
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
})
