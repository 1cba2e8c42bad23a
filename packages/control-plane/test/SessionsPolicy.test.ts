// The lifecycle policy on TestClock: idle and lifetime limits, the warning that must be visible for warn_before
// before any action, activity (viewer input, keep-alive) moving the idle deadline and clearing the warning, and
// the idle action (hibernate with a home, delete without). The control plane's agents are fakes that answer
// every command at once.
import { assert, describe, it } from "@effect/vitest"
import type { SessionId, SessionStatus, TemplateName, UserId } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import type { User } from "../src/Auth.ts"
import { ControlPlaneConfig, type ControlPlaneConfigShape } from "../src/ControlPlaneConfig.ts"
import { DEFAULT_SESSION_RULES, makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { templateRecord } from "../src/Store.ts"
import { fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const bob: User = { id: "bob" as UserId, role: "user", groups: [] }
const running = (id: SessionId): SessionStatus => ({ session_id: id, phase: "running", observed_at: new Date(0).toISOString() })

const templates = [
  templateRecord({ name: "desk" as TemplateName, displayName: "Desk", image: "i", vncPort: 5900, persistentHome: true, idleTimeout: "10m", warnBefore: "2m" }, new Date(0)),
  templateRecord({ name: "short" as TemplateName, displayName: "Short", image: "i", vncPort: 5900, idleTimeout: "1m" }, new Date(0)),
  templateRecord({ name: "job" as TemplateName, displayName: "Job", image: "i", vncPort: 5900, idleTimeout: "10m", maxLifetime: "30m", warnBefore: "1m" }, new Date(0)),
  templateRecord({ name: "plain" as TemplateName, displayName: "Plain", image: "i", vncPort: 5900 }, new Date(0))
]

const setup = (config?: Partial<ControlPlaneConfigShape>) =>
  Effect.gen(function*() {
    const hub = yield* makeFakeHub
    hub.addAgent("a")
    const dispatcher = yield* makeFakeDispatcher
    dispatcher.responder = (d) => {
      switch (d.request.action) {
        case "create_session":
        case "resume_session":
          return { result: { action: d.request.action, session: running(d.request.args.session_id) } }
        case "hibernate_session":
          return { result: { action: "hibernate_session", session_id: d.request.args.session_id } }
        case "delete_session":
          return { result: { action: "delete_session", session_id: d.request.args.session_id } }
        default:
          return undefined
      }
    }
    const repo = makeMemoryRepo(templates)
    const deps = Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher))
    const withConfig = config === undefined ? deps : Layer.merge(deps, Layer.succeed(ControlPlaneConfig, { ...DEFAULT_SESSION_RULES, ...config } as ControlPlaneConfigShape))
    const sessions = Context.get(yield* Layer.build(Sessions.layerMemory(repo).pipe(Layer.provide(withConfig))), Sessions)
    return { sessions, dispatcher, repo }
  })

type Env = Effect.Success<ReturnType<typeof setup>>

const minutes = (n: number) => TestClock.adjust(`${Math.round(n * 60_000)} millis`)
const view = (env: Env, id: string) => Effect.map(env.sessions.get(ann, id), (s) => ({ state: s.state, reason: s.reason, ...env.sessions.lifecycle(s) }))
/** Creates a session and lets the first policy pass see it running at t = 0. */
const start = (env: Env, template: string, user: User = ann) =>
  Effect.gen(function*() {
    const s = yield* env.sessions.create(user, { template: template as TemplateName })
    for (let i = 0; i < 20 && (yield* env.sessions.get(user, s.id)).state !== "running"; i++) yield* Effect.yieldNow
    assert.strictEqual((yield* env.sessions.get(user, s.id)).state, "running")
    yield* TestClock.adjust("1 second")
    return s
  })
const iso = (ms: number) => new Date(ms).toISOString()

