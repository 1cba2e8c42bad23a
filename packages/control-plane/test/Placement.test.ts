import type { AgentId } from "@streamspace/protocol"
import { Result } from "effect"
import { describe, expect, it } from "vitest"
import type { AgentView } from "../src/AgentHub.ts"
import type { AgentUsage } from "../src/internal/sessions/usage.ts"
import { place, type PlacementRequest } from "../src/Placement.ts"

/** An agent as the hub shows it, with what the control plane placed on it (`used`: CPU cores and memory bytes, and its live records). */
interface Candidate {
  readonly view: AgentView
  readonly used: AgentUsage
}

const agent = (id: string, over: Partial<AgentView> & { readonly used?: { readonly cpu: number; readonly memory: number; readonly sessions?: number } } = {}): Candidate => {
  const { used, ...view } = over
  return {
    view: {
      id: id as AgentId,
      platform: "kubernetes",
      region: "eu",
      version: "0.1.0",
      status: "online",
      enrollment: "approved",
      connected: true,
      draining: false,
      capacity: { cpu: "8", memory: "16Gi", max_sessions: 10 },
      activeSessions: 0,
      activeTunnels: 0,
      lastHeartbeat: undefined,
      createdAt: new Date(0),
      updatedAt: new Date(0),
      enrollmentChangedAt: undefined,
      ...view
    },
    used: { sessions: used?.sessions ?? 0, cpu: used?.cpu ?? 0, memory: used?.memory ?? 0 }
  }
}
const none: PlacementRequest = { cpu: 0, memory: 0 }
const run = (agents: ReadonlyArray<Candidate>, req: PlacementRequest) => {
  const usage = new Map(agents.map((a) => [a.view.id as string, a.used]))
  return place(agents.map((a) => a.view), (agentId) => usage.get(agentId)!, req)
}
const chosen = (agents: ReadonlyArray<Candidate>, req: PlacementRequest = none) => {
  const r = run(agents, req)
  if (Result.isFailure(r)) throw new Error(r.failure.message)
  return r.success.agent.id
}
const refused = (agents: ReadonlyArray<Candidate>, req: PlacementRequest = none) => {
  const r = run(agents, req)
  if (Result.isSuccess(r)) throw new Error(`expected no agent, got ${r.success.agent.id}`)
  return r.failure
}

describe("place", () => {
  const cases: ReadonlyArray<[string, ReadonlyArray<Candidate>, PlacementRequest, string]> = [
    ["the only agent", [agent("a")], none, "a"],
    ["least loaded wins", [agent("a", { activeSessions: 5 }), agent("b", { activeSessions: 2 })], none, "b"],
    ["load is relative to max_sessions", [
      agent("a", { activeSessions: 5, capacity: { cpu: "8", memory: "16Gi", max_sessions: 100 } }),
      agent("b", { activeSessions: 2, capacity: { cpu: "8", memory: "16Gi", max_sessions: 4 } })
    ], none, "a"],
    ["requested region wins over load", [agent("a"), agent("b", { region: "us", activeSessions: 8 })], { ...none, region: "us" }, "b"],
    ["another region when none in the requested one is eligible", [agent("a"), agent("b", { region: "us", draining: true })], { ...none, region: "us" }, "a"],
    ["unknown region falls back to least loaded", [agent("a", { activeSessions: 1 }), agent("b")], { ...none, region: "mars" }, "b"],
    ["draining agents are skipped", [agent("a", { draining: true }), agent("b", { activeSessions: 9 })], none, "b"],
    ["a warning agent comes after a healthy one, whatever its load", [agent("a", { status: "warning" }), agent("b", { activeSessions: 9 })], none, "b"],
    ["a warning agent is used when it is the only eligible one", [agent("a", { status: "warning" }), agent("b", { status: "error" })], none, "a"],
    ["a warning agent in the requested region wins over a healthy one elsewhere", [agent("a"), agent("b", { region: "us", status: "warning" })], { ...none, region: "us" }, "b"],
    ["pending agents are skipped", [agent("a", { enrollment: "pending" }), agent("b", { activeSessions: 9 })], none, "b"],
    ["disconnected agents are skipped", [agent("a", { connected: false }), agent("b", { activeSessions: 9 })], none, "b"],
    ["full agents are skipped", [agent("a", { activeSessions: 10 }), agent("b", { activeSessions: 9 })], none, "b"],
    ["the control plane's own live records count when the agent has not reported them yet", [agent("a", { used: { cpu: 0, memory: 0, sessions: 10 } }), agent("b", { activeSessions: 9 })], none, "b"],
    ["CPU must fit", [agent("a", { used: { cpu: 7.5, memory: 0 } }), agent("b", { activeSessions: 9 })], { cpu: 1, memory: 0 }, "b"],
    ["CPU exactly fits", [agent("a", { used: { cpu: 7, memory: 0 } })], { cpu: 1, memory: 0 }, "a"],
    ["memory must fit", [agent("a", { used: { cpu: 0, memory: 15.5 * 2 ** 30 } }), agent("b", { activeSessions: 9 })], { cpu: 0, memory: 2 ** 30 }, "b"],
    ["equal load: more free CPU", [agent("a", { used: { cpu: 4, memory: 0 } }), agent("b", { used: { cpu: 1, memory: 0 } })], none, "b"],
    ["equal everything: lowest id", [agent("b"), agent("a"), agent("c")], none, "a"]
  ]
  for (const [name, agents, req, want] of cases) {
    it(name, () => expect(chosen(agents, req)).toBe(want))
  }

  it("no agents at all", () => {
    const e = refused([])
    expect(e.reason).toBe("NoEligibleAgent")
    expect(e.message).toContain("no agents are registered")
  })

  it("lists why every agent was excluded", () => {
    const e = refused([
      agent("off", { connected: false, status: "offline" }),
      agent("drain", { draining: true }),
      agent("full", { activeSessions: 10 }),
      agent("cpu", { used: { cpu: 8, memory: 0 } }),
      agent("mem", { used: { cpu: 0, memory: 16 * 2 ** 30 } }),
      agent("pending", { enrollment: "pending" }),
      agent("err", { status: "error" })
    ], { cpu: 0.5, memory: 2 ** 29 })
    expect(e.excluded).toEqual([
      { agent_id: "off", reason: "not connected" },
      { agent_id: "drain", reason: "draining" },
      { agent_id: "full", reason: "at max_sessions (10/10)" },
      { agent_id: "cpu", reason: "not enough CPU (needs 500m, 0m free of 8)" },
      { agent_id: "mem", reason: "not enough memory (needs 512Mi, 0Mi free of 16Gi)" },
      { agent_id: "pending", reason: "enrollment is pending" },
      { agent_id: "err", reason: "status is error" }
    ])
    expect(e.message).toMatch(/^no eligible agent for this session \(off: not connected; drain: draining; full: at max_sessions/)
  })
})
