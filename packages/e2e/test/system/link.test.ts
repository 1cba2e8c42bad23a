// The agent link end to end, with the real agent package embedded against kube-testserver: enrolment and
// approval (and rejection), wrong tokens answered clearly, a reconnect replacing the old socket without
// flapping, the heartbeat deadline (on a TestClock) taking an agent offline, and bad frames from an agent
// answered with an `error` while the link, its commands and the other agents carry on.
import { assert, describe, it, layer } from "@effect/vitest"
import type { AgentId, SessionId } from "@streamspace/protocol"
import { CloseCode, encodeData, MAX_FRAME_BYTES } from "@streamspace/protocol"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { existsSync, readFileSync } from "node:fs"
import { connect, connectAndHello, type FakeAgent, heartbeatPayload, Refused } from "@streamspace/control-plane/test-support"
import * as S from "../support/stack.ts"

/** The command with this id (an agent also gets the control plane's own on connect: list_homes, set_warm_pools). */
const commandById = (agent: FakeAgent, id: string) =>
  Effect.gen(function*() {
    while (true) {
      const c = yield* agent.next("command")
      if (c.payload.command_id === id) return c
    }
  })

const connectUrl = (cp: S.ControlPlaneHandle) => `${cp.wsUrl}/api/v1/agent/connect`

/** The refusal of an upgrade with `token`, as status and parsed JSON body. */
const refusal = (cp: S.ControlPlaneHandle, token: string | undefined) =>
  Effect.scoped(connect(connectUrl(cp), { token })).pipe(
    Effect.flatMap(() => Effect.die(new Error("the upgrade was accepted"))),
    Effect.catch((e: Refused) => Effect.succeed({ status: e.status, body: JSON.parse(e.body) }))
  )

