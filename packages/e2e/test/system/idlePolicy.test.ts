// The idle limit against real viewers: RFB clients through the control plane's VNC proxy, a real agent and
// kube-testserver port-forwarding to vnc-testserver. A viewer that only receives screen updates (and asks for
// them, sets its pixel format and encodings) is not activity; keys, pointer and clipboard from any viewer are,
// and the API says which viewer sent the last input. With no input the session is warned, then hibernated.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import * as S from "../support/stack.ts"

describe("idle policy with real viewers", () => {
  it.live("screen updates alone are not activity; input from any viewer is; then warning and hibernation", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-i"))
      const token = S.userToken("ann")
      const ann = S.api(cp.url, token)
      const t = yield* cp.admin.post("/templates", {
        name: "idle-desk",
        image: "streamspace/demo-desktop:latest",
        persistent_home: true,
        idle_timeout: "4s",
        warn_before: "2s"
      })
      assert.strictEqual(t.status, 201)
      assert.deepStrictEqual([t.body.idle_timeout, t.body.warn_before, t.body.idle_action, t.body.max_lifetime], ["4s", "2s", null, null])
      const created = (yield* ann.post("/sessions", { template: "idle-desk" })).body
      assert.deepStrictEqual(created.policy, { idle_timeout: "4s", max_lifetime: null, idle_action: "hibernate", warn_before: "2s" })
      yield* S.waitForSession(ann, created.id, ["running"])

      // Viewer A only watches: pixel format, encodings, update requests, and the updates that come back.
      const a = yield* S.openViewer(cp.wsUrl, created.id, token)
      a.client.setEncodings([0])
      let updates = 0
      const watching = yield* Effect.forkChild(Effect.promise(async () => {
        try {
          while (true) {
            await a.client.update(true)
            updates++
          }
        } catch {
          // the viewer is closed when the session hibernates
        }
      }))
      yield* S.waitFor("screen updates reach viewer A", Effect.sync(() => updates >= 2), { timeout: 10_000 })
      const quiet = (yield* ann.get(`/sessions/${created.id}`)).body
      assert.isNull(quiet.activity.last_input_at, "screen updates are not input")

      // Viewer B types, moves the pointer and pastes for longer than the idle limit: the session stays.
      const b = yield* S.openViewer(cp.wsUrl, created.id, token)
      const until = Date.now() + 6_000
      let n = 0
      while (Date.now() < until) {
        if (n % 3 === 0) b.client.key(0x61, true)
        else if (n % 3 === 1) b.client.pointer(5 + n, 5, 0)
        else b.client.cutText(`clip ${n}`)
        n++
        yield* Effect.sleep("400 millis")
      }
      const busy = (yield* ann.get(`/sessions/${created.id}`)).body
      assert.strictEqual(busy.state, "running")
      assert.match(busy.activity.last_input_by, /^ann \(viewer \d+\)$/)
      assert.isFalse(busy.expiry_warning)
      assert.isAbove(Date.parse(busy.expires_at), Date.now() + 2_000)
      // Viewer A's own input counts too, and the API names it (A connected first: the smaller number).
      a.client.pointer(1, 1, 1)
      const byA = yield* S.waitFor("viewer A's input recorded", Effect.map(ann.get(`/sessions/${created.id}`), (r) =>
        r.body.activity.last_input_by !== busy.activity.last_input_by ? r.body : undefined), { timeout: 5_000 })
      const num = (label: string) => Number(/viewer (\d+)/.exec(label)![1])
      assert.isBelow(num(byA.activity.last_input_by), num(busy.activity.last_input_by))
      const lastInput = Date.parse(byA.activity.last_input_at)

      // No more input, A keeps receiving updates: warned, then hibernated no earlier than the idle limit.
      const warned = yield* S.waitFor("the expiry warning", Effect.map(ann.get(`/sessions/${created.id}`), (r) => (r.body.expiry_warning ? r.body : undefined)), { timeout: 10_000 })
      assert.strictEqual(warned.expiry_reason, "idle_timeout")
      assert.strictEqual(warned.activity.next_action, "hibernate")
      const done = yield* S.waitForSession(ann, created.id, ["hibernating", "hibernated"], 15_000)
      assert.strictEqual(done.reason, "idle_timeout")
      assert.isAtLeast(Date.parse(done.updated_at) - lastInput, 4_000)
      yield* S.waitForSession(ann, created.id, ["hibernated"])
      yield* Fiber.join(watching)
    }), { timeout: 120_000 })
})
