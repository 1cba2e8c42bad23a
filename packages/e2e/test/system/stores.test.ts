// The store-dependent system behaviour, on both stores (embedded PGlite in a DATA_DIR, and a real PostgreSQL):
// a session's lifecycle from POST to running to DELETE to terminated, command redelivery when an agent
// reconnects, and a control-plane restart on the same database that loses neither agents, sessions nor
// commands. Real control plane, real agent, kube-testserver.
import { assert, describe, layer, type Vitest } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"

/** The delete's outcome and the agent's report of the pod's deletion race; either may name the reason. */
const assertDeleted = (s: any) => assert.include(["deleted", "PodDeleted"], s.reason, JSON.stringify(s))

const suite = (it: Vitest.MethodsNonLive<S.SystemDb | S.SharedControlPlane>) => {
  it.effect("session lifecycle: POST -> creating -> running -> DELETE -> terminating -> terminated, with its commands recorded", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-life"))
      const alice = S.api(cp.url, S.userToken("alice"))
      const bob = S.api(cp.url, S.userToken("bob"))

      const created = yield* alice.post("/sessions", { template: "demo", env: { GREETING: "hi" } })
      assert.strictEqual(created.status, 201, created.text)
      const id: string = created.body.id
      assert.include(["pending", "creating", "running"], created.body.state)
      assert.strictEqual(created.body.agent_id, "agent-life")
      assert.strictEqual(created.body.user_id, "alice")
      assert.deepStrictEqual(created.body.env, { GREETING: "hi" })

      const running = yield* S.waitForSession(alice, id, ["running"])
      assert.isNull(running.reason)
      assert.include(S.sessionIdsIn(cluster), id, "the agent created the session's pod")

      const create = yield* alice.get(`/commands/${running.create_command_id}`)
      assert.strictEqual(create.status, 200, create.text)
      assert.strictEqual(create.body.action, "create_session")
      assert.strictEqual(create.body.state, "completed")
      for (const at of ["created_at", "sent_at", "acked_at", "completed_at"]) assert.isString(create.body[at], at)
      assert.isTrue(create.body.sent_at <= create.body.acked_at && create.body.acked_at <= create.body.completed_at)

      // Another user neither sees nor deletes it.
      assert.strictEqual((yield* bob.get(`/sessions/${id}`)).status, 404)
      assert.strictEqual((yield* bob.del(`/sessions/${id}`)).status, 404)
      assert.deepStrictEqual((yield* bob.get("/sessions")).body.sessions, [])
      assert.deepStrictEqual((yield* alice.get("/sessions")).body.sessions.map((s: any) => s.id), [id])
      yield* S.waitForAgent(cp, "agent-life", "counting the session", (a) => a.active_sessions === 1)

      const deleted = yield* alice.del(`/sessions/${id}`)
      assert.include([200, 202], deleted.status, deleted.text)
      assert.include(["terminating", "terminated"], deleted.body.state)
      const terminated = yield* S.waitForSession(alice, id, ["terminated"])
      assertDeleted(terminated)
      yield* S.waitFor("the session pod to be gone", Effect.sync(() => !S.sessionIdsIn(cluster).includes(id)))
      const del = yield* alice.get(`/commands/${terminated.delete_command_id}`)
      assert.strictEqual(del.body.action, "delete_session")
      assert.strictEqual(del.body.state, "completed")

      // A second DELETE changes nothing.
      const again = yield* alice.del(`/sessions/${id}`)
      assert.strictEqual(again.status, 200, again.text)
      assert.strictEqual(again.body.state, "terminated")
      assert.strictEqual(again.body.delete_command_id, terminated.delete_command_id)
      yield* S.waitForAgent(cp, "agent-life", "counting no session", (a) => a.active_sessions === 0)
    }), 60_000)

  it.effect("command redelivery after an agent reconnect: a DELETE while the agent is away runs when it is back", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      const env = S.agentEnv(cluster, cp.wsUrl, "agent-back")
      const first = yield* S.startApprovedAgent(cp, env)
      const alice = S.api(cp.url, S.userToken("rita"))
      const id: string = (yield* alice.post("/sessions", { template: "demo" })).body.id
      yield* S.waitForSession(alice, id, ["running"])

      yield* first.stop
      yield* S.waitForAgent(cp, "agent-back", "offline", (a) => a.connected === false && a.status === "offline")
      const deleting = yield* alice.del(`/sessions/${id}`)
      assert.strictEqual(deleting.status, 202, deleting.text)
      assert.strictEqual(deleting.body.state, "terminating")
      const pending = yield* alice.get(`/commands/${deleting.body.delete_command_id}`)
      assert.strictEqual(pending.body.state, "pending", "nobody to send it to")
      assert.isNull(pending.body.sent_at)
      assert.include(S.sessionIdsIn(cluster), id, "the session keeps running while its agent is away")

      // The same agent comes back with the credential it stored at approval.
      yield* S.startAgent(env)
      yield* S.waitForOnline(cp, "agent-back")
      assertDeleted(yield* S.waitForSession(alice, id, ["terminated"]))
      const command = yield* alice.get(`/commands/${deleting.body.delete_command_id}`)
      assert.strictEqual(command.body.state, "completed")
      assert.isString(command.body.sent_at)
      yield* S.waitFor("the session pod to be gone", Effect.sync(() => !S.sessionIdsIn(cluster).includes(id)))
    }), 60_000)

  it.effect("control-plane restart on the same database: agents, sessions and a pending command survive", () =>
    Effect.gen(function*() {
      const db = yield* S.SystemDb
      const cluster = yield* S.makeCluster()
      const port = yield* S.freePort
      const cpEnv = { ...(yield* db.fresh), PORT: String(port) }
      const alice = (cp: S.ControlPlaneHandle) => S.api(cp.url, S.userToken("alice"))

      const cp1 = yield* S.startControlPlane(cpEnv)
      const env = S.agentEnv(cluster, cp1.wsUrl, "agent-restart")
      const agent = yield* S.startApprovedAgent(cp1, env)
      const one: string = (yield* alice(cp1).post("/sessions", { template: "demo" })).body.id
      const two: string = (yield* alice(cp1).post("/sessions", { template: "demo" })).body.id
      yield* S.waitForSession(alice(cp1), one, ["running"])
      yield* S.waitForSession(alice(cp1), two, ["running"])

      // A DELETE while the agent is away stays pending: then the control plane goes down.
      // (The agent is stopped first: see the report on stopping a control plane with agents connected.)
      const drained = yield* cp1.admin.patch("/agents/agent-restart", { status: "offline" })
      assert.isTrue(drained.body.draining)
      yield* agent.stop
      yield* S.waitForAgent(cp1, "agent-restart", "offline", (a) => a.connected === false)
      const deleting = yield* alice(cp1).del(`/sessions/${one}`)
      assert.strictEqual(deleting.status, 202, deleting.text)
      const commandId: string = deleting.body.delete_command_id
      yield* cp1.stop

      // A new control plane on the same database knows the agent, both sessions and the pending command.
      const cp2 = yield* S.startControlPlane(cpEnv)
      const kept = yield* alice(cp2).get(`/sessions/${one}`)
      assert.strictEqual(kept.body.state, "terminating")
      assert.strictEqual(kept.body.delete_command_id, commandId)
      assert.strictEqual((yield* alice(cp2).get(`/sessions/${two}`)).body.state, "running")
      assert.deepStrictEqual((yield* alice(cp2).get("/sessions")).body.sessions.map((s: any) => s.id).sort(), [one, two].sort())
      const command = yield* alice(cp2).get(`/commands/${commandId}`)
      assert.strictEqual(command.body.state, "pending")
      assert.strictEqual(command.body.action, "delete_session")
      const known = yield* S.agentView(cp2, "agent-restart")
      assert.strictEqual(known.enrollment, "approved")
      assert.strictEqual(known.connected, false)
      assert.isTrue(known.draining, "the drain flag is stored")

      // The agent comes back with its stored credential (its hash was persisted); the command goes out.
      yield* S.startAgent(env)
      yield* S.waitForAgent(cp2, "agent-restart", "connected (still drained)", (a) => a.connected && a.enrollment === "approved" && a.status === "draining")
      yield* S.waitFor(
        "the delete command to complete",
        Effect.map(alice(cp2).get(`/commands/${commandId}`), (r) => r.body.state === "completed")
      )
      yield* S.waitFor("the session pod to be gone", Effect.sync(() => !S.sessionIdsIn(cluster).includes(one)))
      assertDeleted(yield* S.waitForSession(alice(cp2), one, ["terminated"]))
      assert.strictEqual((yield* alice(cp2).get(`/sessions/${two}`)).body.state, "running", "the agent's inventory keeps it running")

      // Still drained after the restart and the reconnect: undrained, the restarted control plane runs new work.
      assert.strictEqual((yield* S.agentView(cp2, "agent-restart")).status, "draining")
      assert.strictEqual((yield* alice(cp2).post("/sessions", { template: "demo" })).status, 503)
      assert.strictEqual((yield* cp2.admin.patch("/agents/agent-restart", { status: "online" })).body.status, "online")
      const three: string = (yield* alice(cp2).post("/sessions", { template: "demo" })).body.id
      yield* S.waitForSession(alice(cp2), three, ["running"])
      for (const id of [two, three]) assert.include([200, 202], (yield* alice(cp2).del(`/sessions/${id}`)).status)
      for (const id of [two, three]) assertDeleted(yield* S.waitForSession(alice(cp2), id, ["terminated"]))
    }), 90_000)
}

// excludeTestServices: real time throughout (the layer's tests talk to real sockets).
const options = S.layerOptions

describe("system on embedded PGlite (DATA_DIR)", () => {
  layer(S.SharedControlPlane.layerOnDb(S.SystemDb.pglite), options)("pglite", suite)
})

describe("system on a real PostgreSQL (pg_ctl cluster)", () => {
  layer(S.SharedControlPlane.layerOnDb(S.SystemDb.postgres), options)("postgres", suite)
})
