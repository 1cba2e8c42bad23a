// AgentHub enrolment and agent auth over real WebSockets: bootstrap -> pending -> approve -> credential ->
// reconnect with it; refusals before the upgrade (401) and after hello (4003); reject, rotate with grace, revoke.
import { assert, layer } from "@effect/vitest"
import type { AgentId } from "@streamspace/protocol"
import { Duration, Effect, Exit, Option, Scope } from "effect"
import { TestClock } from "effect/testing"
import { DEFAULT_LINK_WINDOW_BYTES } from "@streamspace/protocol"
import { waitFor } from "@streamspace/testbed"
import { Store } from "../src/Store.ts"
import { agentRow, BOOTSTRAP, captureLogs, connect, connectAndHello, enrol, helloPayload, type Refused, startHub, withTestClock } from "./support/fakeAgent.ts"

const id = (s: string) => s as AgentId

const refused = <A, R>(effect: Effect.Effect<A, Refused, R>) =>
  effect.pipe(
    Effect.flip,
    Effect.map((e) => ({ status: e.status, body: JSON.parse(e.body) as { error: { code: string; message: string } } }))
  )

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("AgentHub enrolment and auth", (it) => {
  it.effect("bootstrap -> pending -> approve -> credential -> reconnect with the credential", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent, welcome } = yield* connectAndHello(cp.url, BOOTSTRAP, "edge-1")
      assert.deepStrictEqual(welcome, { protocol_version: "v1", enrollment: "pending", draining: false, heartbeat_interval_ms: 30_000, link_window: DEFAULT_LINK_WINDOW_BYTES })
      const pending = Option.getOrThrow(yield* cp.hub.get(id("edge-1")))
      assert.strictEqual(pending.enrollment, "pending")
      assert.isTrue(pending.connected)
      // Pending agents get no commands.
      const err = yield* Effect.flip(cp.hub.send(id("edge-1"), "drain", { draining: true }))
      assert.strictEqual(err.reason, "NotApproved")

      const approved = yield* cp.hub.approve(id("edge-1"))
      assert.strictEqual(approved.enrollment, "approved")
      const credential = yield* agent.next("credential")
      assert.isAtLeast(credential.payload.token.length, 40)
      assert.strictEqual((yield* agent.closed()).code, 4000)
      // Only the hash is stored.
      const row = yield* agentRow("edge-1")
      assert.strictEqual(row.enrollment, "approved")
      assert.notInclude(JSON.stringify(row), credential.payload.token)
      assert.match(row.credentialHash!, /^[0-9a-f]{64}$/)

      const again = yield* connectAndHello(cp.url, credential.payload.token, "edge-1")
      assert.deepStrictEqual(again.welcome, { protocol_version: "v1", enrollment: "approved", draining: false, heartbeat_interval_ms: 30_000, link_window: DEFAULT_LINK_WINDOW_BYTES })
      yield* cp.hub.send(id("edge-1"), "drain", { draining: false })
      assert.deepStrictEqual((yield* again.agent.next("drain")).payload, { draining: false })
    }).pipe(withTestClock))

  it.effect("missing, malformed and wrong tokens get 401 JSON before the upgrade", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const none = yield* refused(connect(cp.url, {}))
      assert.strictEqual(none.status, 401)
      assert.strictEqual(none.body.error.code, "unauthorized")
      const wrong = yield* refused(connect(cp.url, { token: "not-the-bootstrap-token" }))
      assert.strictEqual(wrong.status, 401)
      assert.deepStrictEqual(Object.keys(wrong.body.error).sort(), ["code", "message"])
      const malformed = yield* refused(connect(cp.url, { headers: { authorization: "Basic abc" } }))
      assert.strictEqual(malformed.status, 401)
      // The right token but not the agent subprotocol.
      const proto = yield* refused(connect(cp.url, { token: BOOTSTRAP, protocol: "binary" }))
      assert.strictEqual(proto.status, 400)
      assert.strictEqual(proto.body.error.code, "unsupported_subprotocol")
      // Not an upgrade at all.
      const plain = yield* Effect.promise(() => fetch(cp.url.replace("ws:", "http:")))
      assert.strictEqual(plain.status, 426)
    }).pipe(withTestClock))

  it.effect("without AGENT_BOOTSTRAP_TOKEN nobody enrols", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ AGENT_BOOTSTRAP_TOKEN: "" })
      assert.strictEqual((yield* refused(connect(cp.url, { token: BOOTSTRAP }))).status, 401)
    }).pipe(withTestClock))

  it.effect("the bootstrap token is refused for an agent id that is already approved", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const credential = yield* enrol(cp, "edge-2")
      const impostor = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* impostor.send("hello", helloPayload("edge-2"))
      const error = yield* impostor.next("error")
      assert.strictEqual(error.payload.code, "Unauthorized")
      assert.strictEqual((yield* impostor.closed()).code, 4003)
      // A credential only works for its own agent id.
      const other = yield* connect(cp.url, { token: credential })
      yield* other.send("hello", helloPayload("edge-3"))
      assert.strictEqual((yield* other.next("error")).payload.code, "Unauthorized")
      assert.strictEqual((yield* other.closed()).code, 4003)
      // The real agent still gets in.
      const real = yield* connectAndHello(cp.url, credential, "edge-2")
      assert.strictEqual(real.welcome.enrollment, "approved")
    }).pipe(withTestClock))

  it.effect("a second bootstrap socket for a pending id is refused while the first answers pings; approval goes to the first", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, "edge-p")
      const attacker = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* attacker.send("hello", helloPayload("edge-p"))
      const error = yield* attacker.next("error")
      assert.strictEqual(error.payload.code, "AlreadyConnected")
      assert.include(error.payload.message, "pending approval")
      assert.strictEqual((yield* attacker.closed()).code, 4007)
      assert.isTrue(Option.getOrThrow(yield* cp.hub.get(id("edge-p"))).connected)
      yield* cp.hub.approve(id("edge-p"))
      // The credential reaches the socket that came first, never the attacker's.
      assert.isAtLeast((yield* agent.next("credential")).payload.token.length, 40)
      assert.isFalse(attacker.pending().some((m) => m.type === "credential"))
    }).pipe(withTestClock))

  it.effect("the admin sees a pending agent's remote address and the fingerprint of its hello", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const agent = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* agent.send("hello", helloPayload("edge-f"), "3f2a9c1e-77b0-4d2e-9a51-0c6e2b8d4f10")
      yield* agent.next("welcome")
      const view = Option.getOrThrow(yield* cp.hub.get(id("edge-f")))
      assert.strictEqual(view.fingerprint, "3f2a-9c1e-77b0")
      assert.strictEqual(view.remoteAddress, "127.0.0.1")
      yield* agent.close()
      yield* waitFor("disconnected", Effect.map(cp.hub.get(id("edge-f")), (v) => !Option.getOrThrow(v).connected))
      assert.isUndefined(Option.getOrThrow(yield* cp.hub.get(id("edge-f"))).fingerprint)
    }).pipe(withTestClock))

  it.effect("one-time enrolment tokens: bound to one agent id, approved at once, used once, expire; no bootstrap token needed", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ AGENT_BOOTSTRAP_TOKEN: "" })
      const issued = yield* cp.hub.issueEnrollmentToken(id("edge-t"), Duration.hours(1))
      assert.isAtLeast(issued.token.length, 40)
      // Only the hash is stored.
      const rows = yield* Effect.flatMap(Store.use(Effect.succeed), (store) => store.agents.listEnrollmentTokens())
      assert.deepStrictEqual(rows.map((r) => r.agentId), ["edge-t"])
      assert.notInclude(JSON.stringify(rows), issued.token)
      // For another agent id: refused.
      const wrongId = yield* connect(cp.url, { token: issued.token })
      yield* wrongId.send("hello", helloPayload("edge-other"))
      assert.strictEqual((yield* wrongId.next("error")).payload.code, "Unauthorized")
      assert.strictEqual((yield* wrongId.closed()).code, 4003)
      // For its id: welcomed, then the credential at once (the token was the approval).
      const { agent, welcome } = yield* connectAndHello(cp.url, issued.token, "edge-t")
      assert.strictEqual(welcome.enrollment, "pending")
      const credential = (yield* agent.next("credential")).payload.token
      assert.strictEqual((yield* agent.closed()).code, 4000)
      assert.strictEqual(Option.getOrThrow(yield* cp.hub.get(id("edge-t"))).enrollment, "approved")
      const again = yield* connectAndHello(cp.url, credential, "edge-t")
      assert.strictEqual(again.welcome.enrollment, "approved")
      // Used once: the same token is refused now, and gone from the store.
      assert.strictEqual((yield* refused(connect(cp.url, { token: issued.token }))).status, 401)
      assert.deepStrictEqual(yield* Effect.flatMap(Store.use(Effect.succeed), (store) => store.agents.listEnrollmentTokens()), [])
      // Expired: refused.
      const late = yield* cp.hub.issueEnrollmentToken(id("edge-late"), Duration.minutes(5))
      yield* TestClock.adjust("5 minutes")
      assert.strictEqual((yield* refused(connect(cp.url, { token: late.token }))).status, 401)
      // Not for an approved agent.
      assert.strictEqual((yield* Effect.flip(cp.hub.issueEnrollmentToken(id("edge-t"), Duration.hours(1)))).reason, "InvalidTransition")
    }).pipe(withTestClock))

  it.effect("an admin deletes a rejected agent record; only rejected ones; the id may enrol afresh", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, "edge-d")
      assert.strictEqual((yield* Effect.flip(cp.hub.remove(id("edge-d")))).reason, "InvalidTransition")
      yield* cp.hub.reject(id("edge-d"))
      yield* agent.closed()
      yield* cp.hub.remove(id("edge-d"))
      assert.isTrue(Option.isNone(yield* cp.hub.get(id("edge-d"))))
      assert.strictEqual((yield* Effect.flip(agentRow("edge-d"))).reason._tag, "NotFound")
      assert.strictEqual((yield* Effect.flip(cp.hub.remove(id("edge-d")))).reason, "NotFound")
      const fresh = yield* connectAndHello(cp.url, BOOTSTRAP, "edge-d")
      assert.strictEqual(fresh.welcome.enrollment, "pending")
    }).pipe(withTestClock))

  it.effect("reject closes the pending socket and keeps the id out", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, "edge-4")
      const view = yield* cp.hub.reject(id("edge-4"))
      assert.strictEqual(view.enrollment, "rejected")
      assert.strictEqual(view.status, "offline")
      assert.strictEqual((yield* agent.next("error")).payload.code, "Unauthorized")
      assert.strictEqual((yield* agent.closed()).code, 4003)
      const retry = yield* connect(cp.url, { token: BOOTSTRAP })
      yield* retry.send("hello", helloPayload("edge-4"))
      assert.strictEqual((yield* retry.closed()).code, 4003)
      assert.strictEqual((yield* Effect.flip(cp.hub.approve(id("edge-4")))).reason, "InvalidTransition")
    }).pipe(withTestClock))

  it.effect("rotate: the new credential arrives on the socket; the old one works only within the grace period", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({ CREDENTIAL_ROTATION_GRACE: "10m" })
      const old = yield* enrol(cp, "edge-5")
      const { agent } = yield* connectAndHello(cp.url, old, "edge-5")
      yield* cp.hub.rotate(id("edge-5"))
      const fresh = (yield* agent.next("credential")).payload.token
      assert.notStrictEqual(fresh, old)
      assert.isFalse(agent.isClosed())

      yield* TestClock.adjust("9 minutes")
      const inGrace = yield* connectAndHello(cp.url, old, "edge-5")
      assert.strictEqual(inGrace.welcome.enrollment, "approved")
      yield* TestClock.adjust("2 minutes")
      assert.strictEqual((yield* refused(connect(cp.url, { token: old }))).status, 401)
      const withFresh = yield* connectAndHello(cp.url, fresh, "edge-5")
      assert.strictEqual(withFresh.welcome.enrollment, "approved")
    }).pipe(withTestClock))

  it.effect("revoke closes the socket at once and the credential stops working", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const credential = yield* enrol(cp, "edge-6")
      const { agent } = yield* connectAndHello(cp.url, credential, "edge-6")
      const view = yield* cp.hub.revoke(id("edge-6"))
      assert.strictEqual(view.enrollment, "revoked")
      assert.isFalse(view.connected)
      assert.strictEqual((yield* agent.closed()).code, 4003)
      assert.strictEqual((yield* refused(connect(cp.url, { token: credential }))).status, 401)
      assert.strictEqual((yield* Effect.flip(cp.hub.send(id("edge-6"), "drain", { draining: true }))).reason, "NotConnected")
    }).pipe(withTestClock))

  it.effect("no token, credential or hash appears in the logs", () => {
    const logs: Array<string> = []
    return Effect.gen(function*() {
      const cp = yield* startHub({ CREDENTIAL_ROTATION_GRACE: "1m" }, logs)
      const credential = yield* enrol(cp, "log-1")
      const hash = (yield* agentRow("log-1")).credentialHash!
      const { agent } = yield* connectAndHello(cp.url, credential, "log-1")
      yield* cp.hub.rotate(id("log-1"))
      const rotated = (yield* agent.next("credential")).payload.token
      yield* refused(connect(cp.url, { token: "wrong-token-xyz" }))
      yield* cp.hub.revoke(id("log-1"))
      yield* agent.closed()
      // connected (pending), approved, connected (approved), rotated, revoked
      assert.isAtLeast(logs.length, 5)
      const text = logs.join("\n")
      const connected = logs.filter((l) => l.includes("agent connected"))
      assert.isAtLeast(connected.length, 2)
      for (const line of connected) assert.include(line, `"agent_id":"log-1"`)
      assert.isTrue(logs.some((l) => l.includes("invalid agent token")))
      for (const secret of [BOOTSTRAP, credential, rotated, "wrong-token-xyz", hash]) {
        assert.notInclude(text, secret)
      }
    }).pipe(Effect.provide(captureLogs(logs)), withTestClock)
  })

  it.effect("a restarted hub on the same store keeps enrolment, credentials and the drain flag; agents start offline", () =>
    Effect.gen(function*() {
      const first = yield* Scope.make()
      const cp1 = yield* startHub({}).pipe(Scope.provide(first))
      const credential = yield* enrol(cp1, "rs-1")
      const { agent } = yield* connectAndHello(cp1.url, credential, "rs-1")
      yield* cp1.hub.setDraining(id("rs-1"), true)
      const pending = yield* connectAndHello(cp1.url, BOOTSTRAP, "rs-2")
      assert.strictEqual(pending.welcome.enrollment, "pending")
      yield* Scope.close(first, Exit.void)
      // Shutdown closes every agent socket with 1001 (going away): they reconnect to the next instance.
      assert.strictEqual((yield* agent.closed()).code, 1001)
      assert.strictEqual((yield* pending.agent.closed()).code, 1001)

      const cp2 = yield* startHub({})
      const before = Option.getOrThrow(yield* cp2.hub.get(id("rs-1")))
      assert.deepInclude(before, { status: "offline", connected: false, enrollment: "approved", draining: true })
      assert.strictEqual((yield* agentRow("rs-1")).status, "offline")
      const back = yield* connectAndHello(cp2.url, credential, "rs-1")
      assert.deepStrictEqual(back.welcome, { protocol_version: "v1", enrollment: "approved", draining: true, heartbeat_interval_ms: 30_000, link_window: DEFAULT_LINK_WINDOW_BYTES })
      assert.strictEqual(Option.getOrThrow(yield* cp2.hub.get(id("rs-1"))).status, "draining")
      // The pending agent is still pending: it may reconnect with the bootstrap token and wait.
      const again = yield* connectAndHello(cp2.url, BOOTSTRAP, "rs-2")
      assert.strictEqual(again.welcome.enrollment, "pending")
    }).pipe(withTestClock))

  it.effect("admin operations name what is wrong", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      assert.strictEqual((yield* Effect.flip(cp.hub.approve(id("nobody")))).reason, "NotFound")
      const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, "edge-7")
      assert.strictEqual((yield* Effect.flip(cp.hub.rotate(id("edge-7")))).reason, "NotApproved")
      yield* agent.close()
      yield* waitFor("the pending agent to be offline", Effect.map(cp.hub.get(id("edge-7")), (v) => Option.getOrThrow(v).status === "offline"))
      assert.strictEqual((yield* Effect.flip(cp.hub.approve(id("edge-7")))).reason, "NotConnected")
    }).pipe(withTestClock))
})
