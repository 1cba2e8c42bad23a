// Placement: picks the agent for a new session. A pure function of the agents' view and the request:
// eligible = approved, connected, online or warning (not error/offline) and not draining, with a free session
// slot and enough free CPU and memory; among those the requested region wins, then a healthy agent over one
// in `warning` (near MAX_SESSIONS, or a recent Kubernetes API error: still able to run sessions), then the
// least loaded one.
import { parseQuantity } from "@streamspace/protocol"
import { Result, Schema } from "effect"
import type { AgentView } from "./AgentHub.ts"
import type { AgentUsage } from "./internal/sessions/usage.ts"

export class PlacementError extends Schema.TaggedError<PlacementError>()("PlacementError", {
  reason: Schema.Literals(["NoEligibleAgent"]),
  message: Schema.String,
  /** Why each agent was passed over, one entry per agent. */
  excluded: Schema.Array(Schema.Struct({ agent_id: Schema.String, reason: Schema.String }))
}) {}

/** What the control plane has already placed on an agent (its live session records). */
export type Usage = (agentId: AgentView["id"]) => AgentUsage

export interface PlacementRequest {
  readonly region?: string | undefined
  /** Requested CPU in cores; 0 when the session takes the agent's default. */
  readonly cpu: number
  /** Requested memory in bytes; 0 when the session takes the agent's default. */
  readonly memory: number
}

export interface Placed {
  readonly agent: AgentView
  /** Sessions over max_sessions before this one, 0..1. */
  readonly load: number
  readonly regionMatch: boolean
}

// Capacities repeat across agents ("8", "16Gi"): parse each string once. Memoising keeps `place` pure.
const parsed = new Map<string, number>()
const quantity = (q: string): number => {
  let v = parsed.get(q)
  if (v === undefined) {
    v = parseQuantity(q) ?? 0
    if (parsed.size >= 4096) parsed.clear()
    parsed.set(q, v)
  }
  return v
}

const fmtCpu = (cores: number) => `${Math.round(cores * 1000)}m`
const fmtMem = (bytes: number) => `${Math.round(bytes / 2 ** 20)}Mi`

/** Sessions on the agent: the larger of its own count and the control plane's not-yet-ended records. */
const sessionsOn = (agent: AgentView, used: AgentUsage) => Math.max(used.sessions, agent.activeSessions)

/** Why an agent cannot take the request, or undefined when it can. */
export const exclusionReason = (agent: AgentView, used: AgentUsage, request: PlacementRequest): string | undefined => {
  if (agent.enrollment !== "approved") return `enrollment is ${agent.enrollment}`
  if (!agent.connected) return "not connected"
  if (agent.draining) return "draining"
  if (agent.status !== "online" && agent.status !== "warning") return `status is ${agent.status}`
  const capacity = agent.capacity
  const sessions = sessionsOn(agent, used)
  if (sessions >= capacity.max_sessions) return `at max_sessions (${sessions}/${capacity.max_sessions})`
  const cpu = quantity(capacity.cpu)
  const memory = quantity(capacity.memory)
  if (request.cpu > 0 && used.cpu + request.cpu > cpu + 1e-9) {
    return `not enough CPU (needs ${fmtCpu(request.cpu)}, ${fmtCpu(Math.max(0, cpu - used.cpu))} free of ${capacity.cpu})`
  }
  if (request.memory > 0 && used.memory + request.memory > memory) {
    return `not enough memory (needs ${fmtMem(request.memory)}, ${fmtMem(Math.max(0, memory - used.memory))} free of ${capacity.memory})`
  }
  return undefined
}

/**
 * Chooses an agent: the requested region first (other regions only when none there is eligible), then online
 * over warning, then the lowest session load, then the most free CPU, then the agent id (so equal agents give
 * a stable answer).
 */
export const place = (agents: ReadonlyArray<AgentView>, usage: Usage, request: PlacementRequest): Result.Result<Placed, PlacementError> => {
  const excluded: Array<{ agent_id: string; reason: string }> = []
  const eligible: Array<Placed & { readonly usedCpu: number }> = []
  for (const agent of agents) {
    const used = usage(agent.id)
    const why = exclusionReason(agent, used, request)
    if (why !== undefined) {
      excluded.push({ agent_id: agent.id, reason: why })
      continue
    }
    const max = agent.capacity.max_sessions
    eligible.push({
      agent,
      load: max === 0 ? 1 : sessionsOn(agent, used) / max,
      regionMatch: request.region !== undefined && agent.region === request.region,
      usedCpu: used.cpu
    })
  }
  if (eligible.length === 0) {
    const detail = excluded.length === 0
      ? "no agents are registered"
      : excluded.map((e) => `${e.agent_id}: ${e.reason}`).join("; ")
    return Result.fail(new PlacementError({ reason: "NoEligibleAgent", message: `no eligible agent for this session (${detail})`, excluded }))
  }
  const freeCpu = (p: (typeof eligible)[number]) => quantity(p.agent.capacity.cpu) - p.usedCpu
  const before = (a: (typeof eligible)[number], b: (typeof eligible)[number]) =>
    (Number(b.regionMatch) - Number(a.regionMatch) ||
      Number(a.agent.status === "warning") - Number(b.agent.status === "warning") ||
      a.load - b.load ||
      freeCpu(b) - freeCpu(a) ||
      (a.agent.id < b.agent.id ? -1 : a.agent.id > b.agent.id ? 1 : 0)) < 0
  // The first in that order: one pass (O(agents)), not a sort, since only the best one is used.
  let best = eligible[0]!
  for (let i = 1; i < eligible.length; i++) if (before(eligible[i]!, best)) best = eligible[i]!
  return Result.succeed({ agent: best.agent, load: best.load, regionMatch: best.regionMatch })
}