layer(S.SharedControlPlane.layer(), S.layerOptions)("agent link", (it) => {
  it.effect("enrolment: pending until approved, no placement on a pending agent, credential stored and reused, bootstrap refused afterwards", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      const alice = S.api(cp.url, S.userToken("alice"))
      const env = S.agentEnv(cluster, cp.wsUrl, "agent-enrol")
      const first = yield* S.startAgent(env)

      const pending = yield* S.waitForAgent(cp, "agent-enrol", "pending", (a) => a.enrollment === "pending" && a.connected)
      assert.strictEqual(pending.region, "test-1")
      assert.strictEqual(pending.platform, "kubernetes")
      assert.isFalse(yield* first.connection.isConnected, "a pending agent is not connected for commands")
      // Nothing is placed on a pending agent, and nothing is half-created.
      const refused = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(refused.status, 503, refused.text)
      assert.strictEqual(refused.body.error.code, "no_eligible_agent")
      assert.isString(refused.body.error.message)
      assert.deepStrictEqual((yield* alice.get("/sessions")).body.sessions, [])
      assert.isFalse(existsSync(env.AGENT_CREDENTIAL_FILE!))

      // Only an admin approves.
      const byUser = yield* alice.post("/agents/agent-enrol/approve")
      assert.strictEqual(byUser.status, 403, byUser.text)
      assert.strictEqual(byUser.body.error.code, "forbidden")
      const approved = yield* cp.admin.post("/agents/agent-enrol/approve")
      assert.strictEqual(approved.status, 200, approved.text)
      assert.strictEqual(approved.body.enrollment, "approved")
      yield* S.waitForOnline(cp, "agent-enrol")
      yield* S.waitFor("the agent to be connected", first.connection.isConnected)
      const credential = readFileSync(env.AGENT_CREDENTIAL_FILE!, "utf8").trim()
      assert.isAtLeast(credential.length, 16)
      assert.notInclude(credential, S.BOOTSTRAP_TOKEN)
      assert.strictEqual((yield* cp.admin.post("/agents/agent-enrol/approve")).status, 409, "approving twice is a conflict")

      // The same agent restarted uses its stored credential: approved at once, and sessions run on it.
      yield* first.stop
      yield* S.waitForAgent(cp, "agent-enrol", "offline", (a) => !a.connected)
      const second = yield* S.startAgent(env)
      yield* S.waitForOnline(cp, "agent-enrol")
      // The control plane counts it online when the hello is accepted; the agent, when the welcome arrives.
      yield* S.waitFor("the agent to be connected again", second.connection.isConnected)
      const created = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201, created.text)
      yield* S.waitForSession(alice, created.body.id, ["running"])

      // The bootstrap token no longer admits this id: the hello is refused with a reason.
      const impostor = yield* connect(connectUrl(cp), { token: S.BOOTSTRAP_TOKEN })
      yield* impostor.send("hello", { ...enrollingHello(), agent_id: "agent-enrol" as AgentId })
      const refusedHello = yield* impostor.next("error")
      assert.strictEqual(refusedHello.payload.code, "Unauthorized")
      assert.include(refusedHello.payload.message, "credential")
      assert.strictEqual((yield* impostor.closed()).code, CloseCode.forbidden)
      assert.strictEqual((yield* S.agentView(cp, "agent-enrol")).connected, true, "the real agent keeps its link")
      assert.strictEqual((yield* alice.get(`/sessions/${created.body.id}`)).body.state, "running")
    }), 60_000)

  it.effect("rejection: a rejected agent is refused and cannot be approved later", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      const agent = yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, "agent-unwanted"))
      yield* S.waitForAgent(cp, "agent-unwanted", "pending", (a) => a.enrollment === "pending" && a.connected)
      const rejected = yield* cp.admin.post("/agents/agent-unwanted/reject")
      assert.strictEqual(rejected.status, 200, rejected.text)
      assert.strictEqual(rejected.body.enrollment, "rejected")
      yield* S.waitForAgent(cp, "agent-unwanted", "refused", (a) => a.enrollment === "rejected" && !a.connected)
      const again = yield* cp.admin.post("/agents/agent-unwanted/approve")
      assert.strictEqual(again.status, 409, again.text)
      assert.include(again.body.error.message, "rejected")
      assert.isFalse(yield* agent.connection.isConnected)
    }), 60_000)

  it.effect("wrong tokens are answered 401 with a JSON reason, and the hub keeps serving", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-good"))

      const none = yield* refusal(cp, undefined)
      assert.strictEqual(none.status, 401)
      assert.strictEqual(none.body.error.code, "unauthorized")
      assert.include(none.body.error.message, "Authorization")
      const wrong = yield* refusal(cp, "not-the-bootstrap-token-0000000000")
      assert.strictEqual(wrong.status, 401)
      assert.strictEqual(wrong.body.error.message, "invalid agent token")
      assert.notInclude(JSON.stringify(wrong.body), "not-the-bootstrap-token")

      // Another agent's credential does not work for a different id.
      const credential = readFileSync(S.agentEnv(cluster, cp.wsUrl, "agent-good").AGENT_CREDENTIAL_FILE!, "utf8").trim()
      const borrowed = yield* connect(connectUrl(cp), { token: credential })
      yield* borrowed.send("hello", {
        agent_id: "agent-thief" as AgentId,
        platform: "kubernetes",
        region: "x",
        version: "0.1.0",
        protocol_versions: ["v1"],
        capacity: { cpu: "1", memory: "1Gi", max_sessions: 1 },
        sessions: []
      })
      const error = yield* borrowed.next("error")
      assert.strictEqual(error.payload.code, "Unauthorized")
      assert.include(error.payload.message, "agent-thief")
      assert.strictEqual((yield* borrowed.closed()).code, CloseCode.forbidden)
      assert.strictEqual((yield* cp.admin.get("/agents/agent-thief")).status, 404)

      // Users: no token, a token signed with another secret, an expired token.
      for (
        const token of [
          undefined,
          S.signJwt({ sub: "mallory", role: "admin" }, { secret: "some-other-secret-some-other-secret" }),
          S.signJwt({ sub: "alice", role: "user" }, { ttlSec: -120 })
        ]
      ) {
        const r = yield* S.request(cp.url, "GET", "/api/v1/sessions", token === undefined ? {} : { token })
        assert.strictEqual(r.status, 401, r.text)
        assert.strictEqual(r.body.error.code, "unauthorized")
        assert.isString(r.body.error.message)
      }
      const listed = yield* cp.admin.get("/agents")
      assert.deepInclude(listed.body.agents.map((a: any) => [a.id, a.status]), ["agent-good", "online"])
    }), 60_000)

  it.effect("a second process with the same agent id and credential cannot displace a healthy agent; it takes over soon once the first is gone", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      // Both processes share the credential file; MAX_RECONNECT_DELAY is long so a wait for it would show.
      const env = S.agentEnv(cluster, cp.wsUrl, "agent-twin", { MAX_RECONNECT_DELAY: "10m", RECONNECT_DELAY: "300ms" })
      const old = yield* S.startApprovedAgent(cp, env)
      const alice = S.api(cp.url, S.userToken("tina"))
      const before = cp.events().length

      const newer = yield* S.startAgent(env)
      // Several heartbeats later the old socket still holds; the newcomer was refused (4007) and keeps retrying.
      const beat0 = (yield* S.agentView(cp, "agent-twin")).last_heartbeat as string
      const beat1 = (yield* S.waitForAgent(cp, "agent-twin", "heartbeating", (a) => a.last_heartbeat > beat0)).last_heartbeat as string
      yield* S.waitForAgent(cp, "agent-twin", "heartbeating again", (a) => a.last_heartbeat > beat1)
      assert.isTrue(yield* old.connection.isConnected)
      assert.isFalse(yield* newer.connection.isConnected)
      const meanwhile = cp.events().slice(before)
      assert.deepStrictEqual(meanwhile.filter((e) => e._tag === "Connected" || e._tag === "Disconnected" || (e._tag === "StatusChanged" && e.status === "offline")), [])
      // Commands go over the healthy socket.
      const created = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201, created.text)
      yield* S.waitForSession(alice, created.body.id, ["running"])

      // The first agent goes away: the second is connected within seconds, not after MAX_RECONNECT_DELAY.
      yield* old.stop
      yield* S.waitFor("the second process to take over", newer.connection.isConnected, { timeout: 10_000 })
      yield* S.waitForOnline(cp, "agent-twin")
    }), 60_000)

  it.effect("bad frames from an agent get an error naming the problem; the link, its commands and other agents carry on", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.SharedControlPlane
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-real"))
      const alice = S.api(cp.url, S.userToken("bea"))
      const session = yield* alice.post("/sessions", { template: "demo", region: "test-1" })
      yield* S.waitForSession(alice, session.body.id, ["running"])

      // A hand-driven agent enrols like a real one.
      const url = connectUrl(cp)
      const enrolling = yield* connectAndHello(url, S.BOOTSTRAP_TOKEN, "agent-raw", { region: "raw-1" })
      assert.strictEqual(enrolling.welcome.enrollment, "pending")
      yield* cp.admin.post("/agents/agent-raw/approve")
      const token = (yield* enrolling.agent.next("credential")).payload.token
      assert.strictEqual((yield* enrolling.agent.closed()).code, CloseCode.credentialIssued)
      const { agent: raw, welcome } = yield* connectAndHello(url, token, "agent-raw", { region: "raw-1" })
      assert.strictEqual(welcome.enrollment, "approved")

      const bad: ReadonlyArray<readonly [string, string | Uint8Array, string]> = [
        ["not JSON", "{ this is not json", "MalformedJson"],
        ["unknown type", JSON.stringify({ type: "teleport", id: "m-1", ts: new Date().toISOString(), payload: {} }), "UnknownType"],
        ["bad payload", JSON.stringify({ type: "heartbeat", id: "m-2", ts: new Date().toISOString(), payload: { status: "online", active_sessions: -1 } }), "InvalidPayload"],
        ["a second hello", JSON.stringify({ type: "hello", id: "m-3", ts: new Date().toISOString(), payload: enrollingHello() }), "UnexpectedType"],
        ["a truncated binary header", new Uint8Array([1, 0]), "TruncatedBinary"],
        ["an unknown binary kind", new Uint8Array([9, 0, 0, 0, 1, 7]), "UnknownBinaryKind"],
        ["no envelope", JSON.stringify({ hello: "there" }), "InvalidEnvelope"]
      ]
      for (const [what, frame, code] of bad) {
        yield* raw.sendRaw(frame)
        const error = yield* raw.next("error")
        assert.strictEqual(error.payload.code, code, `${what}: ${error.payload.message}`)
        assert.isAbove(error.payload.message.length, 5, what)
      }
      // Frames with a readable id are answered with a reference to it.
      // A data frame for a tunnel nobody opened is dropped quietly (no error storm), and the link stays up.
      yield* raw.sendRaw(encodeData(4242 as never, new Uint8Array([1, 2, 3])))
      assert.isFalse(raw.isClosed())

      // The link still works both ways: a heartbeat is taken, a command is delivered and its outcome recorded.
      yield* raw.send("heartbeat", heartbeatPayload({ active_sessions: 3 }))
      yield* S.waitForAgent(cp, "agent-raw", "counting 3 sessions", (a) => a.active_sessions === 3)
      const record = yield* cp.dispatcher.dispatch("agent-raw" as AgentId, { action: "list_sessions", args: {} })
      const command = yield* commandById(raw, record.id)
      assert.strictEqual(command.payload.command_id, record.id)
      yield* raw.send("command_ack", { command_id: record.id })
      yield* raw.send("command_completed", { command_id: record.id, result: { action: "list_sessions", sessions: [] } })
      const outcome = yield* cp.dispatcher.await(record.id)
      assert.strictEqual(outcome._tag, "Completed")

      // A frame over the limit closes with 1009.
      yield* raw.sendRaw("x".repeat(MAX_FRAME_BYTES + 1))
      assert.strictEqual((yield* raw.closed()).code, CloseCode.tooBig)

      // The real agent was never disturbed: its session is running and deletes cleanly.
      assert.strictEqual((yield* S.agentView(cp, "agent-real")).status, "online")
      assert.strictEqual((yield* alice.get(`/sessions/${session.body.id}`)).body.state, "running")
      yield* alice.del(`/sessions/${session.body.id as SessionId}`)
      yield* S.waitForSession(alice, session.body.id, ["terminated"])
    }), 60_000)

  it.effect("a command sent but never acknowledged goes out again, same id, when the agent reconnects; a late duplicate outcome changes nothing", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const url = connectUrl(cp)
      const enrolling = yield* connectAndHello(url, S.BOOTSTRAP_TOKEN, "agent-flaky", { region: "flaky-1" })
      yield* cp.admin.post("/agents/agent-flaky/approve")
      const token = (yield* enrolling.agent.next("credential")).payload.token
      yield* enrolling.agent.closed()

      const first = yield* connectAndHello(url, token, "agent-flaky", { region: "flaky-1" })
      const record = yield* cp.dispatcher.dispatch("agent-flaky" as AgentId, { action: "list_sessions", args: {} })
      assert.strictEqual(record.state, "sent")
      const sent = yield* commandById(first.agent, record.id)
      assert.strictEqual(sent.payload.command_id, record.id)
      // The link dies before the agent acknowledges.
      yield* first.agent.close()
      yield* S.waitForAgent(cp, "agent-flaky", "offline", (a) => !a.connected)
      assert.strictEqual((yield* cp.dispatcher.get(record.id)).state, "sent")

      const second = yield* connectAndHello(url, token, "agent-flaky", { region: "flaky-1" })
      const again = yield* commandById(second.agent, record.id)
      assert.strictEqual(again.payload.command_id, record.id, "the same command, so the agent can dedupe it")
      assert.deepStrictEqual(again.payload, sent.payload)
      yield* second.agent.send("command_ack", { command_id: record.id })
      yield* second.agent.send("command_completed", { command_id: record.id, result: { action: "list_sessions", sessions: [] } })
      const outcome = yield* cp.dispatcher.await(record.id)
      assert.strictEqual(outcome._tag, "Completed")
      const done = yield* cp.admin.get(`/commands/${record.id}`)
      assert.strictEqual(done.body.state, "completed")
      for (const at of ["sent_at", "acked_at", "completed_at"]) assert.isString(done.body[at], at)

      // A duplicate (or contradicting) outcome after the fact is ignored: the first outcome stands.
      yield* second.agent.send("command_failed", {
        command_id: record.id,
        action: "list_sessions",
        error: { code: "internal", message: "late and wrong", retryable: false }
      })
      yield* second.agent.send("heartbeat", heartbeatPayload({ active_sessions: 1 }))
      yield* S.waitForAgent(cp, "agent-flaky", "processing frames after the duplicate", (a) => a.active_sessions === 1)
      const still = yield* cp.admin.get(`/commands/${record.id}`)
      assert.strictEqual(still.body.state, "completed")
      assert.isNull(still.body.error)
      // Not redelivered on the next reconnect either.
      yield* second.agent.close()
      const third = yield* connectAndHello(url, token, "agent-flaky", { region: "flaky-1" })
      yield* third.agent.send("heartbeat", heartbeatPayload({ active_sessions: 2 }))
      yield* S.waitForAgent(cp, "agent-flaky", "connected again", (a) => a.connected && a.active_sessions === 2)
      // (It gets the commands every connect brings, list_homes and set_warm_pools, but not this one.)
      assert.deepStrictEqual(third.agent.pending().filter((m) => m.type === "command" && m.payload.command_id === record.id), [])
    }), 60_000)
})

