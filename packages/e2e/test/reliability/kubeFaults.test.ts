// Kubernetes API faults from kube-testserver under the whole system: 500s, 429 with Retry-After, a slow API,
// dropped and expired watches, RBAC 403 and an unreachable API. What must hold: the agent retries within its
// bounds (a fault that outlasts them fails the command with a typed error and leaves no half-made object), its
// heartbeat turns the agent's status to warning/error on the control plane while the API misbehaves (and
// placement, which takes only online agents, avoids it), and everything returns to online and working when the API recovers.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"

const AGENT = "agent-kube"
const PODS = `/api/v1/namespaces/${S.NAMESPACE}/pods`

const setup = Effect.gen(function*() {
  const cluster = yield* S.makeCluster()
  // One user makes many sessions here, faster than the default per-user rate; the faults are under test.
  const cp = yield* S.startControlPlane({ MAX_SESSIONS_PER_USER: "0", SESSION_CREATES_PER_MINUTE: "0" })
  yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, AGENT))
  yield* S.approveAgent(cp, AGENT)
  const alice = S.api(cp.url, S.userToken("alice"))
  // placement takes only online agents: right after a fault the agent may still report warning for a moment
  const create = S.waitFor(
    "the agent to take a session",
    Effect.map(alice.post("/sessions", { template: "demo" }), (r) => {
      if (r.status === 503 && /status is (warning|error)/.test(r.body.error.message)) return undefined
      assert.strictEqual(r.status, 201, r.text)
      return r.body.id as string
    }),
    { timeout: 15_000 }
  )
  const status = (...want: Array<string>) =>
    S.waitFor(`agent status ${want.join("|")}`, Effect.map(S.agentView(cp, AGENT), (a) => want.includes(a?.status) ? a : undefined), { timeout: 15_000 })
  return { cluster, cp, alice, create, status }
})

describe("Kubernetes API faults", () => {
  it.live("500s and a 429 with Retry-After are retried; a slow API is waited for; the status shows warning, then online", () =>
    Effect.gen(function*() {
      const s = yield* setup
      s.cluster.kube.addFault({ method: "POST", path: PODS, status: 500, times: 2 })
      const a = yield* s.create
      yield* S.waitForSession(s.alice, a, ["running"])
      const warning = yield* s.status("warning")
      assert.match(warning.status, /warning/)

      s.cluster.kube.addFault({ method: "POST", path: PODS, status: 429, retryAfterSeconds: 1, times: 1 })
      const started = Date.now()
      const b = yield* s.create
      yield* S.waitForSession(s.alice, b, ["running"])
      assert.isAtLeast(Date.now() - started, 900, "Retry-After was honoured")

      const removeSlow = s.cluster.kube.addFault({ path: PODS, watch: false, latencyMs: 700 })
      const c = yield* s.create
      yield* S.waitForSession(s.alice, c, ["running"], 20_000)
      removeSlow()
      yield* s.status("online")
      assert.strictEqual(S.sessionPods(s.cluster).length, 3, "one pod per session, no duplicate from a retry")
    }), 90_000)

  it.live("a fault that outlasts the retries fails the command with a typed error and leaves nothing half-made", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const remove = s.cluster.kube.addFault({ method: "POST", path: PODS, status: 503 })
      const a = yield* s.create
      const failed = yield* S.waitForSession(s.alice, a, ["failed"], 20_000)
      yield* s.status("warning", "error")
      assert.isString(failed.reason)
      assert.isString(failed.message)
      const command = yield* s.cp.admin.get(`/commands/${failed.create_command_id}`)
      assert.strictEqual(command.body.state, "failed")
      assert.isString(command.body.error.code)
      remove()
      assert.deepStrictEqual(S.sessionPods(s.cluster), [])
      const services = s.cluster.kube.list("services", S.NAMESPACE).filter((o: any) => JSON.stringify(o.metadata?.labels ?? {}).includes(a))
      assert.deepStrictEqual(services.map((o: any) => o.metadata.name), [], "the session's Service was rolled back")
      yield* s.status("online")
      const b = yield* s.create
      yield* S.waitForSession(s.alice, b, ["running"])
    }), 90_000)

  it.live("dropped and expired watches: a pod deleted meanwhile is still noticed and the session record follows", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const a = yield* s.create
      const b = yield* s.create
      yield* S.waitForSession(s.alice, a, ["running"])
      yield* S.waitForSession(s.alice, b, ["running"])
      s.cluster.kube.dropWatches()
      const podOf = (id: string): any => S.sessionPods(s.cluster).find((p: any) => JSON.stringify(p.metadata.labels).includes(id))
      s.cluster.kube.delete("pods", S.NAMESPACE, podOf(a).metadata.name)
      yield* S.waitForSession(s.alice, a, ["terminated", "failed"])
      // expired resourceVersion: the history is forgotten while the watch is down, so the agent must relist
      const remove = s.cluster.kube.addFault({ path: PODS, watch: true, reset: true })
      s.cluster.kube.dropWatches()
      s.cluster.kube.compact()
      s.cluster.kube.delete("pods", S.NAMESPACE, podOf(b).metadata.name)
      remove()
      yield* S.waitForSession(s.alice, b, ["terminated", "failed"], 20_000)
      const c = yield* s.create
      yield* S.waitForSession(s.alice, c, ["running"])
    }), 90_000)

  it.live("RBAC 403 on the watch degrades the agent to warning; an unreachable API makes it error and placement avoids it; both recover", () =>
    Effect.gen(function*() {
      const s = yield* setup
      const forbid = s.cluster.kube.addFault({ path: PODS, watch: true, status: 403, message: "pods is forbidden: User \"system:serviceaccount:streamspace:streamspace-agent\" cannot watch resource \"pods\"" })
      s.cluster.kube.dropWatches()
      yield* s.status("warning")
      forbid()
      yield* s.status("online")

      yield* Effect.promise(() => s.cluster.kube.refuseConnections(true))
      const error = yield* s.status("error")
      assert.strictEqual(error.connected, true, "the link to the control plane stays up")
      const refused = yield* s.alice.post("/sessions", { template: "demo" })
      assert.strictEqual(refused.status, 503, refused.text)
      yield* Effect.promise(() => s.cluster.kube.refuseConnections(false))
      yield* s.status("online")
      const a = yield* s.create
      yield* S.waitForSession(s.alice, a, ["running"])
    }), 90_000)
})
