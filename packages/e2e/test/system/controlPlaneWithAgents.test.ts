// End to end: the real control plane (ControlPlane.layerNoDeps, embedded PGlite in memory) and real agents
// (Agent.layerKubernetes) against kube-testserver, whose session pods' port-forwards reach one vnc-testserver.
// Everything on loopback; waits are bounded polls, never fixed sleeps.
import { assert, describe, it } from "@effect/vitest"
import { RfbClient } from "@streamspace/vnc-testserver"
import { Effect } from "effect"
import { join } from "node:path"
import { createWebSocketStream, WebSocket } from "ws"
import * as S from "../support/stack.ts"

/**
 * A cluster and the control plane, for the life of the test's scope. `persistent`: the control plane keeps its
 * database in a directory and listens on a fixed port, so it can be restarted.
 */
const stack = (persistent = false, extraEnv: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const cluster = yield* S.makeCluster()
    const cpEnv: Record<string, string> = {
      ...(persistent ? { PORT: String(yield* S.freePort), DATABASE_IN_MEMORY: "false", DATA_DIR: join(cluster.dir, "data") } : {}),
      ...extraEnv
    }
    const first = yield* S.startControlPlane(cpEnv)
    const cp = first
    const ann = S.api(cp.url, S.userToken("ann"))
    /** Stops the control plane and starts it again on the same port and database. */
    const restartControlPlane = Effect.gen(function*() {
      if (!persistent) return yield* Effect.die(new Error("restartControlPlane needs stack(true)"))
      yield* first.stop
      yield* S.startControlPlane(cpEnv)
    })
    const env = (agentId: string, region: string) => S.agentEnv(cluster, cp.wsUrl, agentId, { REGION: region, PING_INTERVAL: "500ms", PING_TIMEOUT: "500ms" })
    /** Starts an agent on its own scope; `stop` shuts it down gracefully. */
    const startAgent = (agentId: string, region: string) => S.startAgent(env(agentId, region))
    /** Starts an agent, waits for it to enrol as pending, approves it and waits until it is online. */
    const enrol = (agentId: string, region: string) => S.startApprovedAgent(cp, env(agentId, region))
    const pods = () => S.sessionPods(cluster)
    return { kube: cluster.kube, cp, admin: cp.admin, ann, startAgent, enrol, pods, restartControlPlane }
  })

