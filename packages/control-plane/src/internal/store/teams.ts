// The `teams` table: a team is bound to one identity-provider group (the users whose token carries that group are
// its members) and has a quota (live sessions, CPU, memory, homes' storage; each absent: no limit) and optional
// allow-lists of templates and regions (absent: all). Sessions record the team they are charged to
// (`sessions.team`, no foreign key: a deleted team's sessions keep its name for the record).
import type { AgentId, UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import { date, type Db, type Row } from "./db.ts"
import type { Charge } from "../teams/quota.ts"
import { StoreError } from "./error.ts"

export interface TeamQuota {
  /** Live sessions (not ended, not hibernated) charged to the team. */
  readonly maxSessions?: number | undefined
  /** CPU requested by them, a Kubernetes quantity (`4`, `2500m`). */
  readonly cpu?: string | undefined
  /** Memory requested by them (`16Gi`). */
  readonly memory?: string | undefined
  /** Storage of the homes charged to the team (`100Gi`). */
  readonly storage?: string | undefined
}

export interface TeamRecord {
  readonly name: string
  /** The group claim value whose holders are members. */
  readonly group: string
  readonly quota: TeamQuota
  /** Templates its sessions may use; undefined: any. */
  readonly templates: ReadonlyArray<string> | undefined
  /** Regions its sessions may be placed in; undefined: any. */
  readonly regions: ReadonlyArray<string> | undefined
  readonly createdAt: Date
  readonly updatedAt: Date
}

export type NewTeam = Omit<TeamRecord, "createdAt" | "updatedAt">
/** A change: the fields given replace the stored ones; `null` clears an allow-list (back to "any"). */
export type TeamPatch = Partial<Omit<NewTeam, "name" | "templates" | "regions">> & {
  readonly templates?: ReadonlyArray<string> | null | undefined
  readonly regions?: ReadonlyArray<string> | null | undefined
}

/** Which team a home is charged to: the team of its user's newest session with a persistent home on its agent. */
export interface HomeCharge {
  readonly userId: UserId
  readonly agentId: AgentId
  readonly team: string
}

export interface TeamsTable {
  /** Conflict if the name exists. */
  readonly insert: (team: NewTeam) => Effect.Effect<TeamRecord, StoreError>
  readonly get: (name: string) => Effect.Effect<TeamRecord, StoreError>
  /** By name. */
  readonly list: () => Effect.Effect<ReadonlyArray<TeamRecord>, StoreError>
  /** NotFound if absent. */
  readonly update: (name: string, patch: TeamPatch) => Effect.Effect<TeamRecord, StoreError>
  /** NotFound if absent. */
  readonly remove: (name: string) => Effect.Effect<void, StoreError>
  readonly homeCharges: () => Effect.Effect<ReadonlyArray<HomeCharge>, StoreError>
  /**
   * Locks the team's row until the end of the current transaction (so every replica's check-and-insert for the
   * team runs one at a time), then reads what its sessions hold, in a statement that starts after the lock:
   * undefined when there is no such team (deleted). Call inside `Store.withTransaction`.
   */
  readonly lockCharge: (name: string) => Effect.Effect<{ readonly team: TeamRecord; readonly held: Charge } | undefined, StoreError>
}

const list = (v: unknown): ReadonlyArray<string> | undefined => (v === null || v === undefined ? undefined : (v as ReadonlyArray<string>))
const opt = <A>(v: unknown, f: (v: unknown) => A): A | undefined => (v === null || v === undefined ? undefined : f(v))

export const toTeam = (r: Row): TeamRecord => ({
  name: r.name as string,
  group: r.group_name as string,
  quota: {
    ...opt(r.max_sessions, (v) => ({ maxSessions: Number(v) })),
    ...opt(r.cpu, (v) => ({ cpu: String(v) })),
    ...opt(r.memory, (v) => ({ memory: String(v) })),
    ...opt(r.storage, (v) => ({ storage: String(v) }))
  },
  templates: list(r.templates),
  regions: list(r.regions),
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

export const makeTeams = ({ json, now, one, q, sql }: Db): TeamsTable => {
  const get = (name: string) =>
    q("team", name, sql<Row>`SELECT * FROM teams WHERE name = ${name}`).pipe(Effect.flatMap((rows) => one("team", name, rows, toTeam)))
  const columns = (t: Omit<NewTeam, "name">) => ({
    group_name: t.group,
    max_sessions: t.quota.maxSessions ?? null,
    cpu: t.quota.cpu ?? null,
    memory: t.quota.memory ?? null,
    storage: t.quota.storage ?? null,
    templates: t.templates === undefined ? null : json(t.templates),
    regions: t.regions === undefined ? null : json(t.regions)
  })
  return {
    insert: Effect.fn("Store.teams.insert")(function*(t: NewTeam) {
      const at = yield* now
      const rows = yield* q("team", t.name, sql<Row>`INSERT INTO teams ${sql.insert({ name: t.name, ...columns(t), created_at: at, updated_at: at })} RETURNING *`)
      return toTeam(rows[0]!)
    }),
    get: Effect.fn("Store.teams.get")(function*(name: string) {
      return yield* get(name)
    }),
    list: Effect.fn("Store.teams.list")(function*() {
      return (yield* q("team", "*", sql<Row>`SELECT * FROM teams ORDER BY name`)).map(toTeam)
    }),
    update: Effect.fn("Store.teams.update")(function*(name: string, patch: TeamPatch) {
      const before = yield* get(name)
      const next: Omit<NewTeam, "name"> = {
        group: patch.group ?? before.group,
        quota: patch.quota ?? before.quota,
        templates: patch.templates === undefined ? before.templates : patch.templates ?? undefined,
        regions: patch.regions === undefined ? before.regions : patch.regions ?? undefined
      }
      const rows = yield* q("team", name, sql<Row>`UPDATE teams SET ${sql.update({ ...columns(next), updated_at: yield* now })} WHERE name = ${name} RETURNING *`)
      return yield* one("team", name, rows, toTeam)
    }),
    remove: Effect.fn("Store.teams.remove")(function*(name: string) {
      const rows = yield* q("team", name, sql<Row>`DELETE FROM teams WHERE name = ${name} RETURNING name`)
      if (rows.length === 0) return yield* StoreError.notFound("team", name)
    }),
    lockCharge: Effect.fn("Store.teams.lockCharge")(function*(name: string) {
      const locked = yield* q("team", name, sql<Row>`SELECT * FROM teams WHERE name = ${name} FOR UPDATE`)
      if (locked.length === 0) return undefined
      const rows = yield* q(
        "team",
        name,
        sql<Row>`SELECT count(*)::int AS n, coalesce(sum(cpu_millicores), 0)::bigint AS mc, coalesce(sum(memory_bytes), 0)::bigint AS b
          FROM sessions WHERE team = ${name} AND state NOT IN ('terminated', 'failed', 'hibernated')`
      )
      const r = rows[0]!
      return { team: toTeam(locked[0]!), held: { sessions: Number(r.n), millicores: Number(r.mc), bytes: Number(r.b) } }
    }),
    homeCharges: Effect.fn("Store.teams.homeCharges")(function*() {
      const rows = yield* q(
        "team",
        "*",
        sql<Row>`SELECT DISTINCT ON (user_id, agent_id) user_id, agent_id, team FROM sessions
          WHERE agent_id IS NOT NULL AND (spec->>'persistent_home')::boolean IS TRUE
          ORDER BY user_id, agent_id, created_at DESC, id DESC`
      )
      return rows.filter((r) => r.team !== null && r.team !== undefined).map((r) => ({ userId: r.user_id as UserId, agentId: r.agent_id as AgentId, team: r.team as string }))
    })
  }
}
