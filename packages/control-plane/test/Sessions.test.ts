import { assert, describe, it, layer } from "@effect/vitest"
import type { AgentId, CommandResult, SessionId, SessionStatus, TemplateName, UserId } from "@streamspace/protocol"
import { parseQuantity } from "@streamspace/protocol"
import { Context, Effect, Layer } from "effect"
import { waitFor } from "@streamspace/testbed"
import type { User } from "../src/Auth.ts"
import { resumeSpec } from "../src/internal/sessions/templates.ts"
import { type Counted, makeUsageCounters } from "../src/internal/sessions/usage.ts"
import { makeMemoryRepo, type MemoryRepo, RepoError, Sessions } from "../src/Sessions.ts"
import { Store } from "../src/Store.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { TestClock } from "effect/testing"
import { TEST_JWT_SECRET } from "./support/jwt.ts"
import { type FakeDispatcher, fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { type FakeHub, fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const bob: User = { id: "bob" as UserId, role: "user", groups: [] }
const root: User = { id: "root" as UserId, role: "admin", groups: [] }
const demo = "demo" as TemplateName

const status = (id: string, phase: SessionStatus["phase"], extra: Partial<SessionStatus> = {}): SessionStatus => ({
  session_id: id as SessionId,
  phase,
  observed_at: "2026-01-01T00:00:00.000Z",
  ...extra
})

interface Env {
  readonly hub: FakeHub
  readonly dispatcher: FakeDispatcher
  readonly repo: MemoryRepo
  readonly sessions: Sessions["Service"]
}

/** Sessions with the rules of a control plane configured by `env` (on top of a valid base). */
const setupConfigured = (env: Record<string, string>) => Effect.gen(function*() {
  const hub = yield* makeFakeHub
  const dispatcher = yield* makeFakeDispatcher
  const repo = makeMemoryRepo()
  const config = ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, ...env })
  const ctx = yield* Layer.build(Sessions.layerMemory(repo).pipe(Layer.provide(Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), config))))
  return { hub, dispatcher, repo, sessions: Context.get(ctx, Sessions) } satisfies Env
})

const setup = Effect.gen(function*() {
  const hub = yield* makeFakeHub
  const dispatcher = yield* makeFakeDispatcher
  const repo = makeMemoryRepo()
  const ctx = yield* Layer.build(Sessions.layerMemory(repo).pipe(Layer.provide(Layer.merge(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher)))))
  const sessions = Context.get(ctx, Sessions)
  return { hub, dispatcher, repo, sessions } satisfies Env
})

const stateOf = (env: Env, id: string) => Effect.map(env.sessions.get(root, id), (s) => s.state)
const waitState = (env: Env, id: string, state: string) =>
  waitFor(`session ${id} ${state}`, Effect.map(stateOf(env, id), (s) => s === state))
const created = (id: string): CommandResult => ({ action: "create_session", session: status(id, "creating") })

