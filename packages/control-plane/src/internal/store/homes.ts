// The `homes` table: each agent's home volumes as it last listed them (`list_homes`), keyed by an id of the
// control plane's own, with when each was last used and, under the retention policy, when it will be deleted.
import type { AgentId, UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import { date, dateOrUndefined, type Db, type Row, strOrUndefined } from "./db.ts"
import type { StoreError } from "./error.ts"

export interface HomeRecord {
  readonly id: string
  readonly agentId: AgentId
  /** The volume's name on the agent (the PVC). */
  readonly name: string
  readonly userId: UserId
  /** Requested storage as a Kubernetes quantity. */
  readonly size: string | undefined
  /** A pod mounts it, or a live session of its user on its agent has a persistent home. */
  readonly inUse: boolean
  readonly createdAt: Date
  readonly lastUsedAt: Date
  /** When the agent last listed it. */
  readonly reportedAt: Date
  /** When the retention policy deletes it (shown for the warning period first); undefined: not scheduled. */
  readonly expiresAt: Date | undefined
}

export interface HomesTable {
  /** Oldest first; only `userId`'s or `agentId`'s when given. */
  readonly list: (filter?: { readonly userId?: string | undefined; readonly agentId?: string | undefined }) => Effect.Effect<ReadonlyArray<HomeRecord>, StoreError>
  /** Inserts, or replaces the row of the same agent and name (keeping its id). */
  readonly put: (home: HomeRecord) => Effect.Effect<HomeRecord, StoreError>
  readonly remove: (id: string) => Effect.Effect<void, StoreError>
}

const toHome = (r: Row): HomeRecord => ({
  id: r.id as string,
  agentId: r.agent_id as AgentId,
  name: r.name as string,
  userId: r.user_id as UserId,
  size: strOrUndefined(r.size),
  inUse: r.in_use as boolean,
  createdAt: date(r.created_at),
  lastUsedAt: date(r.last_used_at),
  reportedAt: date(r.reported_at),
  expiresAt: dateOrUndefined(r.expires_at)
})

export const makeHomes = ({ q, sql }: Db): HomesTable => ({
  list: Effect.fn("Store.homes.list")(function*(filter) {
    const clauses = [
      ...(filter?.userId !== undefined ? [sql`user_id = ${filter.userId}`] : []),
      ...(filter?.agentId !== undefined ? [sql`agent_id = ${filter.agentId}`] : [])
    ]
    const where = clauses.length === 0 ? sql`` : sql`WHERE ${sql.and(clauses)}`
    return (yield* q("home", "*", sql<Row>`SELECT * FROM homes ${where} ORDER BY created_at, id`)).map(toHome)
  }),
  put: Effect.fn("Store.homes.put")(function*(h: HomeRecord) {
    const values = {
      user_id: h.userId,
      size: h.size ?? null,
      in_use: h.inUse,
      created_at: h.createdAt,
      last_used_at: h.lastUsedAt,
      reported_at: h.reportedAt,
      expires_at: h.expiresAt ?? null
    }
    const rows = yield* q(
      "home",
      h.id,
      sql<Row>`INSERT INTO homes ${sql.insert({ id: h.id, agent_id: h.agentId, name: h.name, ...values })}
        ON CONFLICT (agent_id, name) DO UPDATE SET ${sql.update(values)} RETURNING *`
    )
    return toHome(rows[0]!)
  }),
  remove: Effect.fn("Store.homes.remove")(function*(id: string) {
    yield* q("home", id, sql`DELETE FROM homes WHERE id = ${id}`)
  })
})
