// Network faults between an agent and the control plane, injected by a TCP proxy on the agent's link:
// connection reset, blackhole (no FIN), slow link and a half-open socket. After each: the agent is back online
// on exactly one connection (no leaked socket), no command is lost or run twice (one pod per session), session
// records are right, and a viewer can connect again.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { makeFaultProxy } from "../support/faultsProxy.ts"
import * as S from "../support/stack.ts"

const AGENT = "agent-net"

const setup = Effect.gen(function*() {
  const cluster = yield* S.makeCluster()
  const cp = yield* S.startControlPlane({ HEARTBEAT_INTERVAL: "500ms", HEARTBEAT_MISSED_LIMIT: "2", PING_INTERVAL: "500ms" })
  const proxy = yield* makeFaultProxy({ host: "127.0.0.1", port: cp.port })
  yield* S.startAgent(S.agentEnv(cluster, proxy.wsUrl, AGENT))
  yield* S.approveAgent(cp, AGENT)
  const alice = S.api(cp.url, S.userToken("alice"))
  const created = yield* alice.post("/sessions", { template: "demo" })
  assert.strictEqual(created.status, 201, created.text)
  yield* S.waitForSession(alice, created.body.id, ["running"])
  return { cluster, cp, proxy, alice, first: created.body.id as string }
})

/** One pod per live session, each session's create command completed once, and a viewer gets a frame. */
const assertHealthy = (s: Effect.Success<typeof setup>, sessionIds: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    // A 201 only means the create was dispatched: count pods once every session runs.
    for (const id of sessionIds) yield* S.waitForSession(s.alice, id, ["running"])
    const pods = S.sessionPods(s.cluster)
    assert.strictEqual(pods.length, sessionIds.length, `pods: ${pods.map((p: any) => p.metadata.name).join(",")}`)
    for (const id of sessionIds) {
      const session = yield* S.waitForSession(s.alice, id, ["running"])
      const command = yield* s.cp.admin.get(`/commands/${session.create_command_id}`)
      assert.strictEqual(command.body.state, "completed")
      const v = yield* S.openViewer(s.cp.wsUrl, id, S.userToken("alice"))
      yield* Effect.promise(() => v.client.update(false))
      v.client.close()
    }
    yield* S.waitFor("exactly one open agent connection through the proxy", Effect.sync(() => s.proxy.open() === 1))
  })

describe("network faults on the agent link", () => {
  it.live("connection reset: the agent redials at once and the link carries commands again", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const before = s.proxy.accepted()
      s.proxy.resetAll()
      yield* S.waitFor("a redial", Effect.sync(() => s.proxy.accepted() > before))
      yield* S.waitForOnline(s.cp, AGENT)
      const second = yield* s.alice.post("/sessions", { template: "demo" })
      assert.strictEqual(second.status, 201, second.text)
      yield* assertHealthy(s, [s.first, second.body.id])
    }), 60_000)

  it.live("blackhole (no FIN): both ends notice through missed pongs/heartbeats; placement avoids the agent; it recovers", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const before = s.proxy.accepted()
      s.proxy.setMode("blackhole")
      // the control plane's pinger / heartbeat watchdog marks the agent offline
      yield* S.waitFor("the control plane to mark the agent offline", Effect.map(S.agentView(s.cp, AGENT), (a) => a.connected === false), { timeout: 15_000 })
      // the agent's own ping timeout drops the dead link and it dials again (into the blackhole)
      yield* S.waitFor("the agent to redial", Effect.sync(() => s.proxy.accepted() > before), { timeout: 15_000 })
      assert.isAbove(s.proxy.swallowed(), 0)
      const refused = yield* s.alice.post("/sessions", { template: "demo" })
      assert.strictEqual(refused.status, 503, refused.text)
      assert.strictEqual(refused.body.error.code, "no_eligible_agent")
      const sessions = yield* s.alice.get("/sessions")
      assert.strictEqual(sessions.body.sessions.length, 1, "the refused create left no record")
      s.proxy.setMode("pass")
      s.proxy.resetAll() // the redial stuck in the blackhole would otherwise wait for its own ping timeout
      yield* S.waitForOnline(s.cp, AGENT)
      yield* assertHealthy(s, [s.first])
    }), 60_000)

  it.live("slow link (60 ms latency each way): commands complete once and a viewer still gets frames", () =>
    Effect.gen(function*() {
      const s = yield* setup
      s.proxy.setMode("slow", { delayMs: 60 })
      const second = yield* s.alice.post("/sessions", { template: "demo" })
      assert.strictEqual(second.status, 201, second.text)
      yield* S.waitForSession(s.alice, second.body.id, ["running"], 20_000)
      const deleted = yield* s.alice.del(`/sessions/${s.first}`)
      assert.include([200, 202], deleted.status)
      yield* S.waitForSession(s.alice, s.first, ["terminated"], 20_000)
      const agent = yield* S.agentView(s.cp, AGENT)
      assert.isTrue(agent.connected, "a slow link is not a dead one")
      s.proxy.setMode("pass")
      yield* assertHealthy(s, [second.body.id])
    }), 60_000)

  it.live("half-open socket: the control plane sees the close, the agent's silent socket is dropped by its ping timeout; a delete issued meanwhile is delivered once", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const before = s.proxy.accepted()
      s.proxy.refuse(true) // keep the agent away until the delete is queued
      s.proxy.halfOpenAll()
      yield* S.waitFor("the control plane to mark the agent disconnected", Effect.map(S.agentView(s.cp, AGENT), (a) => a.connected === false))
      const deleted = yield* s.alice.del(`/sessions/${s.first}`)
      assert.strictEqual(deleted.status, 202, deleted.text)
      const command = yield* s.cp.admin.get(`/commands/${deleted.body.delete_command_id}`)
      assert.strictEqual(command.body.state, "pending", "queued for the agent that is away")
      yield* S.waitFor("the agent to notice and redial", Effect.sync(() => s.proxy.accepted() > before), { timeout: 15_000 })
      s.proxy.refuse(false)
      yield* S.waitForOnline(s.cp, AGENT)
      yield* S.waitForSession(s.alice, s.first, ["terminated"])
      const done = yield* s.cp.admin.get(`/commands/${deleted.body.delete_command_id}`)
      assert.strictEqual(done.body.state, "completed")
      yield* S.waitFor("the pod to be gone", Effect.sync(() => S.sessionPods(s.cluster).length === 0))
      yield* assertHealthy(s, [])
    }), 60_000)
})
