// Placement: picks the agent for a new session. A pure function of the agents' view and the request:
// eligible = approved, connected, online (not warning/error/offline) and not draining, with a free session
// slot and enough free CPU and memory; among those the requested region wins, then a healthy agent over one
// in `warning` (near MAX_SESSIONS, or a recent Kubernetes API error: still able to run sessions), then the
// least loaded one.
import type { AgentId, Capacity } from "@streamspace/protocol"
import { parseQuantity } from "@streamspace/protocol"
import { Result, Schema } from "effect"
import type { AgentViewStatus, EnrollmentState } from "./AgentHub.ts"

export class PlacementError extends Schema.TaggedError<PlacementError>()("PlacementError", {
  reason: Schema.Literals(["NoEligibleAgent"]),
  message: Schema.String,
  /** Why each agent was passed over, one entry per agent. */
  excluded: Schema.Array(Schema.Struct({ agent_id: Schema.String, reason: Schema.String }))
}) {}

/** One agent as placement sees it: the hub's view plus what the control plane has already placed there. */
export interface Candidate {
  readonly id: AgentId
  readonly region: string
  readonly status: AgentViewStatus
  readonly enrollment: EnrollmentState
  readonly connected: boolean
  readonly draining: boolean
  readonly capacity: Capacity | undefined
  /** Sessions on the agent (the larger of its own count and the control plane's not-yet-ended records). */
  readonly activeSessions: number
  /** CPU (cores) and memory (bytes) requested by the control plane's live sessions on this agent. */
  readonly used: { readonly cpu: number; readonly memory: number }
}

export interface PlacementRequest {
  readonly region?: string | undefined
  /** Requested CPU in cores; 0 when the session takes the agent's default. */
  readonly cpu: number
  /** Requested memory in bytes; 0 when the session takes the agent's default. */
  readonly memory: number
}

export interface Placed {
  readonly agent: Candidate
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

/** Why an agent cannot take the request, or undefined when it can. */
export const exclusionReason = (agent: Candidate, request: PlacementRequest): string | undefined => {
  if (agent.enrollment !== "approved") return `enrollment is ${agent.enrollment}`
  if (!agent.connected) return "not connected"
  if (agent.draining) return "draining"
  if (agent.status !== "online" && agent.status !== "warning") return `status is ${agent.status}`
  const capacity = agent.capacity
  if (capacity === undefined) return "has not reported its capacity"
  if (agent.activeSessions >= capacity.max_sessions) {
    return `at max_sessions (${agent.activeSessions}/${capacity.max_sessions})`
  }
  const cpu = quantity(capacity.cpu)
  const memory = quantity(capacity.memory)
  if (request.cpu > 0 && agent.used.cpu + request.cpu > cpu + 1e-9) {
    return `not enough CPU (needs ${fmtCpu(request.cpu)}, ${fmtCpu(Math.max(0, cpu - agent.used.cpu))} free of ${capacity.cpu})`
  }
  if (request.memory > 0 && agent.used.memory + request.memory > memory) {
    return `not enough memory (needs ${fmtMem(request.memory)}, ${fmtMem(Math.max(0, memory - agent.used.memory))} free of ${capacity.memory})`
  }
  return undefined
}

/**
 * Chooses an agent: the requested region first (other regions only when none there is eligible), then online
 * over warning, then the lowest session load, then the most free CPU, then the agent id (so equal agents give
 * a stable answer).
 */
export const place = (agents: ReadonlyArray<Candidate>, request: PlacementRequest): Result.Result<Placed, PlacementError> => {
  const excluded: Array<{ agent_id: string; reason: string }> = []
  const eligible: Array<Placed> = []
  for (const agent of agents) {
    const why = exclusionReason(agent, request)
    if (why !== undefined) {
      excluded.push({ agent_id: agent.id, reason: why })
      continue
    }
    const capacity = agent.capacity!
    eligible.push({
      agent,
      load: capacity.max_sessions === 0 ? 1 : agent.activeSessions / capacity.max_sessions,
      regionMatch: request.region !== undefined && agent.region === request.region
    })
  }
  if (eligible.length === 0) {
    const detail = excluded.length === 0
      ? "no agents are registered"
      : excluded.map((e) => `${e.agent_id}: ${e.reason}`).join("; ")
    return Result.fail(new PlacementError({ reason: "NoEligibleAgent", message: `no eligible agent for this session (${detail})`, excluded }))
  }
  const freeCpu = (p: Placed) => quantity(p.agent.capacity!.cpu) - p.agent.used.cpu
  const before = (a: Placed, b: Placed) =>
    (Number(b.regionMatch) - Number(a.regionMatch) ||
      Number(a.agent.status === "warning") - Number(b.agent.status === "warning") ||
      a.load - b.load ||
      freeCpu(b) - freeCpu(a) ||
      (a.agent.id < b.agent.id ? -1 : a.agent.id > b.agent.id ? 1 : 0)) < 0
  // The first in that order: one pass (O(agents)), not a sort, since only the best one is used.
  let best = eligible[0]!
  for (let i = 1; i < eligible.length; i++) if (before(eligible[i]!, best)) best = eligible[i]!
  return Result.succeed(best)
}
