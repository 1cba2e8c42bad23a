// Hibernate and resume in Sessions with fake agents: the state machine around the commands, the agent's reports
// during and after hibernation, and failures. (The capacity a hibernated session gives back: e2e system/hibernate.)
import { assert, describe, it } from "@effect/vitest"
import type { SessionId, SessionStatus, TemplateName, UserId } from "@streamspace/protocol"
import { Context, Effect, Layer } from "effect"
import type { User } from "../src/Auth.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { templateRecord } from "../src/Store.ts"
import { fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const at = (n: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, n)).toISOString()
const report = (id: string, phase: SessionStatus["phase"], n: number): SessionStatus => ({ session_id: id as SessionId, phase, observed_at: at(n) })

const setup = Effect.gen(function*() {
  const hub = yield* makeFakeHub
  hub.addAgent("a")
  const dispatcher = yield* makeFakeDispatcher
  const repo = makeMemoryRepo([
    templateRecord({ name: "desk" as TemplateName, displayName: "Desk", image: "i", vncPort: 5900, persistentHome: true }, new Date(0)),
    templateRecord({ name: "plain" as TemplateName, displayName: "Plain", image: "i", vncPort: 5900 }, new Date(0))
  ])
  const sessions = Context.get(yield* Layer.build(Sessions.layerMemory(repo).pipe(Layer.provide(Layer.merge(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher))))), Sessions)
  return { hub, dispatcher, repo, sessions }
})
type Env = Effect.Success<typeof setup>

const settle = Effect.gen(function*() {
  for (let i = 0; i < 30; i++) yield* Effect.yieldNow
})
const stateOf = (env: Env, id: string) => Effect.map(env.sessions.get(ann, id), (s) => s.state)
const running = (env: Env, template: string) =>
  Effect.gen(function*() {
    const s = yield* env.sessions.create(ann, { template: template as TemplateName })
    yield* env.hub.sessionStatus("a", report(s.id, "running", 1))
    yield* settle
    assert.strictEqual(yield* stateOf(env, s.id), "running")
    return s
  })
const last = (env: Env) => env.dispatcher.commands.at(-1)!

describe("Sessions hibernate and resume", () => {
  it.effect("the pod's deletion report while hibernating means hibernated; later reports are ignored; resume sends the spec", () =>
    Effect.gen(function*() {
      const env = yield* setup
      const s = yield* running(env, "desk")
      const h = yield* env.sessions.hibernate(ann, s.id)
      assert.deepStrictEqual([h.state, h.reason, h.hibernateCommandId], ["hibernating", "requested", last(env).record.id])
      assert.deepStrictEqual(last(env).request, { action: "hibernate_session", args: { session_id: s.id as SessionId } })
      // The watch reports the pod terminating, then deleted, before the command completes.
      yield* env.hub.sessionStatus("a", report(s.id, "terminating", 2))
      yield* settle
      assert.strictEqual(yield* stateOf(env, s.id), "hibernating")
      yield* env.hub.sessionStatus("a", report(s.id, "terminated", 3))
      yield* settle
      assert.strictEqual(yield* stateOf(env, s.id), "hibernated")
      yield* env.dispatcher.complete(last(env).record.id, { action: "hibernate_session", session_id: s.id as SessionId })
      yield* settle
      assert.strictEqual(yield* stateOf(env, s.id), "hibernated")
      // A stray report about the gone pod changes nothing.
      yield* env.hub.sessionStatus("a", report(s.id, "running", 4))
      yield* settle
      assert.strictEqual(yield* stateOf(env, s.id), "hibernated")

      const r = yield* env.sessions.resume(ann, s.id)
      assert.deepStrictEqual([r.state, r.reason], ["creating", "resuming"])
      assert.deepStrictEqual(last(env).request, { action: "resume_session", args: { session_id: s.id as SessionId, spec: s.spec } })
      assert.strictEqual(r.createCommandId, last(env).record.id)
      yield* env.dispatcher.complete(last(env).record.id, { action: "resume_session", session: report(s.id, "running", 5) })
      yield* settle
      assert.strictEqual(yield* stateOf(env, s.id), "running")
      assert.deepStrictEqual(env.repo.history.get(s.id), [
        ["pending", "creating"],
        ["creating", "running"],
        ["running", "hibernating"],
        ["hibernating", "hibernated"],
        ["hibernated", "creating"],
        ["creating", "running"]
      ])
    }))

  it.effect("a template's image bump reaches a resumed session's pod, and nothing else of its spec changes", () =>
    Effect.gen(function*() {
      const env = yield* setup
      const s = yield* running(env, "desk")
      yield* env.sessions.hibernate(ann, s.id)
      yield* env.hub.sessionStatus("a", report(s.id, "terminated", 2))
      yield* settle
      yield* env.sessions.updateTemplate("desk", { image: "i:2" })
      yield* env.sessions.resume(ann, s.id)
      assert.deepStrictEqual(last(env).request, { action: "resume_session", args: { session_id: s.id as SessionId, spec: { ...s.spec, image: "i:2" } } })
      // The record keeps what the session was created with; who resumed it is in its history.
      assert.strictEqual((yield* env.sessions.get(ann, s.id)).spec.image, "i")
      const history = yield* env.sessions.history(ann, s.id)
      assert.deepStrictEqual(history.slice(-1).map((e) => [e.state, e.actor]), [["creating", "user:ann"]])
    }))

  it.effect("a failed hibernate leaves the session running with the reason; a failed resume fails the session", () =>
    Effect.gen(function*() {
      const env = yield* setup
      const s = yield* running(env, "desk")
      yield* env.sessions.hibernate(ann, s.id)
      yield* env.dispatcher.fail(last(env).record.id, { code: "kubernetes_unavailable", message: "API down", retryable: true })
      yield* settle
      const after = yield* env.sessions.get(ann, s.id)
      assert.deepStrictEqual([after.state, after.reason], ["running", "hibernate_failed"])
      assert.include(after.message, "API down")

      yield* env.sessions.hibernate(ann, s.id)
      yield* env.dispatcher.complete(last(env).record.id, { action: "hibernate_session", session_id: s.id as SessionId })
      yield* settle
      yield* env.sessions.resume(ann, s.id)
      yield* env.dispatcher.fail(last(env).record.id, { code: "session_not_found", message: "the home volume home-ann no longer exists", retryable: false })
      yield* settle
      const failed = yield* env.sessions.get(ann, s.id)
      assert.deepStrictEqual([failed.state, failed.reason], ["failed", "session_not_found"])
    }))

  it.effect("bad transitions are conflicts naming the state; no home, no hibernation", () =>
    Effect.gen(function*() {
      const env = yield* setup
      const plain = yield* running(env, "plain")
      const noHome = yield* Effect.flip(env.sessions.hibernate(ann, plain.id))
      assert.strictEqual(noHome.reason, "Conflict")
      assert.include(noHome.message, "no persistent home")
      const notHibernated = yield* Effect.flip(env.sessions.resume(ann, plain.id))
      assert.strictEqual(notHibernated.reason, "Conflict")
      assert.include(notHibernated.message, "is running")
      const creating = yield* env.sessions.create(ann, { template: "desk" as TemplateName })
      const early = yield* Effect.flip(env.sessions.hibernate(ann, creating.id))
      assert.include(early.message, "is creating; only a running session can be hibernated")
      assert.strictEqual(env.dispatcher.commands.filter((c) => c.request.action !== "create_session").length, 0)
    }))
})
