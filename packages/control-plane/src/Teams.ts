// Teams: groups of users with a budget (issue 18). A team is bound to one group of the identity provider (a user
// whose token's `groups` claim holds it is a member) and has a quota (live sessions, CPU, memory, homes'
// storage) and optional allow-lists of templates and regions. Admins manage them (`/api/v1/teams`); Sessions asks
// `forCreate` which team pays for a create and enforces the quota under its placement lock
// (internal/teams/quota.ts). Users in no team are charged to none: only the per-user limits apply to them.
import { Context, Effect, Layer, Schema } from "effect"
import type { User } from "./Auth.ts"
import { bytes } from "./internal/teams/quota.ts"
import type { CreateTeamRequest, PatchTeamRequest } from "./internal/teams/requests.ts"
import { homeTeam } from "./internal/teams/usage.ts"
import { type HomeCharge, Store, type StoreError, type TeamQuota, type TeamRecord } from "./Store.ts"

export type { TeamRecord } from "./Store.ts"

export class TeamsError extends Schema.TaggedError<TeamsError>()("TeamsError", {
  reason: Schema.Literals(["NotFound", "Exists", "InvalidRequest", "Unavailable"]),
  message: Schema.String
}) {}

export interface TeamsShape {
  /** By name. */
  readonly list: Effect.Effect<ReadonlyArray<TeamRecord>, TeamsError>
  readonly get: (name: string) => Effect.Effect<TeamRecord, TeamsError>
  readonly create: (request: CreateTeamRequest) => Effect.Effect<TeamRecord, TeamsError>
  readonly update: (name: string, request: PatchTeamRequest) => Effect.Effect<TeamRecord, TeamsError>
  readonly remove: (name: string) => Effect.Effect<void, TeamsError>
  /** The teams `user` is a member of, by name. */
  readonly teamsOf: (user: User) => Effect.Effect<ReadonlyArray<TeamRecord>, TeamsError>
  /** Which team each home is charged to (its user's newest session with a persistent home on its agent). */
  readonly homeCharges: Effect.Effect<ReadonlyArray<HomeCharge>, TeamsError>
  /** The homes charged to `team` now: their total requested size in bytes and their users. */
  readonly homesOf: (team: TeamRecord) => Effect.Effect<{ readonly bytes: number; readonly users: ReadonlySet<string> }, TeamsError>
}

const quotaOf = (q: CreateTeamRequest["quota"]): TeamQuota => ({
  ...(q?.max_sessions === undefined ? {} : { maxSessions: q.max_sessions }),
  ...(q?.cpu === undefined ? {} : { cpu: q.cpu }),
  ...(q?.memory === undefined ? {} : { memory: q.memory }),
  ...(q?.storage === undefined ? {} : { storage: q.storage })
})

export const make = Effect.gen(function*() {
  const store = yield* Store
  const fromStore = (name: string) => (e: StoreError) =>
    e.reason._tag === "NotFound"
      ? new TeamsError({ reason: "NotFound", message: `no team named "${name.slice(0, 80)}"` })
      : e.reason._tag === "Conflict"
      ? new TeamsError({ reason: "Exists", message: `name: a team named "${name}" already exists` })
      : new TeamsError({ reason: "Unavailable", message: `team store: ${e.message}` })

  /** Every template named must exist now (a template deleted later just stops matching). */
  const checkTemplates = Effect.fnUntraced(function*(templates: ReadonlyArray<string> | null | undefined) {
    for (const t of templates ?? []) {
      const found = yield* store.templates.get(t).pipe(
        Effect.as(true),
        Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(false)),
        Effect.mapError(fromStore(t))
      )
      if (!found) return yield* new TeamsError({ reason: "InvalidRequest", message: `templates: no template named "${t}"` })
    }
  })

  const list = store.teams.list().pipe(Effect.mapError(fromStore("*")), Effect.withSpan("Teams.list"))
  const homeCharges = store.teams.homeCharges().pipe(Effect.mapError(fromStore("*")))

  return Teams.of({
    list,
    get: (name) => store.teams.get(name).pipe(Effect.mapError(fromStore(name)), Effect.withSpan("Teams.get")),
    create: Effect.fn("Teams.create")(function*(r: CreateTeamRequest) {
      yield* checkTemplates(r.templates)
      return yield* store.teams.insert({ name: r.name, group: r.group, quota: quotaOf(r.quota), templates: r.templates, regions: r.regions }).pipe(
        Effect.mapError(fromStore(r.name))
      )
    }),
    update: Effect.fn("Teams.update")(function*(name: string, r: PatchTeamRequest) {
      yield* checkTemplates(r.templates)
      return yield* store.teams.update(name, {
        ...(r.group === undefined ? {} : { group: r.group }),
        ...(r.quota === undefined ? {} : { quota: quotaOf(r.quota) }),
        ...(r.templates === undefined ? {} : { templates: r.templates }),
        ...(r.regions === undefined ? {} : { regions: r.regions })
      }).pipe(Effect.mapError(fromStore(name)))
    }),
    remove: Effect.fn("Teams.remove")(function*(name: string) {
      yield* store.teams.remove(name).pipe(Effect.mapError(fromStore(name)))
    }),
    teamsOf: (user) => Effect.map(list, (all) => all.filter((t) => user.groups.includes(t.group))),
    homeCharges,
    homesOf: Effect.fn("Teams.homesOf")(function*(team: TeamRecord) {
      const homes = yield* store.homes.list().pipe(Effect.mapError(fromStore("*")))
      const teamOf = homeTeam([team], yield* homeCharges)
      let total = 0
      const users = new Set<string>()
      for (const h of homes) {
        if (teamOf(h) !== team.name) continue
        total += bytes(h.size)
        users.add(h.userId)
      }
      return { bytes: total, users }
    })
  })
})

export class Teams extends Context.Service<Teams, TeamsShape>()("control-plane/Teams") {
  /** Teams in the Store. */
  static readonly layer = Layer.effect(Teams, make)
}