describe("Sessions", () => {
  it.effect("create places the session, persists it and dispatches create_session with the template's spec", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("busy", { activeSessions: 5 })
      env.hub.addAgent("idle", { activeSessions: 1 })
      const s = yield* env.sessions.create(ann, { template: demo, resources: { cpu: "1" }, env: { A: "1" } })
      assert.strictEqual(s.agentId, "idle")
      assert.strictEqual(s.state, "creating")
      assert.match(s.id, /^s-[0-9a-f]{12}$/)
      const [cmd] = env.dispatcher.commands
      assert.strictEqual(cmd!.agentId, "idle")
      assert.deepStrictEqual(cmd!.request, {
        action: "create_session",
        args: {
          session_id: s.id as SessionId,
          spec: {
            user_id: ann.id,
            template: demo,
            image: "streamspace/demo-desktop:latest",
            resources: { cpu: "1", memory: "512Mi" },
            env: { A: "1" },
            persistent_home: false,
            vnc_port: 5900
          }
        }
      })
      assert.deepStrictEqual(env.repo.history.get(s.id), [["pending", "creating"]])
      assert.strictEqual(s.createCommandId, cmd!.record.id)
    }))

  it.effect("command outcome and session_status reports drive creating -> running", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* env.dispatcher.complete(env.dispatcher.commands[0]!.record.id, created(s.id))
      yield* Effect.yieldNow
      assert.strictEqual(yield* stateOf(env, s.id), "creating")
      yield* env.hub.sessionStatus("a", status(s.id, "running"))
      yield* waitState(env, s.id, "running")
      // A report from another agent about this session changes nothing.
      yield* env.hub.sessionStatus("b", status(s.id, "failed"))
      yield* Effect.yieldNow
      assert.strictEqual(yield* stateOf(env, s.id), "running")
      assert.deepStrictEqual(env.repo.history.get(s.id), [["pending", "creating"], ["creating", "running"]])
    }))

  it.effect("a running result from create_session goes straight to running", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.responder = (d) => d.request.action === "create_session" ? { result: { action: "create_session", session: status(d.request.args.session_id, "running") } } : undefined
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* waitState(env, s.id, "running")
    }))

  it.effect("an agent report that overtakes the dispatch still leaves the create command on the session", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.beforeReturn = (d) =>
        Effect.gen(function*() {
          if (d.request.action !== "create_session") return
          const id = d.request.args.session_id
          yield* env.hub.sessionStatus("a", status(id, "running"))
          yield* waitState(env, id, "running").pipe(Effect.orDie)
        })
      const s = yield* env.sessions.create(ann, { template: demo })
      const after = yield* env.sessions.get(ann, s.id)
      assert.strictEqual(after.state, "running")
      assert.strictEqual(after.createCommandId, env.dispatcher.commands[0]!.record.id)
    }))

  it.effect("a create's outcome, older than a report already applied, does not overwrite it (Unschedulable stays)", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const s = yield* env.sessions.create(ann, { template: demo })
      // The watch saw the scheduler's verdict before the create call's answer (the pod as created) arrived.
      yield* env.hub.sessionStatus("a", status(s.id, "pending", { reason: "Unschedulable", message: "0/3 nodes are available", observed_at: "2026-01-01T00:00:02.000Z" }))
      yield* waitFor("the verdict", Effect.map(env.sessions.get(root, s.id), (r) => r.reason === "Unschedulable"))
      const stale: CommandResult = { action: "create_session", session: status(s.id, "creating", { reason: "ContainerCreating", observed_at: "2026-01-01T00:00:01.000Z" }) }
      yield* env.dispatcher.complete(env.dispatcher.commands[0]!.record.id, stale)
      yield* Effect.yieldNow
      const after = yield* env.sessions.get(root, s.id)
      assert.strictEqual(after.state, "creating")
      assert.strictEqual(after.reason, "Unschedulable")
      assert.strictEqual(after.message, "0/3 nodes are available")
      // A newer report still moves it on.
      yield* env.hub.sessionStatus("a", status(s.id, "running", { observed_at: "2026-01-01T00:00:03.000Z" }))
      yield* waitState(env, s.id, "running")
    }))

  it.effect("a failed create_session fails the session with the agent's code and message", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* env.dispatcher.fail(env.dispatcher.commands[0]!.record.id, { code: "kubernetes_rejected", message: "pods is forbidden", retryable: false })
      yield* waitState(env, s.id, "failed")
      const after = yield* env.sessions.get(ann, s.id)
      assert.strictEqual(after.reason, "kubernetes_rejected")
      assert.strictEqual(after.message, "pods is forbidden")
      // A late report from the agent does not revive it.
      yield* env.hub.sessionStatus("a", status(s.id, "running"))
      yield* Effect.yieldNow
      assert.strictEqual(yield* stateOf(env, s.id), "failed")
    }))

  it.effect("no eligible agent: NoEligibleAgent with the reasons, nothing persisted, nothing dispatched", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("drained", { draining: true, status: "draining" })
      env.hub.addAgent("gone", { connected: false, status: "offline" })
      const e = yield* Effect.flip(env.sessions.create(ann, { template: demo }))
      assert.strictEqual(e.reason, "NoEligibleAgent")
      assert.include(e.message, "drained: draining")
      assert.include(e.message, "gone: not connected")
      assert.strictEqual(env.repo.sessions.size, 0)
      assert.strictEqual(env.dispatcher.commands.length, 0)
      assert.deepStrictEqual(yield* env.sessions.list(root), [])
    }))

  it.effect("max_sessions counts the control plane's own live records between heartbeats", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a", { capacity: { cpu: "8", memory: "16Gi", max_sessions: 2 } })
      yield* env.sessions.create(ann, { template: demo })
      yield* env.sessions.create(ann, { template: demo })
      const e = yield* Effect.flip(env.sessions.create(ann, { template: demo }))
      assert.strictEqual(e.reason, "NoEligibleAgent")
      assert.include(e.message, "at max_sessions (2/2)")
    }))

  it.effect("per-agent usage follows create, failure, delete and a restart (placement sees each change)", () =>
    Effect.gen(function*() {
      const env = yield* setup
      // Room for two sessions of 1 CPU each; max_sessions is not the limit here.
      env.hub.addAgent("a", { capacity: { cpu: "2", memory: "16Gi", max_sessions: 10 } })
      const oneCpu = { template: demo, resources: { cpu: "1" } }
      const refusedForCpu = Effect.gen(function*() {
        const e = yield* Effect.flip(env.sessions.create(ann, oneCpu))
        assert.strictEqual(e.reason, "NoEligibleAgent")
        assert.include(e.message, "not enough CPU (needs 1000m, 0m free of 2)")
      })
      const commandOf = (id: string) => env.dispatcher.commands.find((c) => c.request.action === "create_session" && c.request.args.session_id === id)!
      const s1 = yield* env.sessions.create(ann, oneCpu)
      const s2 = yield* env.sessions.create(ann, oneCpu)
      yield* refusedForCpu
      // A failed create frees its share.
      yield* env.dispatcher.fail(commandOf(s1.id).record.id, { code: "kubernetes_rejected", message: "no", retryable: false })
      yield* waitState(env, s1.id, "failed")
      const s3 = yield* env.sessions.create(ann, oneCpu)
      yield* refusedForCpu
      // A session being deleted still holds its share until it is terminated.
      yield* env.dispatcher.complete(commandOf(s2.id).record.id, { action: "create_session", session: status(s2.id, "running") })
      yield* waitState(env, s2.id, "running")
      yield* env.sessions.remove(ann, s2.id)
      yield* refusedForCpu
      const del = env.dispatcher.commands.find((c) => c.request.action === "delete_session")!
      yield* env.dispatcher.complete(del.record.id, { action: "delete_session", session_id: s2.id as SessionId })
      yield* waitState(env, s2.id, "terminated")
      const s4 = yield* env.sessions.create(ann, oneCpu)
      assert.strictEqual(s4.agentId, "a")
      yield* refusedForCpu
      // A restart on the same records starts from the live ones (s3, s4): still full.
      const again = Context.get(
        yield* Layer.build(Sessions.layerMemory(env.repo).pipe(Layer.provide(Layer.merge(fakeHubLayer(env.hub), fakeDispatcherLayer(env.dispatcher))))),
        Sessions
      )
      const e = yield* Effect.flip(again.create(ann, oneCpu))
      assert.include(e.message, "not enough CPU (needs 1000m, 0m free of 2)")
      // ... and frees a share when one of them fails after the restart.
      yield* env.dispatcher.fail(commandOf(s3.id).record.id, { code: "timeout", message: "late", retryable: true })
      yield* waitFor("s3 failed after the restart", Effect.map(again.get(root, s3.id), (s) => s.state === "failed"))
      assert.strictEqual((yield* again.create(ann, oneCpu)).agentId, "a")
    }))

  it.effect("a create whose record cannot be written gives its placement back and leaves no record", () =>
    Effect.gen(function*() {
      const hub = yield* makeFakeHub
      const dispatcher = yield* makeFakeDispatcher
      const repo = makeMemoryRepo()
      let refuse = true
      const flaky: MemoryRepo = {
        ...repo,
        insertSession: (r, actor) => refuse ? Effect.fail(new RepoError({ reason: "Unavailable", message: "database is down" })) : repo.insertSession(r, actor)
      }
      const sessions = Context.get(
        yield* Layer.build(Sessions.layerMemory(flaky).pipe(Layer.provide(Layer.merge(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher))))),
        Sessions
      )
      hub.addAgent("a", { capacity: { cpu: "8", memory: "16Gi", max_sessions: 1 } })
      const e = yield* Effect.flip(sessions.create(ann, { template: demo }))
      assert.strictEqual(e.reason, "Store")
      assert.deepStrictEqual(yield* sessions.list(root), [])
      assert.strictEqual(dispatcher.commands.length, 0)
      // The one slot is free again.
      refuse = false
      const s = yield* sessions.create(ann, { template: demo })
      assert.strictEqual(s.agentId, "a")
      assert.include((yield* Effect.flip(sessions.create(ann, { template: demo }))).message, "at max_sessions (1/1)")
    }))

  it("usage counters equal a count from scratch after any sequence of record changes", () => {
    // A deterministic pseudo-random walk over create / move / end / re-report, checked against the plain
    // scan placement used to do (count, sum of CPU and memory of the agent's live records).
    let seed = 42
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31
      return seed % n
    }
    const states = ["pending", "creating", "running", "terminating", "terminated", "failed"] as const
    const cpus = [undefined, "100m", "250m", "1", "1.5", "333m"]
    const mems = [undefined, "512Mi", "1Gi", "100M"]
    const counters = makeUsageCounters()
    const records = new Map<string, Counted>()
    for (let step = 0; step < 5000; step++) {
      const id = `s${rand(300)}`
      const prev = records.get(id)
      const cpu = cpus[rand(cpus.length)]
      const memory = mems[rand(mems.length)]
      const next: Counted = {
        id,
        agentId: prev?.agentId ?? `a${rand(7)}`,
        state: states[rand(states.length)]!,
        spec: prev !== undefined && rand(2) === 0 ? prev.spec : { resources: { ...(cpu ? { cpu } : {}), ...(memory ? { memory } : {}) } }
      }
      counters.replace(prev, next)
      records.set(id, next)
    }
    const expected = new Map<string, { sessions: number; cpu: number; memory: number }>()
    for (const r of records.values()) {
      if (r.state === "terminated" || r.state === "failed") continue
      const e = expected.get(r.agentId) ?? { sessions: 0, cpu: 0, memory: 0 }
      expected.set(r.agentId, {
        sessions: e.sessions + 1,
        cpu: e.cpu + (parseQuantity(r.spec.resources?.cpu ?? "0") ?? 0),
        memory: e.memory + (parseQuantity(r.spec.resources?.memory ?? "0") ?? 0)
      })
    }
    const actual = counters.snapshot()
    assert.deepStrictEqual([...actual.keys()].sort(), [...expected.keys()].sort())
    for (const [agentId, e] of expected) {
      const a = actual.get(agentId)!
      assert.strictEqual(a.sessions, e.sessions)
      assert.closeTo(a.cpu, e.cpu, 1e-9)
      assert.closeTo(a.memory, e.memory, 1e-3)
      assert.deepStrictEqual(
        [...counters.liveIds(agentId)].sort(),
        [...records.values()].filter((r) => r.agentId === agentId && r.state !== "terminated" && r.state !== "failed").map((r) => r.id).sort()
      )
    }
    for (let i = 0; i < 7; i++) if (!expected.has(`a${i}`)) assert.deepStrictEqual(counters.get(`a${i}`), { sessions: 0, cpu: 0, memory: 0 })
  })

  it.effect("unknown template is TemplateNotFound naming the field", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const e = yield* Effect.flip(env.sessions.create(ann, { template: "nope" as TemplateName }))
      assert.strictEqual(e.reason, "TemplateNotFound")
      assert.strictEqual(e.field, "template")
      assert.strictEqual(env.repo.sessions.size, 0)
    }))

  it.effect("a dispatch failure fails the record and the call", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.failDispatch = true
      const e = yield* Effect.flip(env.sessions.create(ann, { template: demo }))
      assert.strictEqual(e.reason, "Store")
      const [record] = env.repo.sessions.values()
      assert.strictEqual(record!.state, "failed")
      assert.strictEqual(record!.reason, "dispatch_failed")
    }))

  it.effect("delete: terminating, then terminated when delete_session completes", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.responder = (d) => d.request.action === "create_session" ? { result: { action: "create_session", session: status(d.request.args.session_id, "running") } } : undefined
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* waitState(env, s.id, "running")
      const t = yield* env.sessions.remove(ann, s.id)
      assert.strictEqual(t.state, "terminating")
      const del = env.dispatcher.commands[1]!
      assert.deepStrictEqual(del.request, { action: "delete_session", args: { session_id: s.id } })
      // Deleting again while terminating sends nothing more.
      yield* env.sessions.remove(ann, s.id)
      assert.strictEqual(env.dispatcher.commands.length, 2)
      yield* env.dispatcher.complete(del.record.id, { action: "delete_session", session_id: s.id })
      yield* waitState(env, s.id, "terminated")
      assert.deepStrictEqual(env.repo.history.get(s.id), [["pending", "creating"], ["creating", "running"], ["running", "terminating"], ["terminating", "terminated"]])
    }))

  it.effect("history: each state change with its reason and who made it (user, agent, control plane); owner and admins only", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* env.hub.sessionStatus("a", status(s.id, "running"))
      yield* waitState(env, s.id, "running")
      yield* env.sessions.remove(root, s.id)
      yield* env.dispatcher.complete(env.dispatcher.commands[1]!.record.id, { action: "delete_session", session_id: s.id as SessionId })
      yield* waitState(env, s.id, "terminated")
      const h = yield* env.sessions.history(ann, s.id)
      assert.deepStrictEqual(h.map((e) => [e.state, e.actor, e.reason]), [
        ["pending", "user:ann", undefined],
        ["creating", "user:ann", undefined],
        ["running", "agent:a", undefined],
        ["terminating", "user:root", undefined],
        ["terminated", "agent:a", "deleted"]
      ])
      assert.strictEqual((yield* env.sessions.history(root, s.id)).length, 5)
      assert.strictEqual((yield* Effect.flip(env.sessions.history(bob, s.id))).reason, "NotFound")
      // A create whose command times out failed on the control plane's word, not the agent's.
      const t = yield* env.sessions.create(bob, { template: demo })
      yield* env.dispatcher.fail(env.dispatcher.commands[2]!.record.id, { code: "timeout", message: "no outcome by the deadline", retryable: true })
      yield* waitState(env, t.id, "failed")
      assert.deepStrictEqual((yield* env.sessions.history(bob, t.id)).map((e) => [e.state, e.actor, e.reason]).at(-1), ["failed", "system", "timeout"])
    }))

  it.effect("templates: a change applies to new sessions and resumes, a deletion to new sessions; running ones keep their spec", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      yield* env.sessions.createTemplate({ name: "ff" as TemplateName, image: "ff:1", env: { A: "1" } })
      const before = yield* env.sessions.create(ann, { template: "ff" as TemplateName })
      const changed = yield* env.sessions.updateTemplate("ff", { image: "ff:2", env: { B: "2" } })
      assert.deepStrictEqual([changed.image, changed.env], ["ff:2", { B: "2" }])
      assert.deepStrictEqual([(yield* env.sessions.get(ann, before.id)).spec.image, (yield* env.sessions.get(ann, before.id)).spec.env], ["ff:1", { A: "1" }])
      const after = yield* env.sessions.create(ann, { template: "ff" as TemplateName })
      assert.deepStrictEqual([after.spec.image, after.spec.env], ["ff:2", { B: "2" }])
      const sent = env.dispatcher.commands.at(-1)!.request
      assert.strictEqual(sent.action === "create_session" && sent.args.spec.image, "ff:2")
      // A resume makes the pod again with the template's current image, everything else as created.
      assert.deepStrictEqual(yield* resumeSpec(env.repo, before), { ...before.spec, image: "ff:2" })
      assert.strictEqual((yield* Effect.flip(env.sessions.updateTemplate("nope", { image: "x" }))).reason, "NotFound")
      yield* env.sessions.deleteTemplate("ff")
      assert.strictEqual((yield* Effect.flip(env.sessions.getTemplate("ff"))).reason, "NotFound")
      assert.strictEqual((yield* Effect.flip(env.sessions.create(ann, { template: "ff" as TemplateName }))).reason, "TemplateNotFound")
      assert.strictEqual((yield* Effect.flip(env.sessions.deleteTemplate("ff"))).reason, "NotFound")
      assert.strictEqual((yield* env.sessions.get(ann, before.id)).state, "creating")
      // the template gone, a resume uses the session's own spec
      assert.deepStrictEqual(yield* resumeSpec(env.repo, before), before.spec)
    }))

  it.effect("warm pools: the templates' pools go to every approved agent on a change (none to a drained one); never with a persistent home", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.hub.addAgent("d", { draining: true })
      env.hub.addAgent("p", { enrollment: "pending" })
      const sent = (agent: string) =>
        env.dispatcher.commands.filter((c) => c.agentId === agent && c.request.action === "set_warm_pools").map((c) => (c.request.args as any).pools)
      yield* env.sessions.createTemplate({ name: "ff" as TemplateName, image: "ff:1", warm_pool: 2 })
      yield* waitFor("pools sent", Effect.sync(() => sent("a").length === 1 && sent("d").length === 1))
      assert.deepStrictEqual(sent("a")[0], [{ template: "ff", size: 2, image: "ff:1", resources: { cpu: "500m", memory: "512Mi" }, vnc_port: 5900 }])
      assert.deepStrictEqual(sent("d")[0], [])
      assert.deepStrictEqual(sent("p"), [])
      // A session of the template gets exactly the pool's spec, so the agent can hand it a warm pod.
      const s = yield* env.sessions.create(ann, { template: "ff" as TemplateName })
      assert.deepStrictEqual([s.spec.image, s.spec.resources, s.spec.env, s.spec.vnc_port, s.spec.persistent_home], ["ff:1", { cpu: "500m", memory: "512Mi" }, undefined, 5900, false])
      const bad = yield* Effect.flip(env.sessions.createTemplate({ name: "home" as TemplateName, image: "x", persistent_home: true, warm_pool: 1 }))
      assert.deepStrictEqual([bad.reason, bad.field], ["InvalidRequest", "warm_pool"])
      assert.strictEqual((yield* Effect.flip(env.sessions.updateTemplate("ff", { persistent_home: true }))).field, "warm_pool")
      yield* env.sessions.updateTemplate("ff", { warm_pool: 0 })
      yield* waitFor("empty pools sent", Effect.sync(() => sent("a").length === 2))
      assert.deepStrictEqual(sent("a")[1], [])
    }))

  it.effect("delete: the agent's report of the deleted pod, overtaking the dispatch, still ends the session as deleted", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.responder = (d) => d.request.action === "create_session" ? { result: { action: "create_session", session: status(d.request.args.session_id, "running") } } : undefined
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* waitState(env, s.id, "running")
      env.dispatcher.beforeReturn = (d) =>
        d.request.action === "delete_session"
          ? env.hub.sessionStatus("a", status(s.id, "terminated", { reason: "PodDeleted", observed_at: "2026-01-01T00:00:05.000Z" }))
          : Effect.void
      yield* env.sessions.remove(ann, s.id)
      yield* waitState(env, s.id, "terminated")
      assert.strictEqual((yield* env.sessions.get(root, s.id)).reason, "deleted")
    }))

  it.effect("delete of a session the agent no longer has still ends terminated", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* env.sessions.remove(ann, s.id)
      yield* env.dispatcher.fail(env.dispatcher.commands[1]!.record.id, { code: "session_not_found", message: "gone", retryable: false })
      yield* waitState(env, s.id, "terminated")
    }))

  it.effect("users see and touch only their own sessions; admins see all", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const mine = yield* env.sessions.create(ann, { template: demo })
      const theirs = yield* env.sessions.create(bob, { template: demo })
      assert.deepStrictEqual((yield* env.sessions.list(ann)).map((s) => s.id), [mine.id])
      assert.deepStrictEqual((yield* env.sessions.list(bob)).map((s) => s.id), [theirs.id])
      assert.strictEqual((yield* env.sessions.list(root)).length, 2)
      assert.strictEqual((yield* Effect.flip(env.sessions.get(ann, theirs.id))).reason, "NotFound")
      assert.strictEqual((yield* Effect.flip(env.sessions.remove(ann, theirs.id))).reason, "NotFound")
      assert.strictEqual(env.dispatcher.commands.length, 2)
      assert.strictEqual((yield* env.sessions.get(root, theirs.id)).userId, "bob")
    }))

  it.effect("reconcile on connect: lost sessions end as lost_on_agent, unknown ones are reported, known ones updated", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.responder = (d) => d.request.action === "create_session" ? { result: { action: "create_session", session: status(d.request.args.session_id, "running") } } : undefined
      const lost = yield* env.sessions.create(ann, { template: demo })
      const kept = yield* env.sessions.create(ann, { template: demo })
      yield* waitState(env, lost.id, "running")
      yield* waitState(env, kept.id, "running")
      env.dispatcher.responder = () => undefined
      const inFlight = yield* env.sessions.create(ann, { template: demo }) // create not yet delivered
      yield* env.hub.connected("a", {
        agent_id: "a" as AgentId,
        platform: "kubernetes",
        region: "eu",
        version: "0.1.0",
        protocol_versions: ["1"],
        capacity: { cpu: "8", memory: "16Gi", max_sessions: 10 },
        sessions: [status(kept.id, "failed", { reason: "CrashLoopBackOff" }), status("s-stranger", "running")]
      })
      yield* waitState(env, lost.id, "terminated")
      assert.strictEqual((yield* env.sessions.get(ann, lost.id)).reason, "lost_on_agent")
      yield* waitState(env, kept.id, "failed")
      assert.strictEqual((yield* env.sessions.get(ann, kept.id)).reason, "CrashLoopBackOff")
      assert.strictEqual(yield* stateOf(env, inFlight.id), "creating")
      assert.deepStrictEqual(env.sessions.unknownSessions("a" as AgentId).map((s) => s.session_id), ["s-stranger"])
      assert.strictEqual(env.dispatcher.commands.filter((c) => c.request.action === "delete_session").length, 0)
    }))

  it.effect("a session one hello left out (lost_on_agent) is re-adopted when its agent reports it again", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.responder = (d) => d.request.action === "create_session" ? { result: { action: "create_session", session: status(d.request.args.session_id, "running") } } : undefined
      const byHello = yield* env.sessions.create(ann, { template: demo })
      const byReport = yield* env.sessions.create(ann, { template: demo })
      yield* waitState(env, byHello.id, "running")
      yield* waitState(env, byReport.id, "running")
      const hello = (sessions: Array<SessionStatus>) => ({
        agent_id: "a" as AgentId,
        platform: "kubernetes" as const,
        region: "eu",
        version: "0.1.0",
        protocol_versions: ["1"],
        capacity: { cpu: "8", memory: "16Gi", max_sessions: 10 },
        sessions
      })
      // One hello (from a second process with the agent's credential, say) lists nothing.
      yield* env.hub.connected("a", hello([]))
      yield* waitState(env, byHello.id, "terminated")
      yield* waitState(env, byReport.id, "terminated")
      assert.strictEqual((yield* env.sessions.get(ann, byHello.id)).reason, "lost_on_agent")
      // The real agent comes back with its inventory; a status report alone also brings one back.
      yield* env.hub.connected("a", hello([status(byHello.id, "running", { observed_at: "2026-01-01T00:00:05.000Z" })]))
      yield* waitState(env, byHello.id, "running")
      assert.isUndefined((yield* env.sessions.get(ann, byHello.id)).reason)
      yield* env.hub.sessionStatus("a", status(byReport.id, "running", { observed_at: "2026-01-01T00:00:06.000Z" }))
      yield* waitState(env, byReport.id, "running")
      assert.deepStrictEqual(env.sessions.unknownSessions("a" as AgentId), [])
    }))

  it.effect("DELETE of a session recorded lost_on_agent still sends delete_session to its agent (the pod may be there)", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      env.dispatcher.responder = (d) => d.request.action === "create_session" ? { result: { action: "create_session", session: status(d.request.args.session_id, "running") } } : undefined
      const s = yield* env.sessions.create(ann, { template: demo })
      yield* waitState(env, s.id, "running")
      env.dispatcher.responder = () => undefined
      yield* env.hub.connected("a", {
        agent_id: "a" as AgentId,
        platform: "kubernetes",
        region: "eu",
        version: "0.1.0",
        protocol_versions: ["1"],
        capacity: { cpu: "8", memory: "16Gi", max_sessions: 10 },
        sessions: []
      })
      yield* waitState(env, s.id, "terminated")
      const removed = yield* env.sessions.remove(ann, s.id)
      assert.strictEqual(removed.state, "terminated")
      const deletes = env.dispatcher.commands.filter((c) => c.request.action === "delete_session")
      assert.strictEqual(deletes.length, 1)
      assert.strictEqual(deletes[0]!.agentId, "a")
      yield* env.dispatcher.complete(deletes[0]!.record.id, { action: "delete_session", session_id: s.id as SessionId })
      yield* waitFor("reason deleted", Effect.map(env.sessions.get(ann, s.id), (r) => r.reason === "deleted"))
      // Deleted for good: a second DELETE sends nothing more, and a late report does not bring it back.
      yield* env.sessions.remove(ann, s.id)
      assert.strictEqual(env.dispatcher.commands.filter((c) => c.request.action === "delete_session").length, 1)
      yield* env.hub.sessionStatus("a", status(s.id, "running", { observed_at: "2026-01-01T00:00:09.000Z" }))
      assert.strictEqual(yield* stateOf(env, s.id), "terminated")
    }))

  it.effect("after a restart, open create and delete commands are followed again", () =>
    Effect.gen(function*() {
      const first = yield* setup
      first.hub.addAgent("a")
      const creating = yield* first.sessions.create(ann, { template: demo })
      const deleting = yield* first.sessions.create(ann, { template: demo })
      yield* first.dispatcher.complete(first.dispatcher.commands[1]!.record.id, { action: "create_session", session: status(deleting.id, "running") })
      yield* waitState(first, deleting.id, "running")
      yield* first.sessions.remove(ann, deleting.id)
      // A second Sessions on the same records and dispatcher: the restart.
      const again = Context.get(
        yield* Layer.build(Sessions.layerMemory(first.repo).pipe(Layer.provide(Layer.merge(fakeHubLayer(first.hub), fakeDispatcherLayer(first.dispatcher))))),
        Sessions
      )
      const restarted = { ...first, sessions: again }
      yield* first.dispatcher.fail(first.dispatcher.commands[0]!.record.id, { code: "timeout", message: "no answer before the deadline", retryable: true })
      yield* waitState(restarted, creating.id, "failed")
      yield* first.dispatcher.complete(first.dispatcher.commands[2]!.record.id, { action: "delete_session", session_id: deleting.id as SessionId })
      yield* waitState(restarted, deleting.id, "terminated")
    }))

  it.effect("templates: seeded demo, create, get, duplicate", () =>
    Effect.gen(function*() {
      const env = yield* setup
      assert.deepStrictEqual((yield* env.sessions.listTemplates).map((t) => t.name), ["demo"])
      const t = yield* env.sessions.createTemplate({ name: "firefox" as TemplateName, image: "example/firefox:1", persistent_home: true })
      assert.strictEqual(t.displayName, "firefox")
      assert.strictEqual(t.vncPort, 5900)
      assert.strictEqual((yield* env.sessions.getTemplate("firefox")).image, "example/firefox:1")
      assert.strictEqual((yield* Effect.flip(env.sessions.getTemplate("nope"))).reason, "NotFound")
      const dup = yield* Effect.flip(env.sessions.createTemplate({ name: "firefox" as TemplateName, image: "x" }))
      assert.strictEqual(dup.reason, "TemplateExists")
      assert.strictEqual(dup.field, "name")
    }))
})