describe("control plane end to end with real agents", () => {
  it.live("placement across two regions and drain; a session from POST to running to DELETE to terminated", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* s.enrol("agent-eu", "eu-1")
      yield* s.enrol("agent-us", "us-1")
      const us = yield* s.ann.post("/sessions", { template: "demo", region: "us-1" })
      assert.strictEqual(us.status, 201)
      assert.strictEqual(us.body.agent_id, "agent-us")
      const eu = yield* s.ann.post("/sessions", { template: "demo", region: "eu-1" })
      assert.strictEqual(eu.body.agent_id, "agent-eu")
      // Drained: no new sessions there, existing ones go on.
      assert.strictEqual((yield* s.admin.patch("/agents/agent-us", { status: "offline" })).body.status, "draining")
      const elsewhere = yield* s.ann.post("/sessions", { template: "demo", region: "us-1" })
      assert.strictEqual(elsewhere.body.agent_id, "agent-eu")
      for (const id of [us.body.id, eu.body.id, elsewhere.body.id]) yield* S.waitForSession(s.ann, id, ["running"])
      assert.strictEqual(s.pods().length, 3)
      const history = yield* s.ann.get(`/commands/${us.body.create_command_id}`)
      assert.strictEqual(history.body.state, "completed")
      // Delete: terminating, then terminated, and the pod is gone.
      const del = yield* s.ann.del(`/sessions/${us.body.id}`)
      assert.strictEqual(del.status, 202)
      const ended = yield* S.waitForSession(s.ann, us.body.id, ["terminated"])
      assert.strictEqual(ended.reason, "deleted")
      yield* S.waitFor("pod deleted", Effect.sync(() => !s.pods().some((p: any) => JSON.stringify(p.metadata).includes(us.body.id))))
      // Both agents drained: 503 and nothing created.
      yield* s.admin.patch("/agents/agent-eu", { status: "offline" })
      const refused = yield* s.ann.post("/sessions", { template: "demo" })
      assert.strictEqual(refused.status, 503)
      assert.strictEqual((yield* s.admin.get("/sessions")).body.sessions.length, 3)
    }), { timeout: 120_000 })

  it.live("a session's history and its user's home: listed from the agent, kept while in use, deleted on the cluster", () =>
    Effect.gen(function*() {
      const s = yield* stack(false, { HOME_SCAN_INTERVAL: "200ms" })
      yield* s.enrol("agent-a", "eu-1")
      const created = (yield* s.ann.post("/sessions", { template: "demo", persistent_home: true })).body
      yield* S.waitForSession(s.ann, created.id, ["running"])
      const history = (yield* s.ann.get(`/sessions/${created.id}/history`)).body.history
      assert.deepStrictEqual(history.map((e: any) => [e.state, e.by]), [
        ["pending", { kind: "user", id: "ann" }],
        ["creating", { kind: "user", id: "ann" }],
        ["running", { kind: "agent", id: "agent-a" }]
      ])
      const listed = yield* S.waitFor("ann's home listed", Effect.map(s.ann.get("/homes"), (r) => (r.body.homes.length === 1 ? r.body.homes[0] : undefined)))
      assert.deepInclude(listed, { agent_id: "agent-a", name: "home-ann", user_id: "ann", in_use: true, expires_at: null })
      assert.strictEqual((yield* s.ann.del(`/homes/${listed.id}`)).status, 409)
      yield* s.ann.del(`/sessions/${created.id}`)
      yield* S.waitForSession(s.ann, created.id, ["terminated"])
      yield* S.waitFor("home no longer in use", Effect.map(s.ann.get("/homes"), (r) => r.body.homes[0]?.in_use === false))
      assert.strictEqual((yield* s.ann.del(`/homes/${listed.id}`)).status, 204)
      const pvc = s.kube.get("persistentvolumeclaims", S.NAMESPACE, "home-ann")
      assert.isTrue(pvc === undefined || pvc.metadata.deletionTimestamp !== undefined)
      assert.deepStrictEqual((yield* s.ann.get("/homes")).body.homes, [])
    }), { timeout: 120_000 })

  it.live("warm pool: a template's warm pods started on the agent; a create takes one and is running at once; the pool refills", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* s.enrol("agent-a", "eu-1")
      const demo = (yield* s.admin.get("/templates/demo")).body
      assert.strictEqual((yield* s.admin.post("/templates", { name: "pooled", image: demo.image, warm_pool: 2 })).status, 201)
      const warm = () => s.kube.list("pods", S.NAMESPACE).filter((p: any) => p.metadata.labels?.["streamspace.io/warm-pool"] === "pooled" && p.status?.phase === "Running")
      yield* S.waitFor("two warm pods running", Effect.sync(() => warm().length === 2))
      const created = yield* s.ann.post("/sessions", { template: "pooled" })
      assert.strictEqual(created.status, 201)
      const running = yield* S.waitForSession(s.ann, created.body.id, ["running"])
      const pod = s.kube.list("pods", S.NAMESPACE).find((p: any) => p.metadata.labels?.["streamspace.io/session-id"] === created.body.id)
      assert.match(pod!.metadata.name, /^warm-pooled-/, "the session runs in a warm pod")
      assert.strictEqual(running.state, "running")
      yield* S.waitFor("the pool refilled", Effect.sync(() => warm().length === 2))
      // The viewer path reaches the claimed pod like any other (port-forward to the warm pod's name).
      const ticket = (yield* s.ann.post(`/sessions/${created.body.id}/vnc-ticket`)).body
      const viewer = yield* Effect.acquireRelease(
        Effect.promise(() => RfbClient.connect(createWebSocketStream(new WebSocket(`${s.cp.wsUrl}${ticket.url}`, ["binary"])), { timeout: 10_000 })),
        (c) => Effect.sync(() => c.close())
      )
      assert.strictEqual(viewer.version, "3.8")
      // No pool any more: the warm pods go; the session stays.
      yield* s.admin.patch("/templates/pooled", { warm_pool: 0 })
      yield* S.waitFor("warm pods removed", Effect.sync(() =>
        !s.kube.list("pods", S.NAMESPACE).some((p: any) => p.metadata.labels?.["streamspace.io/warm-pool"] === "pooled" && p.metadata.deletionTimestamp === undefined)))
      assert.strictEqual((yield* s.ann.get(`/sessions/${created.body.id}`)).body.state, "running")
    }), { timeout: 120_000 })

  it.live("a VNC session through the proxy, the agent and port-forward to vnc-testserver (ticket and JWT)", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* s.enrol("agent-a", "eu-1")
      const created = (yield* s.ann.post("/sessions", { template: "demo" })).body
      yield* S.waitForSession(s.ann, created.id, ["running"])
      const viaTicket = (yield* s.ann.post(`/sessions/${created.id}/vnc-ticket`)).body
      const rfb = (url: string, headers: Record<string, string> = {}) =>
        Effect.acquireRelease(
          Effect.promise(async () => {
            const ws = new WebSocket(url, ["binary"], { headers })
            const c = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
            return { ws, c }
          }),
          (v) => Effect.sync(() => v.c.close())
        )
      const one = yield* rfb(`${s.cp.wsUrl}${viaTicket.url}`)
      assert.strictEqual(one.ws.protocol, "binary")
      assert.strictEqual(one.c.version, "3.8")
      assert.strictEqual(one.c.width, 64)
      assert.strictEqual(one.c.height, 48)
      const two = yield* rfb(`${s.cp.wsUrl}/api/v1/sessions/${created.id}/vnc`, { authorization: `Bearer ${S.userToken("ann")}` })
      assert.strictEqual(two.c.width, 64)
      const metrics = yield* Effect.promise(() => fetch(`${s.cp.url}/metrics`).then((r) => r.text()))
      assert.match(metrics, /streamspace_control_plane_vnc_viewers 2/)
      // The session ends: the viewers are closed by the agent's vnc_closed.
      const closed = new Promise<number>((resolve) => one.ws.once("close", (code) => resolve(code)))
      yield* s.ann.del(`/sessions/${created.id}`)
      const code = yield* Effect.promise(() => closed)
      assert.include([1000, 4410], code)
      yield* S.waitForSession(s.ann, created.id, ["terminated"])
    }), { timeout: 120_000 })

  it.live("agent restart: a session whose pod vanished meanwhile ends lost_on_agent; the other keeps running", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      const first = yield* s.enrol("agent-r", "eu-1")
      const keep = (yield* s.ann.post("/sessions", { template: "demo" })).body
      const lose = (yield* s.ann.post("/sessions", { template: "demo" })).body
      yield* S.waitForSession(s.ann, keep.id, ["running"])
      yield* S.waitForSession(s.ann, lose.id, ["running"])
      yield* first.stop
      const pod = s.pods().find((p: any) => JSON.stringify(p.metadata).includes(lose.id))
      s.kube.delete("pods", S.NAMESPACE, pod!.metadata.name)
      yield* s.startAgent("agent-r", "eu-1")
      yield* S.waitForOnline(s.cp, "agent-r")
      const lost = yield* S.waitForSession(s.ann, lose.id, ["terminated"])
      assert.strictEqual(lost.reason, "lost_on_agent")
      assert.strictEqual((yield* s.ann.get(`/sessions/${keep.id}`)).body.state, "running")
    }), { timeout: 120_000 })

  it.live("control-plane restart on the same database: records survive and a delete sent while the agent was away completes", () =>
    Effect.gen(function*() {
      const s = yield* stack(true)
      const agent = yield* s.enrol("agent-z", "eu-1")
      const created = (yield* s.ann.post("/sessions", { template: "demo" })).body
      yield* S.waitForSession(s.ann, created.id, ["running"])
      yield* agent.stop
      const del = yield* s.ann.del(`/sessions/${created.id}`)
      assert.strictEqual(del.body.state, "terminating")
      yield* s.restartControlPlane
      assert.strictEqual((yield* s.ann.get(`/sessions/${created.id}`)).body.state, "terminating")
      yield* s.startAgent("agent-z", "eu-1")
      yield* S.waitForOnline(s.cp, "agent-z")
      const ended = yield* S.waitForSession(s.ann, created.id, ["terminated"])
      assert.strictEqual(ended.reason, "deleted")
      const command = yield* s.admin.get(`/commands/${ended.delete_command_id}`)
      assert.strictEqual(command.body.state, "completed")
    }), { timeout: 120_000 })
})
