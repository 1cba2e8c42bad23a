// The pure rules of teams: which team pays for a create (`chooseTeam`), what a team holds now (`chargeOf`) and
// whether one more session fits its quota (`quotaIssue`). A live session (not ended, not hibernated: a hibernated
// one holds no pod) counts against its team's sessions, CPU and memory; homes count against storage (usage.ts).
// CPU is counted in millicores and memory in bytes, as the per-agent usage counters do, so sums are exact.
import { parseQuantity, type Resources, type SessionPhase } from "@streamspace/protocol"
import type { TeamRecord } from "../store/teams.ts"

export interface Charge {
  readonly sessions: number
  readonly millicores: number
  readonly bytes: number
}

export interface Charged {
  readonly state: SessionPhase
  readonly team?: string | undefined
  readonly spec: { readonly resources?: Resources | undefined }
}

export const millicores = (q: string | undefined) => Math.round((parseQuantity(q ?? "0") ?? 0) * 1000)
export const bytes = (q: string | undefined) => Math.round(parseQuantity(q ?? "0") ?? 0)

/** Holds a pod (so CPU, memory and a session slot): not ended, not hibernated. */
export const holdsPod = (state: SessionPhase) => state !== "terminated" && state !== "failed" && state !== "hibernated"

/** What the live records charged to `team` hold. */
export const chargeOf = (records: Iterable<Charged>, team: string): Charge => {
  let sessions = 0
  let mc = 0
  let b = 0
  for (const r of records) {
    if (r.team !== team || !holdsPod(r.state)) continue
    sessions++
    mc += millicores(r.spec.resources?.cpu)
    b += bytes(r.spec.resources?.memory)
  }
  return { sessions, millicores: mc, bytes: b }
}

export interface QuotaIssue {
  /** The quota at fault: max_sessions, cpu or memory. */
  readonly quota: "max_sessions" | "cpu" | "memory" | "storage"
  readonly message: string
}

/** Why one more session asking for `resources` does not fit `team`'s quota, or undefined. */
export const quotaIssue = (team: TeamRecord, held: Charge, resources: Resources | undefined): QuotaIssue | undefined => {
  const q = team.quota
  if (q.maxSessions !== undefined && held.sessions + 1 > q.maxSessions) {
    return { quota: "max_sessions", message: `team "${team.name}" is at its quota of ${q.maxSessions} sessions (max_sessions; it has ${held.sessions} running)` }
  }
  const askCpu = millicores(resources?.cpu)
  if (q.cpu !== undefined && held.millicores + askCpu > millicores(q.cpu)) {
    return {
      quota: "cpu",
      message: `team "${team.name}" would exceed its CPU quota of ${q.cpu}: its sessions hold ${held.millicores}m and this one asks for ${askCpu}m`
    }
  }
  const askMem = bytes(resources?.memory)
  if (q.memory !== undefined && held.bytes + askMem > bytes(q.memory)) {
    return {
      quota: "memory",
      message: `team "${team.name}" would exceed its memory quota of ${q.memory}: its sessions hold ${held.bytes} bytes and this one asks for ${askMem}`
    }
  }
  return undefined
}

export const allowsTemplate = (team: TeamRecord, template: string) => team.templates === undefined || team.templates.includes(template)
export const allowsRegion = (team: TeamRecord, region: string | undefined) => region === undefined || team.regions === undefined || team.regions.includes(region)

/** A refusal of the team choice: the status (400 unknown team, 403 not allowed), code and message. */
export interface ChoiceIssue {
  readonly kind: "UnknownTeam" | "NotMember" | "NotAllowed"
  readonly message: string
}

/**
 * The team that pays for a create. `all` is every team (by name), `groups` the user's groups. With `asked`, that
 * team, if the user is a member and it allows the template and region; without, the first of the user's teams
 * (by name) that allows both. A user in no team pays with none (undefined): only the per-user limits apply.
 */
export const chooseTeam = (
  all: ReadonlyArray<TeamRecord>,
  groups: ReadonlyArray<string>,
  request: { readonly team?: string | undefined; readonly template: string; readonly region?: string | undefined }
): { readonly team: TeamRecord | undefined } | { readonly issue: ChoiceIssue } => {
  const mine = all.filter((t) => groups.includes(t.group)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  const why = (t: TeamRecord) =>
    !allowsTemplate(t, request.template)
      ? `team "${t.name}" does not allow template "${request.template}" (it allows: ${t.templates!.join(", ") || "none"})`
      : !allowsRegion(t, request.region)
      ? `team "${t.name}" does not allow region "${request.region}" (it allows: ${t.regions!.join(", ") || "none"})`
      : undefined
  if (request.team !== undefined) {
    const t = all.find((x) => x.name === request.team)
    if (t === undefined) return { issue: { kind: "UnknownTeam", message: `team: no team named "${request.team}"` } }
    if (!mine.includes(t)) return { issue: { kind: "NotMember", message: `team: you are not a member of team "${t.name}" (its members have the group "${t.group}")` } }
    const bad = why(t)
    return bad === undefined ? { team: t } : { issue: { kind: "NotAllowed", message: `team: ${bad}` } }
  }
  if (mine.length === 0) return { team: undefined }
  const fit = mine.find((t) => why(t) === undefined)
  if (fit !== undefined) return { team: fit }
  return { issue: { kind: "NotAllowed", message: `none of your teams allows this session: ${mine.map(why).join("; ")}` } }
}
