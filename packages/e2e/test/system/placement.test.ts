// Placement and drain with real agents in separate kube-testserver clusters, and bad API input answered
// clearly without changing anything. One control plane (in-memory store) serves the file; each test has its
// own agents (the earlier tests' agents are stopped, hence offline and never chosen) and its own users.
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"

const podsOf = (cluster: S.Cluster) => S.sessionIdsIn(cluster)

layer(S.SharedControlPlane.layer(), S.layerOptions)("placement and API", (it) => {
  it.effect("placement across two agents in two regions: the requested region wins, then the least loaded agent", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const eu = yield* S.makeCluster()
      const us = yield* S.makeCluster()
      yield* S.startApprovedAgent(cp, S.agentEnv(eu, cp.wsUrl, "agent-eu", { REGION: "eu-west-1" }))
      yield* S.startApprovedAgent(cp, S.agentEnv(us, cp.wsUrl, "agent-us", { REGION: "us-east-1" }))
      const pat = S.api(cp.url, S.userToken("pat"))
      const create = (body: Record<string, unknown>) =>
        Effect.map(pat.post("/sessions", { template: "demo", ...body }), (r) => {
          assert.strictEqual(r.status, 201, r.text)
          return r.body as { id: string; agent_id: string; region: string | null }
        })

      const eu1 = yield* create({ region: "eu-west-1" })
      const eu2 = yield* create({ region: "eu-west-1" })
      const us1 = yield* create({ region: "us-east-1" })
      assert.deepStrictEqual([eu1.agent_id, eu2.agent_id, us1.agent_id], ["agent-eu", "agent-eu", "agent-us"])
      assert.strictEqual(eu1.region, "eu-west-1")
      // No region: the least loaded agent (us has 1 session, eu has 2).
      const any = yield* create({})
      assert.strictEqual(any.agent_id, "agent-us")
      // A region nobody serves falls back to the eligible agents (now 2 each): still placed.
      const elsewhere = yield* create({ region: "ap-south-1" })
      assert.include(["agent-eu", "agent-us"], elsewhere.agent_id)

      const all = [eu1, eu2, us1, any, elsewhere]
      for (const s of all) yield* S.waitForSession(pat, s.id, ["running"])
      // Each session's pod runs in its agent's cluster and nowhere else.
      for (const s of all) {
        const [mine, other] = s.agent_id === "agent-eu" ? [eu, us] : [us, eu]
        assert.include(podsOf(mine), s.id)
        assert.notInclude(podsOf(other), s.id)
      }
      assert.strictEqual(podsOf(eu).length + podsOf(us).length, 5)
      for (const s of all) yield* pat.del(`/sessions/${s.id}`)
      for (const s of all) yield* S.waitForSession(pat, s.id, ["terminated"])
    }), 90_000)

  it.effect("drain: no new sessions on a drained agent, its sessions keep running and can be deleted, undrain restores it", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const one = yield* S.makeCluster()
      const two = yield* S.makeCluster()
      yield* S.startApprovedAgent(cp, S.agentEnv(one, cp.wsUrl, "agent-d1", { REGION: "drain-1" }))
      yield* S.startApprovedAgent(cp, S.agentEnv(two, cp.wsUrl, "agent-d2", { REGION: "drain-2" }))
      const dana = S.api(cp.url, S.userToken("dana"))
      const kept = yield* dana.post("/sessions", { template: "demo", region: "drain-1" })
      assert.strictEqual(kept.body.agent_id, "agent-d1")
      yield* S.waitForSession(dana, kept.body.id, ["running"])

      // Only an admin drains.
      const byUser = yield* dana.patch("/agents/agent-d1", { status: "offline" })
      assert.strictEqual(byUser.status, 403, byUser.text)
      const drained = yield* cp.admin.patch("/agents/agent-d1", { status: "offline" })
      assert.strictEqual(drained.status, 200, drained.text)
      assert.strictEqual(drained.body.status, "draining")
      assert.isTrue(drained.body.draining)
      assert.isTrue(drained.body.connected, "a drained agent stays connected")

      // New sessions avoid it, even when its region is asked for.
      const moved = yield* dana.post("/sessions", { template: "demo", region: "drain-1" })
      assert.strictEqual(moved.status, 201, moved.text)
      assert.strictEqual(moved.body.agent_id, "agent-d2")
      yield* S.waitForSession(dana, moved.body.id, ["running"])
      assert.notInclude(podsOf(one), moved.body.id)

      // With every agent drained: 503 with the reasons, and no session record is left behind.
      yield* cp.admin.patch("/agents/agent-d2", { status: "offline" })
      const before = (yield* dana.get("/sessions")).body.sessions.length
      const none = yield* dana.post("/sessions", { template: "demo" })
      assert.strictEqual(none.status, 503, none.text)
      assert.strictEqual(none.body.error.code, "no_eligible_agent")
      assert.include(none.body.error.message, "agent-d1: draining")
      assert.include(none.body.error.message, "agent-d2: draining")
      assert.strictEqual((yield* dana.get("/sessions")).body.sessions.length, before)

      // The existing sessions were untouched; one on the drained agent is deleted normally.
      assert.strictEqual((yield* dana.get(`/sessions/${kept.body.id}`)).body.state, "running")
      assert.include(podsOf(one), kept.body.id)
      yield* dana.del(`/sessions/${kept.body.id}`)
      yield* S.waitForSession(dana, kept.body.id, ["terminated"])
      yield* S.waitFor("the pod to be gone", Effect.sync(() => !podsOf(one).includes(kept.body.id)))

      // Undrained, it takes sessions again; its drain flag survived heartbeats in between.
      assert.strictEqual((yield* S.agentView(cp, "agent-d2")).status, "draining")
      const undrained = yield* cp.admin.patch("/agents/agent-d1", { status: "online" })
      assert.strictEqual(undrained.body.status, "online")
      assert.isFalse(undrained.body.draining)
      const back = yield* dana.post("/sessions", { template: "demo" })
      assert.strictEqual(back.status, 201, back.text)
      assert.strictEqual(back.body.agent_id, "agent-d1")
      yield* S.waitForSession(dana, back.body.id, ["running"])
      for (const id of [moved.body.id, back.body.id]) yield* dana.del(`/sessions/${id}`)
      for (const id of [moved.body.id, back.body.id]) yield* S.waitForSession(dana, id, ["terminated"])
      yield* cp.admin.patch("/agents/agent-d2", { status: "online" })
    }), 90_000)

  it.effect("bad API input is answered 4xx with a JSON error naming the field, and changes nothing", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const cluster = yield* S.makeCluster()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-input"))
      const ivy = S.api(cp.url, S.userToken("ivy"))
      const good = yield* ivy.post("/sessions", { template: "demo" })
      yield* S.waitForSession(ivy, good.body.id, ["running"])
      const token = S.userToken("ivy")
      const post = (raw: string) => S.request(cp.url, "POST", "/api/v1/sessions", { token, raw })

      const cases: ReadonlyArray<readonly [string, Effect.Effect<S.ApiResponse>, number, string]> = [
        ["unknown field", ivy.post("/sessions", { template: "demo", colour: "blue" }), 400, "colour"],
        ["wrong type", ivy.post("/sessions", { template: 42 }), 400, "template"],
        ["missing template", ivy.post("/sessions", {}), 400, "template"],
        ["unknown template", ivy.post("/sessions", { template: "no-such-template" }), 400, "template"],
        ["invalid template name", ivy.post("/sessions", { template: "Not A Name!" }), 400, "template"],
        ["bad quantity", ivy.post("/sessions", { template: "demo", resources: { cpu: "lots" } }), 400, "cpu"],
        ["env not a map of strings", ivy.post("/sessions", { template: "demo", env: { A: 1 } }), 400, "env"],
        ["persistent_home not a boolean", ivy.post("/sessions", { template: "demo", persistent_home: "yes" }), 400, "persistent_home"],
        ["not JSON", post("{ template: demo"), 400, "JSON"],
        ["a JSON array", post("[]"), 400, ""],
        ["unknown session", ivy.get("/sessions/s-000000000000"), 404, "s-000000000000"],
        ["bad drain status", cp.admin.patch("/agents/agent-input", { status: "asleep" }), 400, "status"],
        ["invalid agent id", cp.admin.get("/agents/NOT_AN_ID"), 400, "id"],
        ["unknown agent", cp.admin.get("/agents/agent-nobody"), 404, "agent-nobody"],
        ["user creating a template", ivy.post("/templates", { name: "mine", image: "x/y:1" }), 403, ""],
        ["unknown endpoint", ivy.get("/nothing-here"), 404, "/api/v1/nothing-here"]
      ]
      for (const [what, call, status, names] of cases) {
        const r = yield* call
        assert.strictEqual(r.status, status, `${what}: ${r.text}`)
        assert.isString(r.body?.error?.code, `${what}: ${r.text}`)
        assert.isString(r.body.error.message, what)
        assert.include(r.body.error.message, names, `${what}: ${r.body.error.message}`)
      }

      // Nothing changed: one session, still running; the agent still online and not drained; input still works.
      const sessions = (yield* ivy.get("/sessions")).body.sessions
      assert.deepStrictEqual(sessions.map((s: any) => [s.id, s.state]), [[good.body.id, "running"]])
      const agent = yield* S.agentView(cp, "agent-input")
      assert.strictEqual(agent.status, "online")
      assert.isFalse(agent.draining)
      assert.deepStrictEqual(podsOf(cluster), [good.body.id])
      const second = yield* ivy.post("/sessions", { template: "demo", env: { A: "1" } })
      assert.strictEqual(second.status, 201, second.text)
      yield* S.waitForSession(ivy, second.body.id, ["running"])
      for (const id of [good.body.id, second.body.id]) yield* ivy.del(`/sessions/${id}`)
      for (const id of [good.body.id, second.body.id]) yield* S.waitForSession(ivy, id, ["terminated"])
    }), 90_000)
})
