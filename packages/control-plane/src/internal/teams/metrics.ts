// The per-team gauges (Observability: streamspace_control_plane_team_*), recomputed before each scrape from the
// same figures as GET /api/v1/usage?by=team. A team deleted since the last scrape drops to 0 (a registry cannot
// forget a series), so its series stay bounded by the teams ever created while this process ran.
import { Effect, Metric } from "effect"
import type { User } from "../../Auth.ts"
import type { HomesShape } from "../../Homes.ts"
import { teamCpu, teamMemory, teamQuota, teamSessions, teamStorage } from "../../Observability.ts"
import type { SessionsShape } from "../../Sessions.ts"
import type { TeamsShape } from "../../Teams.ts"
import { bytes, millicores } from "./quota.ts"
import { usageByTeam } from "./usage.ts"

const system: User = { id: "system" as User["id"], role: "admin", groups: [] }

export const makeTeamGauges = (teams: TeamsShape, sessions: SessionsShape, homes: HomesShape) => {
  const seen = new Set<string>()
  const quotaSeen = new Set<string>()
  return Effect.gen(function*() {
    const all = yield* teams.list
    const usage = usageByTeam(all, yield* sessions.live, yield* homes.list(system), yield* teams.homeCharges)
    for (const name of seen) if (!usage.has(name)) usage.set(name, { sessions: 0, hibernated: 0, millicores: 0, memoryBytes: 0, homes: 0, storageBytes: 0 })
    for (const [team, u] of usage) {
      seen.add(team)
      yield* Metric.update(Metric.withAttributes(teamSessions, { team }), u.sessions)
      yield* Metric.update(Metric.withAttributes(teamCpu, { team }), u.millicores / 1000)
      yield* Metric.update(Metric.withAttributes(teamMemory, { team }), u.memoryBytes)
      yield* Metric.update(Metric.withAttributes(teamStorage, { team }), u.storageBytes)
    }
    // Every team has all four quota series; -1 means no limit (also for a team deleted since: its series stay).
    for (const t of all) quotaSeen.add(t.name)
    const byName = new Map(all.map((t) => [t.name, t.quota]))
    for (const team of quotaSeen) {
      const q = byName.get(team)
      const values: ReadonlyArray<readonly [string, number | undefined]> = [
        ["sessions", q?.maxSessions],
        ["cpu", q?.cpu === undefined ? undefined : millicores(q.cpu) / 1000],
        ["memory", q?.memory === undefined ? undefined : bytes(q.memory)],
        ["storage", q?.storage === undefined ? undefined : bytes(q.storage)]
      ]
      for (const [resource, value] of values) yield* Metric.update(Metric.withAttributes(teamQuota, { team, resource }), value ?? -1)
    }
  })
}