// One embedded database for the block (PGlite takes seconds to start); each test uses its own agent and user ids.
layer(Store.layerMemory, { timeout: "240 seconds", excludeTestServices: true })("Sessions on the Store (embedded PGlite)", (it) => {
  const storeSetup = (agentId: string) =>
    Effect.gen(function*() {
      const hub = yield* makeFakeHub
      const dispatcher = yield* makeFakeDispatcher
      const store = yield* Store
      yield* store.agents.register({ id: agentId as AgentId, platform: "kubernetes", region: "eu", version: "0.1.0", capacity: { cpu: "8", memory: "16Gi", max_sessions: 10 } })
      hub.addAgent(agentId)
      const deps = Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), Layer.succeed(Store, store))
      const build = Effect.map(Layer.build(Sessions.layer.pipe(Layer.provide(deps))), (ctx) => Context.get(ctx, Sessions))
      return { hub, dispatcher, store, build }
    })

  it.effect("persists records, transitions with their history, templates, and reloads them", () =>
    Effect.gen(function*() {
      const t = yield* storeSetup("store-a")
      const sessions = yield* t.build
      const s = yield* sessions.create(root, { template: demo, region: "eu" })
      assert.strictEqual(s.agentId, "store-a")
      assert.strictEqual(s.spec.image, "streamspace/demo-desktop:latest")
      yield* t.dispatcher.complete(t.dispatcher.commands[0]!.record.id, { action: "create_session", session: status(s.id, "running") })
      yield* waitFor("running in the store", Effect.map(t.store.sessions.get(s.id), (x) => x.state === "running"))
      const history = yield* t.store.sessions.history(s.id)
      assert.deepStrictEqual(history.map((h) => [h.state, h.actor]), [["pending", "user:root"], ["creating", "user:root"], ["running", "agent:store-a"]])
      assert.deepStrictEqual((yield* sessions.history(root, s.id)).map((h) => h.state), ["pending", "creating", "running"])
      assert.strictEqual((yield* t.store.users.get("root")).role, "admin")
      const tpl = yield* sessions.createTemplate({ name: "firefox" as TemplateName, image: "example/firefox:1" })
      assert.strictEqual((yield* sessions.getTemplate("firefox")).image, tpl.image)
      assert.strictEqual((yield* Effect.flip(sessions.createTemplate({ name: "firefox" as TemplateName, image: "x" }))).reason, "TemplateExists")
      assert.strictEqual((yield* Effect.flip(sessions.getTemplate("nope"))).reason, "NotFound")
      // A second instance on the same database (a restart) sees the session and its state. (Command ids come
      // back from the commands table, which the fake dispatcher does not write.)
      const again = yield* t.build
      const reloaded = yield* again.get(root, s.id)
      assert.strictEqual(reloaded.state, "running")
      assert.strictEqual(reloaded.region, "eu")
      yield* again.remove(root, s.id)
      const del = t.dispatcher.commands.find((c) => c.request.action === "delete_session")!
      yield* t.dispatcher.complete(del.record.id, { action: "delete_session", session_id: s.id as SessionId })
      yield* waitFor("terminated in the store", Effect.map(t.store.sessions.get(s.id), (x) => x.state === "terminated"))
      assert.deepStrictEqual((yield* t.store.sessions.history(s.id)).map((h) => h.state), ["pending", "creating", "running", "terminating", "terminated"])
      assert.strictEqual((yield* t.store.sessions.get(s.id)).reason, "deleted")
    }), { timeout: 120_000 })

  it.effect("pages come from the store newest first with keyset positions, one user's or all; an ended session is read back from the store", () =>
    Effect.gen(function*() {
      const t = yield* storeSetup("store-c")
      const sessions = yield* t.build
      const dave: User = { id: "dave-pages" as UserId, role: "user", groups: [] }
      const made: Array<string> = []
      for (let i = 0; i < 5; i++) made.push((yield* sessions.create(dave, { template: demo })).id)
      yield* sessions.create(root, { template: demo })
      const all = yield* sessions.list(dave)
      assert.sameMembers(all.map((s) => s.id), made)
      for (let i = 1; i < all.length; i++) {
        const [a, b] = [all[i - 1]!, all[i]!]
        assert.isTrue(a.createdAt > b.createdAt || (a.createdAt.getTime() === b.createdAt.getTime() && a.id > b.id), "newest first")
      }
      const paged: Array<string> = []
      let after: { createdAt: Date; id: string } | undefined
      for (;;) {
        const page = yield* sessions.page(dave, 2, after)
        paged.push(...page.map((s) => s.id))
        if (page.length < 2) break
        after = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id }
      }
      assert.deepStrictEqual(paged, all.map((s) => s.id))
      assert.isTrue((yield* sessions.list(root)).length >= 6)
      // End one: it is read back from the store, with its state.
      const first = t.dispatcher.commands.find((c) => c.request.action === "create_session")!
      yield* t.dispatcher.fail(first.record.id, { code: "kubernetes_rejected", message: "no", retryable: false })
      const failedId = (first.request.args as { session_id: string }).session_id
      yield* waitFor("failed in the store", Effect.map(t.store.sessions.get(failedId), (x) => x.state === "failed"))
      yield* waitFor("failed through Sessions", Effect.map(sessions.get(dave, failedId), (x) => x.state === "failed"))
      assert.strictEqual((yield* sessions.stateCounts).get("failed")! >= 1, true)
    }), { timeout: 120_000 })

  it.effect("no eligible agent writes nothing to the store", () =>
    Effect.gen(function*() {
      const t = yield* storeSetup("store-b")
      t.hub.agents.set("store-b", { ...t.hub.agents.get("store-b")!, draining: true })
      const sessions = yield* t.build
      const carol: User = { id: "carol" as UserId, role: "user", groups: [] }
      assert.strictEqual((yield* Effect.flip(sessions.create(carol, { template: demo }))).reason, "NoEligibleAgent")
      assert.deepStrictEqual(yield* t.store.sessions.list({ agentId: "store-b" }), [])
    }), { timeout: 120_000 })
})