describe("agent link on a TestClock", () => {
  it.live("heartbeat deadline: missed heartbeats take the agent offline (TestClock), and it comes back when it reconnects", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const clock = yield* TestClock.make()
      yield* clock.setTime(Date.now())
      // The control plane runs on the TestClock; transport pings are out of the way so only heartbeats count.
      const cp = yield* S.startControlPlane({ ...S.SYSTEM_ENV, HEARTBEAT_INTERVAL: "30s", HEARTBEAT_MISSED_LIMIT: "3", PING_INTERVAL: "1h" }, { clock })
      // The agent heartbeats once per connection (right after the handshake) and then not for an hour.
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-quiet", { HEARTBEAT_INTERVAL: "1h" }))
      yield* S.waitForAgent(cp, "agent-quiet", "to have heartbeaten", (a) => a.last_heartbeat !== null)
      const before = cp.events().length

      yield* clock.adjust("89 seconds")
      const still = yield* S.agentView(cp, "agent-quiet")
      assert.strictEqual(still.status, "online", "2.97 intervals missed: not yet offline")
      assert.isTrue(still.connected)

      yield* clock.adjust("2 seconds")
      const events = yield* S.waitFor(
        "the agent to go offline",
        Effect.sync(() => {
          const es = cp.events().slice(before)
          return es.some((e) => e._tag === "StatusChanged" && e.status === "offline") ? es : undefined
        })
      )
      assert.isTrue(events.some((e) => e._tag === "Disconnected" && e.agentId === "agent-quiet"))
      // Its socket was closed, so the agent redials and is online again.
      yield* S.waitFor("a new connection", Effect.sync(() => cp.events().slice(before).some((e) => e._tag === "Connected")))
      yield* S.waitForOnline(cp, "agent-quiet")
    }), 60_000)

})

const enrollingHello = () => ({
  agent_id: "agent-raw" as AgentId,
  platform: "kubernetes" as const,
  region: "raw-1",
  version: "0.1.0",
  protocol_versions: ["v1"],
  capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 10 },
  sessions: []
})
