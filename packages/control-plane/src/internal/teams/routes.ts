// The admin endpoints of teams and usage (issue 18): `/api/v1/teams` (create, list with pages, get, patch, delete)
// and `GET /api/v1/usage?by=team|user`. Admins only; every change is in the audit log.
import { Effect, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Audit } from "../../Audit.ts"
import { Auth, type AuthError, requireAdmin } from "../../Auth.ts"
import { ControlPlaneConfig } from "../../ControlPlaneConfig.ts"
import { Homes, type HomesError } from "../../Homes.ts"
import { Sessions } from "../../Sessions.ts"
import type { TeamRecord } from "../../Store.ts"
import { Teams, type TeamsError } from "../../Teams.ts"
import { ApiError, decodeStrict, errorResponse, json, readBody } from "../api.ts"
import { answering } from "../httpError.ts"
import { pageOf, pageRequest } from "../pagination.ts"
import { CreateTeamRequest, PatchTeamRequest, TeamName } from "./requests.ts"
import { usageByTeam, usageByUser, usageJson } from "./usage.ts"

export const teamJson = (t: TeamRecord) => ({
  name: t.name,
  group: t.group,
  quota: {
    max_sessions: t.quota.maxSessions ?? null,
    cpu: t.quota.cpu ?? null,
    memory: t.quota.memory ?? null,
    storage: t.quota.storage ?? null
  },
  templates: t.templates ?? null,
  regions: t.regions ?? null,
  created_at: t.createdAt.toISOString(),
  updated_at: t.updatedAt.toISOString()
})

const UsageQuery = Schema.Struct({
  by: Schema.Literals(["team", "user"]),
  limit: Schema.optionalKey(Schema.String),
  cursor: Schema.optionalKey(Schema.String)
})

type Failure = ApiError | AuthError | TeamsError | HomesError

const toResponse = (e: Failure) => {
  switch (e._tag) {
    case "ApiError":
      return errorResponse(e.status, e.code, e.message)
    case "AuthError":
      return e.reason === "Forbidden" ? errorResponse(403, "forbidden", e.message) : errorResponse(401, "unauthorized", e.message)
    case "TeamsError":
      return e.reason === "NotFound"
        ? errorResponse(404, "not_found", e.message)
        : e.reason === "Exists"
        ? errorResponse(409, "conflict", e.message)
        : e.reason === "InvalidRequest"
        ? errorResponse(400, "invalid_request", e.message)
        : errorResponse(503, "unavailable", e.message)
    case "HomesError":
      return errorResponse(503, "unavailable", e.message)
  }
}

const answer = answering(toResponse)

const NamePath = Schema.Struct({ name: TeamName })

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const config = yield* ControlPlaneConfig
  const auth = yield* Auth
  const audit = yield* Audit
  const teams = yield* Teams
  const sessions = yield* Sessions
  const homes = yield* Homes
  const admin = Effect.flatMap(HttpServerRequest.HttpServerRequest, (r) => auth.authenticateRequest(r)).pipe(Effect.tap(requireAdmin))
  const path = Effect.flatMap(HttpRouter.params, (p) => decodeStrict(NamePath, p, "path"))
  const p = "/api/v1"

  yield* router.add("GET", `${p}/teams`, answer("Api.listTeams", Effect.gen(function*() {
    yield* admin
    const request = yield* pageRequest("/api/v1/teams", 1)
    const { items, next } = pageOf("/api/v1/teams", yield* teams.list, (t) => t.name, request)
    return json({ teams: items.map(teamJson), next_cursor: next })
  })))
  yield* router.add("POST", `${p}/teams`, answer("Api.createTeam", Effect.gen(function*() {
    const actor = yield* admin
    const created = yield* teams.create(yield* readBody(CreateTeamRequest, config.maxBodyBytes))
    yield* audit.record(actor, "team.create", { type: "team", id: created.name }, teamJson(created))
    return json(teamJson(created), 201)
  })))
  yield* router.add("GET", `${p}/teams/:name`, answer("Api.getTeam", Effect.gen(function*() {
    yield* admin
    return json(teamJson(yield* teams.get((yield* path).name)))
  })))
  yield* router.add("PATCH", `${p}/teams/:name`, answer("Api.patchTeam", Effect.gen(function*() {
    const actor = yield* admin
    const { name } = yield* path
    const changed = yield* teams.update(name, yield* readBody(PatchTeamRequest, config.maxBodyBytes))
    yield* audit.record(actor, "team.update", { type: "team", id: name }, teamJson(changed))
    return json(teamJson(changed))
  })))
  yield* router.add("DELETE", `${p}/teams/:name`, answer("Api.deleteTeam", Effect.gen(function*() {
    const actor = yield* admin
    const { name } = yield* path
    yield* teams.remove(name)
    yield* audit.record(actor, "team.delete", { type: "team", id: name })
    return HttpServerResponse.empty({ status: 204 })
  })))

  // Usage: `?by=team` (every team and `none`) or `?by=user` (users with a live session or a home), in pages.
  yield* router.add("GET", `${p}/usage`, answer("Api.usage", Effect.gen(function*() {
    const u = yield* admin
    const request = yield* HttpServerRequest.HttpServerRequest
    const query = yield* decodeStrict(UsageQuery, Object.fromEntries(new URL(request.url, "http://x").searchParams), "query")
    const page = yield* pageRequest(`/api/v1/usage?by=${query.by}`, 1)
    const live = yield* sessions.live
    const allHomes = yield* homes.list(u)
    if (query.by === "user") {
      const rows = [...usageByUser(live, allHomes)].map(([user_id, usage]) => ({ user_id, ...usageJson(usage) }))
      const { items, next } = pageOf(`/api/v1/usage?by=user`, rows, (r) => r.user_id, page)
      return json({ by: "user", usage: items, next_cursor: next })
    }
    const all = yield* teams.list
    const quotas = new Map(all.map((t) => [t.name, teamJson(t).quota]))
    const rows = [...usageByTeam(all, live, allHomes, yield* teams.homeCharges)].map(([team, usage]) => ({ team, ...usageJson(usage), quota: quotas.get(team) ?? null }))
      .sort((a, b) => (a.team < b.team ? -1 : 1))
    const { items, next } = pageOf(`/api/v1/usage?by=team`, rows, (r) => r.team, page)
    return json({ by: "team", usage: items, next_cursor: next })
  })))
}))