describe("Sessions memory (issue 14)", () => {
  it.effect("an ended session leaves memory: reads of it go to the repository, and the state gauge still counts it", () =>
    Effect.gen(function*() {
      const env = yield* setup
      env.hub.addAgent("a")
      const s = yield* env.sessions.create(ann, { template: demo, env: { BIG: "x".repeat(30_000) } })
      const live = yield* env.sessions.create(ann, { template: demo })
      yield* env.sessions.remove(ann, s.id)
      const del = env.dispatcher.commands.find((c) => c.request.action === "delete_session")!
      yield* env.dispatcher.complete(del.record.id, { action: "delete_session", session_id: s.id })
      yield* waitState(env, s.id, "terminated")
      assert.strictEqual((yield* env.sessions.stateCounts).get("terminated"), 1)
      // Take both out of the repository: the live one is still answered from memory, the ended one is not.
      env.repo.sessions.delete(s.id)
      env.repo.sessions.delete(live.id)
      assert.strictEqual((yield* Effect.flip(env.sessions.get(ann, s.id))).reason, "NotFound")
      assert.strictEqual((yield* env.sessions.get(ann, live.id)).state, "creating")
    }))
})

describe("Sessions per-user limits (issue 14)", () => {
  it.effect("SESSION_CREATES_PER_MINUTE is a sliding minute per user: the refusal says when to retry, and the slot comes back a minute after the oldest create", () =>
    Effect.gen(function*() {
      const env = yield* setupConfigured({ SESSION_CREATES_PER_MINUTE: "2", MAX_SESSIONS_PER_USER: "0" })
      env.hub.addAgent("a")
      yield* env.sessions.create(ann, { template: demo })
      yield* TestClock.adjust("20 seconds")
      yield* env.sessions.create(ann, { template: demo })
      const refused = yield* Effect.flip(env.sessions.create(ann, { template: demo }))
      assert.deepStrictEqual([refused.reason, refused.limit, refused.retryAfterSeconds], ["LimitExceeded", "SESSION_CREATES_PER_MINUTE", 40])
      // Another user has a rate of their own; an admin is not limited.
      yield* env.sessions.create(bob, { template: demo })
      for (let i = 0; i < 5; i++) yield* env.sessions.create(root, { template: demo })
      yield* TestClock.adjust("39 seconds")
      assert.strictEqual((yield* Effect.flip(env.sessions.create(ann, { template: demo }))).retryAfterSeconds, 1)
      yield* TestClock.adjust("1 second")
      yield* env.sessions.create(ann, { template: demo })
      assert.strictEqual((yield* Effect.flip(env.sessions.create(ann, { template: demo }))).retryAfterSeconds, 20)
    }))

  it.effect("MAX_SESSIONS_PER_USER counts live sessions (placed, creating, running); a failed one frees its slot", () =>
    Effect.gen(function*() {
      const env = yield* setupConfigured({ MAX_SESSIONS_PER_USER: "2", SESSION_CREATES_PER_MINUTE: "0" })
      env.hub.addAgent("a")
      const first = yield* env.sessions.create(ann, { template: demo })
      yield* env.sessions.create(ann, { template: demo })
      const refused = yield* Effect.flip(env.sessions.create(ann, { template: demo }))
      assert.deepStrictEqual([refused.reason, refused.limit], ["LimitExceeded", "MAX_SESSIONS_PER_USER"])
      assert.include(refused.message, "MAX_SESSIONS_PER_USER=2")
      assert.strictEqual(env.dispatcher.commands.length, 2)
      yield* env.dispatcher.fail(env.dispatcher.commands[0]!.record.id, { code: "kubernetes_rejected", message: "no such image", retryable: false })
      yield* waitFor("the first failed", Effect.map(env.sessions.get(ann, first.id), (s) => s.state === "failed"))
      yield* env.sessions.create(ann, { template: demo })
    }))
})