describe("session lifecycle policy", () => {
  it.effect("idle: a warning warn_before ahead, input clears it and moves the deadline, then hibernate (home) at the deadline", () =>
    Effect.gen(function*() {
      const env = yield* setup()
      const s = yield* start(env, "desk")
      const since = 1000 // first seen running by the pass at t = 1 s
      let v = yield* view(env, s.id)
      assert.deepStrictEqual(v.policy, { idle_timeout: "10m", max_lifetime: null, idle_action: "hibernate", warn_before: "2m" })
      assert.deepStrictEqual([v.expires_at, v.expiry_reason, v.expiry_warning], [iso(since + 600_000), "idle_timeout", false])
      assert.strictEqual(v.activity.next_action, "hibernate")

      yield* minutes(7.9)
      assert.isFalse((yield* view(env, s.id)).expiry_warning)
      yield* minutes(0.2) // 8m1s: within warn_before of the deadline
      v = yield* view(env, s.id)
      assert.deepStrictEqual([v.expiry_warning, v.expires_at], [true, iso(since + 600_000)])

      // Input from a viewer at 9m: the warning goes at once, the deadline moves.
      yield* env.sessions.noteInput(s.id, "ann (viewer 1)")
      v = yield* view(env, s.id)
      assert.isFalse(v.expiry_warning)
      const inputAt = Date.parse(v.activity.last_input_at!)
      assert.strictEqual(v.activity.last_input_by, "ann (viewer 1)")
      assert.strictEqual(v.expires_at, iso(inputAt + 600_000))

      yield* minutes(9.9) // just before the new deadline: warned, not acted
      assert.deepStrictEqual([(yield* view(env, s.id)).state, (yield* view(env, s.id)).expiry_warning], ["running", true])
      assert.isFalse(env.dispatcher.commands.some((c) => c.request.action === "hibernate_session"))
      yield* minutes(0.2)
      v = yield* view(env, s.id)
      assert.deepStrictEqual([v.state, v.reason], ["hibernated", "idle_timeout"])
      assert.deepStrictEqual(env.dispatcher.commands.map((c) => c.request.action), ["create_session", "hibernate_session"])
      assert.deepStrictEqual([v.expires_at, v.expiry_warning], [null, false])
    }))

  it.effect("nothing happens without the warning visible for warn_before, even when the limit is shorter", () =>
    Effect.gen(function*() {
      // idle_timeout 1m, default warn_before 5m, no home: delete.
      const env = yield* setup()
      const s = yield* start(env, "short")
      let v = yield* view(env, s.id)
      assert.isTrue(v.expiry_warning, "warned from the first pass")
      assert.strictEqual(v.activity.next_action, "delete")
      const warnedAt = 1000
      assert.strictEqual(v.expires_at, iso(warnedAt + 300_000))
      yield* minutes(4.9)
      assert.strictEqual((yield* view(env, s.id)).state, "running")
      yield* minutes(0.2)
      v = yield* view(env, s.id)
      assert.deepStrictEqual([v.state, v.reason], ["terminated", "deleted"])
      assert.deepStrictEqual(env.repo.history.get(s.id)?.at(-2), ["running", "terminating"])
      assert.strictEqual(env.repo.sessions.get(s.id)?.state, "terminated")
    }))

  it.effect("keep-alive counts as activity but cannot pass max_lifetime; only a running session can be kept alive", () =>
    Effect.gen(function*() {
      const env = yield* setup()
      const s = yield* start(env, "job")
      for (let i = 0; i < 3; i++) {
        yield* minutes(9)
        const kept = yield* env.sessions.keepalive(ann, s.id)
        assert.strictEqual(kept.state, "running")
      }
      // 27m: idle would end at 37m, the lifetime ends at 30m from creation (t = 0).
      let v = yield* view(env, s.id)
      assert.deepStrictEqual([v.expires_at, v.expiry_reason, v.activity.next_action], [iso(1_800_000), "max_lifetime", "delete"])
      assert.strictEqual(v.activity.last_keepalive_by, "ann")
      yield* minutes(2.05) // 29m4s: warned
      assert.isTrue((yield* view(env, s.id)).expiry_warning)
      yield* env.sessions.keepalive(ann, s.id)
      assert.isTrue((yield* view(env, s.id)).expiry_warning, "a keep-alive does not move max_lifetime")
      yield* minutes(1)
      v = yield* view(env, s.id)
      assert.strictEqual(v.state, "terminated")
      const conflict = yield* Effect.flip(env.sessions.keepalive(ann, s.id))
      assert.strictEqual(conflict.reason, "Conflict")
      assert.include(conflict.message, "is terminated")
      // Someone else's session is not found.
      assert.strictEqual((yield* Effect.flip(env.sessions.keepalive(bob, s.id))).reason, "NotFound")
    }))

  it.effect("without limits nothing expires; control-plane defaults apply to templates that set none", () =>
    Effect.gen(function*() {
      const none = yield* setup()
      const s = yield* start(none, "plain")
      yield* minutes(600)
      const v = yield* view(none, s.id)
      assert.deepStrictEqual([v.state, v.expires_at, v.expiry_reason], ["running", null, null])

      const env = yield* setup({
        sessionIdleTimeout: Duration.minutes(20),
        sessionMaxLifetime: Duration.zero,
        sessionIdleAction: undefined,
        sessionWarnBefore: Duration.minutes(3)
      })
      const d = yield* start(env, "plain")
      assert.deepStrictEqual((yield* view(env, d.id)).policy, { idle_timeout: "20m", max_lifetime: null, idle_action: "delete", warn_before: "3m" })
      const own = yield* start(env, "desk")
      assert.deepStrictEqual((yield* view(env, own.id)).policy, { idle_timeout: "10m", max_lifetime: null, idle_action: "hibernate", warn_before: "2m" })
    }))
})
