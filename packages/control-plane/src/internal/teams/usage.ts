// Who uses what (issue 18's admin view): per user and per team, the sessions that hold a pod, the CPU and memory
// they request, the hibernated ones, and the storage of homes (their requested size, as the agents last listed
// them). A session counts for the team it was charged to; a home for the team of its user's newest session with a
// persistent home on its agent (HomeCharge). Sessions and homes of no team, or of a team since deleted, count
// under NO_TEAM, so the set of team names stays the admin-created one (bounded metric labels).
import type { HomeCharge, HomeRecord, TeamRecord } from "../../Store.ts"
import { bytes, type Charged, holdsPod, millicores } from "./quota.ts"
import { NO_TEAM } from "./requests.ts"

export interface Usage {
  sessions: number
  hibernated: number
  millicores: number
  memoryBytes: number
  homes: number
  storageBytes: number
}

const zero = (): Usage => ({ sessions: 0, hibernated: 0, millicores: 0, memoryBytes: 0, homes: 0, storageBytes: 0 })

type Record_ = Charged & { readonly userId: string; readonly spec: Charged["spec"] }

const addSession = (u: Usage, r: Record_) => {
  if (r.state === "hibernated") u.hibernated++
  if (!holdsPod(r.state)) return
  u.sessions++
  u.millicores += millicores(r.spec.resources?.cpu)
  u.memoryBytes += bytes(r.spec.resources?.memory)
}

const addHome = (u: Usage, h: HomeRecord) => {
  u.homes++
  u.storageBytes += bytes(h.size)
}

const get = <K>(m: Map<K, Usage>, k: K) => {
  let u = m.get(k)
  if (u === undefined) m.set(k, (u = zero()))
  return u
}

/** The team each home is charged to (NO_TEAM when none, or its team is gone). */
export const homeTeam = (teams: ReadonlyArray<TeamRecord>, charges: ReadonlyArray<HomeCharge>) => {
  const names = new Set(teams.map((t) => t.name))
  const byKey = new Map(charges.map((c) => [`${c.userId}\u0000${c.agentId}`, c.team]))
  return (h: HomeRecord) => {
    const t = byKey.get(`${h.userId}\u0000${h.agentId}`)
    return t !== undefined && names.has(t) ? t : NO_TEAM
  }
}

/** Usage per user (users with a live session or a home), by user id. */
export const usageByUser = (records: Iterable<Record_>, homes: ReadonlyArray<HomeRecord>) => {
  const m = new Map<string, Usage>()
  for (const r of records) addSession(get(m, r.userId), r)
  for (const h of homes) addHome(get(m, h.userId), h)
  return new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
}

/** Usage per team: every team (zero when idle) and NO_TEAM. */
export const usageByTeam = (teams: ReadonlyArray<TeamRecord>, records: Iterable<Record_>, homes: ReadonlyArray<HomeRecord>, charges: ReadonlyArray<HomeCharge>) => {
  const m = new Map<string, Usage>()
  for (const t of [...teams].sort((a, b) => (a.name < b.name ? -1 : 1))) m.set(t.name, zero())
  m.set(NO_TEAM, zero())
  for (const r of records) addSession(get(m, r.team !== undefined && m.has(r.team) ? r.team : NO_TEAM), r)
  const teamOf = homeTeam(teams, charges)
  for (const h of homes) addHome(get(m, teamOf(h)), h)
  return m
}

/** The JSON figures of one row. */
export const usageJson = (u: Usage) => ({
  sessions: u.sessions,
  hibernated: u.hibernated,
  cpu_cores: u.millicores / 1000,
  memory_bytes: u.memoryBytes,
  homes: u.homes,
  storage_bytes: u.storageBytes
})
