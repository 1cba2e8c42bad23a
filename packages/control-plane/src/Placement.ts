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
 * a stable answer). One pass over the agents that allocates nothing per agent (it runs for every create, over
 * every agent); why each agent was passed over is worked out only when none is eligible.
 */
export const place = (agents: ReadonlyArray<AgentView>, usage: Usage, request: PlacementRequest): Result.Result<Placed, PlacementError> => {
  let best: AgentView | undefined
  let bestLoad = 0
  let bestRegion = false
  let bestFreeCpu = 0
  for (const agent of agents) {
    const used = usage(agent.id)
    if (exclusionReason(agent, used, request) !== undefined) continue
    const max = agent.capacity.max_sessions
    const load = max === 0 ? 1 : sessionsOn(agent, used) / max
    const region = request.region !== undefined && agent.region === request.region
    const freeCpu = quantity(agent.capacity.cpu) - used.cpu
    const before = best === undefined ||
      (Number(bestRegion) - Number(region) ||
          Number(agent.status === "warning") - Number(best.status === "warning") ||
          load - bestLoad ||
          bestFreeCpu - freeCpu ||
          (agent.id < best.id ? -1 : agent.id > best.id ? 1 : 0)) < 0
    if (before) {
      best = agent
      bestLoad = load
      bestRegion = region
      bestFreeCpu = freeCpu
    }
  }
  if (best !== undefined) return Result.succeed({ agent: best, load: bestLoad, regionMatch: bestRegion })
  const excluded = agents.map((agent) => ({ agent_id: agent.id, reason: exclusionReason(agent, usage(agent.id), request)! }))
  const detail = excluded.length === 0 ? "no agents are registered" : excluded.map((e) => `${e.agent_id}: ${e.reason}`).join("; ")
  return Result.fail(new PlacementError({ reason: "NoEligibleAgent", message: `no eligible agent for this session (${detail})`, excluded }))
}
