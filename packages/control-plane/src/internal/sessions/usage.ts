// Per-agent usage of the control plane's live session records (not yet terminated or failed, not hibernated): how many, and the
// CPU and memory they request. Sessions updates it on every change of a record (create, each transition, the
// records loaded at start), so placement reads an agent's usage in O(1) instead of scanning every session.
// CPU is counted in whole millicores and memory in bytes, so adding and removing the same session always
// returns to exactly the previous figure (no floating-point drift over millions of transitions).
import { parseQuantity, type SessionPhase, type SessionSpec } from "@streamspace/protocol"

export interface AgentUsage {
  /** Live records placed on the agent. */
  readonly sessions: number
  /** CPU in cores requested by them. */
  readonly cpu: number
  /** Memory in bytes requested by them. */
  readonly memory: number
}

/** What a usage counter needs to know about a session record. */
export interface Counted {
  readonly id: string
  readonly agentId: string
  readonly state: SessionPhase
  readonly spec: Pick<SessionSpec, "resources">
}

const ZERO: AgentUsage = { sessions: 0, cpu: 0, memory: 0 }

/** A hibernated session holds no pod, so no CPU, memory or session slot on its agent. */
const isLive = (state: SessionPhase) => state !== "terminated" && state !== "failed" && state !== "hibernated"

const millicores = (q: string | undefined) => Math.round((parseQuantity(q ?? "0") ?? 0) * 1000)
const bytes = (q: string | undefined) => Math.round(parseQuantity(q ?? "0") ?? 0)

interface Counter {
  readonly ids: Set<string>
  sessions: number
  millicores: number
  bytes: number
  /** `get`'s answer, made once per change (placement reads every agent's usage for every create). */
  view: AgentUsage | undefined
}

export interface UsageCounters {
  /** Records that `next` replaces `prev` (undefined for a new record; both live or not, any agent). */
  readonly replace: (prev: Counted | undefined, next: Counted) => void
  readonly get: (agentId: string) => AgentUsage
  /** Ids of the agent's live records. */
  readonly liveIds: (agentId: string) => ReadonlyArray<string>
  /** Every agent with live records (for tests and diagnostics). */
  readonly snapshot: () => ReadonlyMap<string, AgentUsage>
}

export const makeUsageCounters = (): UsageCounters => {
  const byAgent = new Map<string, Counter>()
  const add = (s: Counted, sign: 1 | -1) => {
    if (!isLive(s.state)) return
    let c = byAgent.get(s.agentId)
    if (c === undefined) {
      c = { ids: new Set(), sessions: 0, millicores: 0, bytes: 0, view: undefined }
      byAgent.set(s.agentId, c)
    }
    if (sign === 1) c.ids.add(s.id)
    else c.ids.delete(s.id)
    c.sessions += sign
    c.millicores += sign * millicores(s.spec.resources?.cpu)
    c.bytes += sign * bytes(s.spec.resources?.memory)
    c.view = undefined
    if (c.sessions <= 0) byAgent.delete(s.agentId)
  }
  const view = (c: Counter | undefined): AgentUsage =>
    c === undefined ? ZERO : (c.view ??= { sessions: c.sessions, cpu: c.millicores / 1000, memory: c.bytes })
  return {
    replace: (prev, next) => {
      if (prev !== undefined && prev.agentId === next.agentId && isLive(prev.state) === isLive(next.state) && prev.spec === next.spec) return
      if (prev !== undefined) add(prev, -1)
      add(next, 1)
    },
    get: (agentId) => view(byAgent.get(agentId)),
    liveIds: (agentId) => [...(byAgent.get(agentId)?.ids ?? [])],
    snapshot: () => new Map([...byAgent].map(([id, c]) => [id, view(c)]))
  }
}

/** The same figures computed from scratch: what the counters must always equal. */
export const recount = (records: Iterable<Counted>): ReadonlyMap<string, AgentUsage> => {
  const counters = makeUsageCounters()
  for (const r of records) counters.replace(undefined, r)
  return counters.snapshot()
}
