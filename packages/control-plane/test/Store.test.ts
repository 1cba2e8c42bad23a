// The store's behaviour, run twice: on embedded PGlite (in memory, through pglite-socket) and on a
// real PostgreSQL cluster started for this file (Debian's postgresql; the suite fails, it does not
// skip, when pg_ctl is missing). Each test uses fresh ids, so the tests share one database per run.
import { assert, layer, type Vitest } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import type { AgentId, Capacity, Command, CommandId, SessionId, SessionSpec, TemplateName, UserId } from "@streamspace/protocol"
import * as Database from "../src/Database.ts"
import { MIGRATIONS, runMigrations } from "../src/internal/store/migrations.ts"
import { Store, type StoreError } from "../src/Store.ts"
import { startPostgres } from "./support/postgres.ts"

let counter = 0
/** A fresh id, typed as whichever branded id the call needs. */
const uid = (prefix: string): never => `${prefix}-${Date.now().toString(36)}-${++counter}` as never
const capacity: Capacity = { cpu: "8000m", memory: "16Gi", max_sessions: 10 }
const spec = (f: { user: { id: UserId }; template: { name: TemplateName } }, extra: Partial<SessionSpec> = {}): SessionSpec => ({
  user_id: f.user.id,
  template: f.template.name,
  image: "img:1",
  env: { FOO_BAR: "x" },
  persistent_home: false,
  vnc_port: 5901,
  ...extra
})
/** A `command` payload with a fresh id (or `id`), due at `deadline`. */
const command = (action: "list_sessions" | "delete_session" | "create_session", deadline: Date, extra: { id?: string; sessionId?: SessionId; traceparent?: string } = {}): Command => {
  const base = { command_id: (extra.id ?? uid("cmd")) as CommandId, deadline: deadline.toISOString(), ...(extra.traceparent === undefined ? {} : { traceparent: extra.traceparent }) }
  const session_id = extra.sessionId ?? ("s-none" as SessionId)
  return action === "list_sessions"
    ? { ...base, action, args: {} }
    : action === "delete_session"
    ? { ...base, action, args: { session_id } }
    : { ...base, action, args: { session_id, spec: { user_id: "u" as UserId, template: "t" as TemplateName, image: "img:1", persistent_home: false, vnc_port: 5900 } } }
}

const reasonOf = <A>(eff: Effect.Effect<A, StoreError>) =>
  Effect.map(Effect.flip(eff), (e) => e.reason._tag)

/** A user, a template and an approved agent to hang sessions and commands on. */
const fixture = Effect.gen(function*() {
  const store = yield* Store
  const user = yield* store.users.insert({ id: uid("u"), name: "Ada", role: "user" })
  const template = yield* store.templates.insert({
    name: uid("t"),
    displayName: "T",
    image: "img:1",
    resources: { cpu: "1", memory: "1Gi" },
    vncPort: 5901
  })
  const { agent } = yield* store.agents.register({
    id: uid("a"),
    platform: "kubernetes",
    region: "eu",
    version: "1.0.0",
    capacity
  })
  return { store, user, template, agent }
})

const newSession = (f: { user: { id: UserId }; template: { name: TemplateName }; agent: { id: AgentId } }, id: SessionId = uid("s")) => ({
  id,
  userId: f.user.id,
  template: f.template.name,
  agentId: f.agent.id,
  spec: spec(f),
  region: "eu" as string | undefined
})

const suite = (it: Vitest.MethodsNonLive<Store | Database.Sql>) => {
  it.effect("runs its migrations once: a second start migrates nothing and keeps one demo template", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* runMigrations, [])
      // a whole second store over the same database starts fine (what a restart does)
      const templates = yield* Store.use((s) => s.templates.list()).pipe(Effect.provide(Store.layerNoDeps))
      assert.strictEqual(templates.filter((t) => t.name === "demo").length, 1)
      const sql = yield* SqlClient
      const recorded = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_sql_migrations`
      assert.strictEqual(recorded[0]!.n, MIGRATIONS.length)
    }))

  it.effect("audit_log: appends events with their actor and pages them newest first by cursor", () =>
    Effect.gen(function*() {
      const store = yield* Store
      const event = (id: string) => ({ actor: "root", actorRole: "admin", action: "agent.approve", targetType: "agent", targetId: id, details: { n: id } })
      yield* store.audit.insert(event("a"))
      // Several at once (group commit) are appended in their order.
      assert.deepStrictEqual((yield* store.audit.insertMany([event("b"), event("c")])).map((e) => e.targetId), ["b", "c"])
      const first = yield* store.audit.page({ limit: 2 })
      assert.deepStrictEqual(first.events.map((e) => [e.targetId, e.actor, e.details]), [["c", "root", { n: "c" }], ["b", "root", { n: "b" }]])
      assert.isDefined(first.nextCursor)
      const second = yield* store.audit.page({ limit: 2, before: first.nextCursor })
      assert.deepStrictEqual(second.events.map((e) => e.targetId), ["a"])
      assert.isUndefined(second.nextCursor)
    }))

  it.effect("seeds the demo template", () =>
    Effect.gen(function*() {
      const store = yield* Store
      const demo = yield* store.templates.get("demo")
      assert.deepStrictEqual(
        { ...demo, createdAt: undefined, updatedAt: undefined },
        {
          name: "demo",
          displayName: "Demo desktop",
          image: "streamspace/demo-desktop:latest",
          resources: { cpu: "500m", memory: "512Mi" },
          env: {},
          vncPort: 5900,
          persistentHome: false,
          sharedHome: false,
          warmPool: 0,
          clipboard: { upload: true, download: true },
          createdAt: undefined,
          updatedAt: undefined
        }
      )
      // The clipboard switches are stored; a direction left out of a change keeps its value.
      assert.deepStrictEqual((yield* store.templates.update("demo", { clipboard: { upload: false } })).clipboard, { upload: false, download: true })
      assert.deepStrictEqual((yield* store.templates.update("demo", { clipboard: { download: false } })).clipboard, { upload: false, download: false })
      assert.deepStrictEqual((yield* store.templates.get("demo")).clipboard, { upload: false, download: false })
      yield* store.templates.update("demo", { clipboard: { upload: true, download: true } })
    }))

  it.effect("users: insert, get, list, upsert; duplicate is Conflict and keeps the first; unknown is NotFound", () =>
    Effect.gen(function*() {
      const store = yield* Store
      const id = uid("user")
      const u = yield* store.users.insert({ id, name: "Grace", role: "admin" })
      assert.strictEqual(u.role, "admin")
      assert.deepStrictEqual(yield* store.users.get(id), u)
      assert.isTrue((yield* store.users.list()).some((x) => x.id === id))
      assert.strictEqual(yield* reasonOf(store.users.insert({ id, name: "Mallory", role: "user" })), "Conflict")
      assert.strictEqual((yield* store.users.get(id)).name, "Grace")
      const up = yield* store.users.upsert({ id, name: "Grace H.", role: "user" })
      assert.deepStrictEqual([up.name, up.role, up.createdAt.getTime()], ["Grace H.", "user", u.createdAt.getTime()])
      const fresh = yield* store.users.upsert({ id: uid("user"), name: "New", role: "user" })
      assert.strictEqual(fresh.name, "New")
      const err = yield* Effect.flip(store.users.get("nobody"))
      assert.strictEqual(err.reason._tag, "NotFound")
      assert.include(err.message, "nobody")
    }))

  it.effect("templates: insert with env and flags, get, list; duplicate is Conflict; unknown is NotFound", () =>
    Effect.gen(function*() {
      const store = yield* Store
      const name = uid("tpl")
      const t = yield* store.templates.insert({
        name,
        displayName: "Firefox",
        image: "ff:1",
        resources: { cpu: "2", memory: "2Gi" },
        env: { MOZ_X: "1", lower_case: "ok" },
        vncPort: 5900,
        persistentHome: true,
        sharedHome: true,
        resourceBounds: { min: { memory: "1Gi" }, max: { cpu: "4", memory: "8Gi" } }
      })
      assert.deepStrictEqual(t.env, { MOZ_X: "1", lower_case: "ok" })
      assert.deepStrictEqual(t.resourceBounds, { min: { memory: "1Gi" }, max: { cpu: "4", memory: "8Gi" } })
      assert.isTrue(t.persistentHome && t.sharedHome)
      assert.deepStrictEqual(yield* store.templates.get(name), t)
      const names: Array<string> = (yield* store.templates.list()).map((x) => x.name)
      assert.isTrue(names.includes(name) && names.includes("demo"))
      assert.strictEqual(
        yield* reasonOf(store.templates.insert({ name, displayName: "X", image: "x", resources: { cpu: "1", memory: "1" }, vncPort: 1 })),
        "Conflict"
      )
      assert.strictEqual((yield* store.templates.get(name)).image, "ff:1")
      assert.strictEqual(yield* reasonOf(store.templates.get("nope")), "NotFound")
    }))

  it.effect("templates: update changes the fields given; remove hides it, its sessions stay; a new template may take the name", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const name = f.template.name
      const s = yield* f.store.sessions.insert(newSession(f))
      const u = yield* f.store.templates.update(name, { image: "img:2", env: { A: "1" } })
      assert.deepStrictEqual([u.image, u.env, u.vncPort, u.resources, u.displayName], ["img:2", { A: "1" }, 5901, { cpu: "1", memory: "1Gi" }, "T"])
      assert.deepStrictEqual(yield* f.store.templates.get(name), u)
      // resources given replace the stored ones; a request left out gets the default, as on insert
      assert.deepStrictEqual((yield* f.store.templates.update(name, { resources: { cpu: "2" } })).resources, { cpu: "2", memory: "512Mi" })
      assert.strictEqual((yield* f.store.sessions.get(s.id)).spec.image, "img:1")
      assert.strictEqual((yield* f.store.templates.update(name, { warmPool: 3 })).warmPool, 3)
      assert.strictEqual((yield* f.store.templates.get(name)).warmPool, 3)
      yield* f.store.templates.remove(name)
      assert.strictEqual(yield* reasonOf(f.store.templates.get(name)), "NotFound")
      assert.isFalse((yield* f.store.templates.list()).some((t) => t.name === name))
      assert.strictEqual(yield* reasonOf(f.store.templates.update(name, { image: "x" })), "NotFound")
      assert.strictEqual(yield* reasonOf(f.store.templates.remove(name)), "NotFound")
      assert.strictEqual((yield* f.store.sessions.get(s.id)).template, name)
      const again = yield* f.store.templates.insert({ name, displayName: "Again", image: "img:3", vncPort: 5900 })
      assert.deepStrictEqual([again.image, again.displayName, again.env], ["img:3", "Again", {}])
      assert.strictEqual((yield* f.store.templates.get(name)).image, "img:3")
      assert.strictEqual(yield* reasonOf(f.store.templates.insert({ name, displayName: "X", image: "x", vncPort: 1 })), "Conflict")
    }))

  it.effect("homes: put inserts or replaces by agent and name (keeping the id), list filters by user and agent, remove", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const base = {
        agentId: f.agent.id,
        name: "home-x",
        userId: f.user.id,
        size: "10Gi",
        inUse: false,
        createdAt: new Date(1000),
        lastUsedAt: new Date(2000),
        reportedAt: new Date(3000),
        expiresAt: undefined
      }
      const id = uid("h")
      assert.deepStrictEqual(yield* f.store.homes.put({ ...base, id }), { ...base, id })
      const replaced = yield* f.store.homes.put({ ...base, id: uid("h"), inUse: true, expiresAt: new Date(9000) })
      assert.deepStrictEqual([replaced.id, replaced.inUse, replaced.expiresAt?.getTime()], [id, true, 9000])
      assert.deepStrictEqual((yield* f.store.homes.list({ userId: f.user.id })).map((h) => h.id), [id])
      assert.deepStrictEqual((yield* f.store.homes.list({ agentId: f.agent.id })).map((h) => h.id), [id])
      assert.deepStrictEqual(yield* f.store.homes.list({ userId: "nobody" }), [])
      yield* f.store.homes.remove(id)
      assert.deepStrictEqual(yield* f.store.homes.list({ agentId: f.agent.id }), [])
    }))

  it.effect("agents: register inserts pending, re-register updates metadata only; heartbeat, status, draining", () =>
    Effect.gen(function*() {
      const store = yield* Store
      const id = uid("agent")
      const first = yield* store.agents.register({ id, platform: "kubernetes", region: "eu", version: "1.0.0", capacity })
      assert.isTrue(first.created)
      assert.deepStrictEqual(
        [first.agent.enrollment, first.agent.status, first.agent.credentialHash, first.agent.draining, first.agent.activeSessions],
        ["pending", "online", undefined, false, 0]
      )
      assert.deepStrictEqual(first.agent.capacity, capacity)
      assert.isDefined(first.agent.lastHeartbeat)
      yield* store.agents.approve(id, "hash-1")
      const again = yield* store.agents.register({
        id,
        platform: "kubernetes",
        region: "us",
        version: "1.1.0",
        capacity: { ...capacity, max_sessions: 3 },
        status: "warning",
        activeSessions: 2
      })
      assert.isFalse(again.created)
      assert.deepStrictEqual(
        [again.agent.region, again.agent.version, again.agent.capacity.max_sessions, again.agent.status, again.agent.activeSessions],
        ["us", "1.1.0", 3, "warning", 2]
      )
      assert.deepStrictEqual([again.agent.enrollment, again.agent.credentialHash], ["approved", "hash-1"])

      const hb = yield* store.agents.heartbeat(id, { status: "online", activeSessions: 5 })
      assert.deepStrictEqual([hb.status, hb.activeSessions, hb.capacity.max_sessions], ["online", 5, 3])
      const hb2 = yield* store.agents.heartbeat(id, { status: "error", activeSessions: 0, capacity })
      assert.deepStrictEqual([hb2.status, hb2.capacity], ["error", capacity])
      assert.isTrue(hb2.lastHeartbeat!.getTime() >= hb.lastHeartbeat!.getTime())
      assert.strictEqual((yield* store.agents.setStatus(id, "offline")).status, "offline")
      assert.isTrue((yield* store.agents.setDraining(id, true)).draining)
      assert.isFalse((yield* store.agents.setDraining(id, false)).draining)
      assert.isTrue((yield* store.agents.list()).some((a) => a.id === id))
      assert.deepStrictEqual(yield* store.agents.get(id), yield* store.agents.get(id))

      for (
        const op of [
          store.agents.get("ghost"),
          store.agents.heartbeat("ghost", { status: "online", activeSessions: 0 }),
          store.agents.setStatus("ghost", "offline"),
          store.agents.setDraining("ghost", true),
          store.agents.approve("ghost", "h"),
          store.agents.reject("ghost"),
          store.agents.revoke("ghost"),
          store.agents.rotateCredential("ghost", "h", new Date())
        ]
      ) {
        assert.strictEqual(yield* reasonOf(op), "NotFound")
      }
    }))

  it.effect("agents: enrolment moves approve/reject/revoke/rotate, with Conflict for the wrong state", () =>
    Effect.gen(function*() {
      const store = yield* Store
      const reg = (id: AgentId) => store.agents.register({ id, platform: "kubernetes", region: "eu", version: "1", capacity })

      const a = uid("agent")
      yield* reg(a)
      assert.strictEqual(yield* reasonOf(store.agents.rotateCredential(a, "h2", new Date())), "Conflict")
      const approved = yield* store.agents.approve(a, "h1")
      assert.deepStrictEqual([approved.enrollment, approved.credentialHash], ["approved", "h1"])
      assert.isDefined(approved.enrollmentChangedAt)
      const conflict = yield* Effect.flip(store.agents.approve(a, "hX"))
      assert.strictEqual(conflict.reason._tag, "Conflict")
      assert.include(conflict.message, "approved")
      assert.strictEqual((yield* store.agents.get(a)).credentialHash, "h1")
      assert.strictEqual(yield* reasonOf(store.agents.reject(a)), "Conflict")

      const until = new Date(Date.now() + 60_000)
      const rotated = yield* store.agents.rotateCredential(a, "h2", until)
      assert.deepStrictEqual(
        [rotated.credentialHash, rotated.previousCredentialHash, rotated.previousCredentialExpiresAt?.getTime()],
        ["h2", "h1", until.getTime()]
      )
      const revoked = yield* store.agents.revoke(a)
      assert.deepStrictEqual(
        [revoked.enrollment, revoked.credentialHash, revoked.previousCredentialHash, revoked.previousCredentialExpiresAt],
        ["revoked", undefined, undefined, undefined]
      )
      assert.strictEqual(yield* reasonOf(store.agents.revoke(a)), "Conflict")
      const reapproved = yield* store.agents.approve(a, "h3")
      assert.deepStrictEqual([reapproved.enrollment, reapproved.credentialHash, reapproved.previousCredentialHash], [
        "approved",
        "h3",
        undefined
      ])

      const b = uid("agent")
      yield* reg(b)
      assert.strictEqual((yield* store.agents.reject(b)).enrollment, "rejected")
      assert.strictEqual(yield* reasonOf(store.agents.reject(b)), "Conflict")
      assert.strictEqual(yield* reasonOf(store.agents.revoke(b)), "Conflict")
      assert.strictEqual((yield* store.agents.approve(b, "hb")).enrollment, "approved")

      const c = uid("agent")
      yield* reg(c)
      assert.strictEqual((yield* store.agents.revoke(c)).enrollment, "revoked")
    }))

  it.effect("sessions: insert writes pending + history; missing references are NotFound and store nothing", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const input = newSession(f)
      const s = yield* store.sessions.insert(input)
      assert.deepStrictEqual(
        [s.state, s.userId, s.template, s.agentId, s.region, s.reason, s.message],
        ["pending", f.user.id, f.template.name, f.agent.id, "eu", undefined, undefined]
      )
      assert.deepStrictEqual(s.spec, input.spec)
      assert.deepStrictEqual(yield* store.sessions.get(s.id), s)
      const history = yield* store.sessions.history(s.id)
      assert.deepStrictEqual(history.map((h) => h.state), ["pending"])

      assert.strictEqual(yield* reasonOf(store.sessions.insert({ ...input, spec: spec(f, { image: "other:2" }) })), "Conflict")
      assert.deepStrictEqual((yield* store.sessions.get(s.id)).spec, input.spec)
      assert.strictEqual((yield* store.sessions.history(s.id)).length, 1)

      for (
        const [bad, entity] of [
          [{ ...newSession(f), userId: "nobody" as UserId }, "user"],
          [{ ...newSession(f), template: "no-such-template" as TemplateName }, "template"],
          [{ ...newSession(f), agentId: "no-such-agent" as AgentId }, "agent"]
        ] as const
      ) {
        const e = yield* Effect.flip(store.sessions.insert(bad))
        assert.strictEqual(e.reason._tag, "NotFound")
        assert.strictEqual(e.reason._tag === "NotFound" && e.reason.entity, entity)
        assert.strictEqual(yield* reasonOf(store.sessions.get(bad.id)), "NotFound")
      }
      const anywhere = yield* store.sessions.insert({ ...newSession(f), region: undefined })
      assert.deepStrictEqual([anywhere.agentId, anywhere.region, anywhere.createCommandId, anywhere.deleteCommandId], [f.agent.id, undefined, undefined, undefined])
      assert.strictEqual(yield* reasonOf(store.sessions.get("missing")), "NotFound")
      assert.strictEqual(yield* reasonOf(store.sessions.history("missing")), "NotFound")
    }))

  it.effect("sessions and commands: insertMany writes several in one statement, each as insert does, or none of them", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const [a, b] = [newSession(f), { ...newSession(f), region: undefined }]
      const written = yield* store.sessions.insertMany([{ session: a, actor: `user:${f.user.id}` }, { session: b }])
      assert.deepStrictEqual(written.map((s) => [s.id, s.state, s.region]), [[a.id, "pending", "eu"], [b.id, "pending", undefined]])
      for (const s of written) assert.deepStrictEqual(yield* store.sessions.get(s.id), s)
      assert.deepStrictEqual((yield* store.sessions.history(a.id)).map((h) => [h.state, h.actor]), [["pending", `user:${f.user.id}`]])
      assert.deepStrictEqual((yield* store.sessions.history(b.id)).map((h) => [h.state, h.actor]), [["pending", undefined]])
      // One bad row (an unknown agent) fails the statement: nothing of it is stored.
      const [c, bad] = [newSession(f), { ...newSession(f), agentId: "no-such-agent" as AgentId }]
      yield* Effect.flip(store.sessions.insertMany([{ session: c }, { session: bad }]))
      assert.strictEqual(yield* reasonOf(store.sessions.get(c.id)), "NotFound")

      const deadline = new Date(Date.now() + 60_000)
      const cs = [
        { agentId: f.agent.id, sessionId: a.id, command: command("create_session", deadline, { sessionId: a.id }) },
        { agentId: f.agent.id, command: command("list_sessions", deadline) }
      ] as const
      const commands = yield* store.commands.insertMany(cs)
      assert.deepStrictEqual(commands.map((c) => [c.id, c.state, c.attempts, c.sessionId]), [[cs[0].command.command_id, "pending", 0, a.id], [cs[1].command.command_id, "pending", 0, undefined]])
      for (const c of commands) assert.deepStrictEqual(yield* store.commands.get(c.id), c)
      assert.strictEqual((yield* store.sessions.get(a.id)).createCommandId, cs[0].command.command_id)
      // Moved together, each guarded as transition is: the second time nothing moves.
      const ids = [commands[0]!.id, commands[1]!.id] as const
      const sent = yield* store.commands.transitionMany(ids, "sent")
      assert.deepStrictEqual(sent.map((t) => [t.changed, t.row.state, t.row.attempts, t.row.sentAt !== undefined]), [[true, "sent", 1, true], [true, "sent", 1, true]])
      assert.deepStrictEqual(yield* store.commands.get(ids[0]), sent[0]!.row)
      yield* store.commands.transition(ids[1], "completed", { result: { action: "list_sessions", sessions: [] } })
      // Completions together, each with its own result, guarded the same way.
      const [x, y] = yield* store.commands.insertMany([
        { agentId: f.agent.id, command: command("list_sessions", deadline) },
        { agentId: f.agent.id, command: command("list_sessions", deadline) }
      ])
      yield* store.commands.transition(y!.id, "failed", { error: { code: "timeout", message: "late", retryable: true } })
      const done = yield* store.commands.completeMany([
        { id: x!.id, result: { action: "list_sessions", sessions: [] } },
        { id: y!.id, result: { action: "list_sessions", sessions: [] } }
      ])
      assert.deepStrictEqual(done.map((t) => [t.changed, t.row.state, t.row.result]), [[true, "completed", { action: "list_sessions", sessions: [] }], [false, "failed", undefined]])
      assert.deepStrictEqual(yield* store.commands.get(x!.id), done[0]!.row)
      const again = yield* store.commands.transitionMany(ids, "ack")
      assert.deepStrictEqual(again.map((t) => [t.changed, t.row.state]), [[true, "ack"], [false, "completed"]])
      assert.deepStrictEqual((yield* store.commands.transitionMany(ids, "sent")).map((t) => [t.changed, t.row.state, t.row.attempts]), [[false, "ack", 1], [false, "completed", 1]])
      const lone = { agentId: f.agent.id, command: command("list_sessions", deadline) }
      yield* Effect.flip(store.commands.insertMany([lone, { agentId: "ghost" as AgentId, command: command("list_sessions", deadline) }]))
      assert.strictEqual(yield* reasonOf(store.commands.get(lone.command.command_id)), "NotFound")
    }))

  it.effect("sessions: transitions only move forward and append history in order", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const s = yield* store.sessions.insert(newSession(f))
      const t1 = yield* store.sessions.transition(s.id, "creating")
      assert.isTrue(t1.changed)
      assert.strictEqual(t1.row.state, "creating")
      const again = yield* store.sessions.transition(s.id, "creating", { reason: "Dup" })
      assert.isFalse(again.changed)
      assert.strictEqual(again.row.reason, undefined)
      assert.isTrue((yield* store.sessions.transition(s.id, "running", { reason: "PodReady", message: "up" })).changed)
      const back = yield* store.sessions.transition(s.id, "creating")
      assert.deepStrictEqual([back.changed, back.row.state], [false, "running"])
      assert.isTrue((yield* store.sessions.transition(s.id, "terminating")).changed)
      const done = yield* store.sessions.transition(s.id, "terminated", { reason: "Deleted" })
      assert.deepStrictEqual([done.changed, done.row.state, done.row.reason], [true, "terminated", "Deleted"])
      for (const to of ["running", "failed", "terminating", "terminated"] as const) {
        assert.isFalse((yield* store.sessions.transition(s.id, to)).changed)
      }
      const history = yield* store.sessions.history(s.id)
      assert.deepStrictEqual(
        history.map((h) => [h.sessionId, h.state, h.reason, h.message]),
        [
          [s.id, "pending", undefined, undefined],
          [s.id, "creating", undefined, undefined],
          [s.id, "running", "PodReady", "up"],
          [s.id, "terminating", undefined, undefined],
          [s.id, "terminated", "Deleted", undefined]
        ]
      )
      for (let i = 1; i < history.length; i++) assert.isTrue(history[i]!.at >= history[i - 1]!.at)

      // skipping ahead is allowed; failed is final
      const s2 = yield* store.sessions.insert(newSession(f))
      assert.isTrue((yield* store.sessions.transition(s2.id, "running")).changed)
      const failed = yield* store.sessions.transition(s2.id, "failed", { reason: "CrashLoopBackOff", message: "boom" })
      assert.deepStrictEqual([failed.row.state, failed.row.reason, failed.row.message], ["failed", "CrashLoopBackOff", "boom"])
      assert.isFalse((yield* store.sessions.transition(s2.id, "terminated")).changed)
      assert.deepStrictEqual((yield* store.sessions.history(s2.id)).map((h) => h.state), ["pending", "running", "failed"])
      assert.strictEqual(yield* reasonOf(store.sessions.transition("missing", "running")), "NotFound")
    }))

  it.effect("sessions: hibernation is the one loop back: running -> hibernating -> hibernated -> creating", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const s = yield* store.sessions.insert(newSession(f))
      yield* store.sessions.transition(s.id, "running")
      const active = (yield* store.sessions.countActiveByAgent()).get(f.agent.id) ?? 0
      // not from hibernated straight back to running, nor hibernated without hibernating
      assert.isFalse((yield* store.sessions.transition(s.id, "hibernated")).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "hibernating", { reason: "idle_timeout" })).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "hibernated", { reason: "idle_timeout" })).changed)
      assert.isFalse((yield* store.sessions.transition(s.id, "running")).changed)
      assert.strictEqual((yield* store.sessions.countActiveByAgent()).get(f.agent.id) ?? 0, active - 1, "a hibernated session is not active")
      assert.isTrue((yield* store.sessions.transition(s.id, "creating", { reason: "resuming" })).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "running")).changed)
      // a failed hibernate goes back to running; a hibernated session can be deleted
      assert.isTrue((yield* store.sessions.transition(s.id, "hibernating")).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "running", { reason: "hibernate_failed" })).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "hibernating")).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "hibernated")).changed)
      assert.isTrue((yield* store.sessions.transition(s.id, "terminated", { reason: "deleted" })).changed)
      assert.deepStrictEqual(
        (yield* store.sessions.history(s.id)).map((h) => h.state),
        ["pending", "running", "hibernating", "hibernated", "creating", "running", "hibernating", "running", "hibernating", "hibernated", "terminated"]
      )
    }))

  it.effect("sessions: list filters by user, agent and states; countActiveByAgent ignores finished ones", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const other = yield* store.users.insert({ id: uid("u"), name: "Other", role: "user" })
      const a = yield* store.sessions.insert(newSession(f))
      const b = yield* store.sessions.insert(newSession(f))
      const c = yield* store.sessions.insert({ ...newSession(f), userId: other.id })
      yield* store.sessions.transition(b.id, "running")
      yield* store.sessions.transition(c.id, "terminated")

      const ids = (xs: ReadonlyArray<{ id: string }>) => xs.map((x) => x.id)
      assert.deepStrictEqual(ids(yield* store.sessions.list({ userId: f.user.id })), [a.id, b.id])
      assert.deepStrictEqual(ids(yield* store.sessions.list({ agentId: f.agent.id })), [a.id, b.id, c.id])
      assert.deepStrictEqual(ids(yield* store.sessions.list({ agentId: f.agent.id, states: ["running", "terminated"] })), [
        b.id,
        c.id
      ])
      assert.deepStrictEqual(ids(yield* store.sessions.list({ agentId: f.agent.id, states: [] })), [])
      const all = ids(yield* store.sessions.list())
      assert.isTrue([a.id, b.id, c.id].every((id) => all.includes(id)))
      assert.strictEqual((yield* store.sessions.countActiveByAgent()).get(f.agent.id), 2)
    }))

  it.effect("commands: insert, forward-only transitions with timestamps, results and errors", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const s = yield* store.sessions.insert(newSession(f))
      const deadline = new Date(Date.now() + 30_000)
      const sent_ = command("create_session", deadline, { sessionId: s.id, traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" })
      const c = yield* store.commands.insert({ agentId: f.agent.id, sessionId: s.id, command: sent_ })
      assert.deepStrictEqual(
        [c.state, c.attempts, c.sentAt, c.ackedAt, c.completedAt, c.failedAt, c.result, c.error],
        ["pending", 0, undefined, undefined, undefined, undefined, undefined, undefined]
      )
      assert.strictEqual(c.deadline.getTime(), deadline.getTime())
      // read back exactly as it is sent (and re-sent) to the agent
      assert.deepStrictEqual(c.command, sent_)
      assert.deepStrictEqual([c.id, c.action, c.sessionId], [sent_.command_id, "create_session", s.id])
      assert.deepStrictEqual(yield* store.commands.get(c.id), c)

      assert.isFalse((yield* store.commands.resend(c.id)).changed) // never sent yet
      const sent = yield* store.commands.transition(c.id, "sent")
      assert.deepStrictEqual([sent.changed, sent.row.state, sent.row.attempts], [true, "sent", 1])
      assert.isDefined(sent.row.sentAt)
      assert.isFalse((yield* store.commands.transition(c.id, "sent")).changed)
      const resent = yield* store.commands.resend(c.id)
      assert.deepStrictEqual([resent.changed, resent.row.state, resent.row.attempts], [true, "sent", 2])
      const ack = yield* store.commands.transition(c.id, "ack")
      assert.deepStrictEqual([ack.changed, ack.row.state], [true, "ack"])
      assert.isDefined(ack.row.ackedAt)
      assert.isFalse((yield* store.commands.transition(c.id, "sent")).changed)
      const result = { action: "create_session", session: { session_id: s.id, phase: "running", observed_at: "2026-01-01T00:00:00.000Z" } } as const
      const done = yield* store.commands.transition(c.id, "completed", { result })
      assert.deepStrictEqual([done.changed, done.row.state, done.row.result, done.row.error], [true, "completed", result, undefined])
      assert.isDefined(done.row.completedAt)
      const late = yield* store.commands.transition(c.id, "failed", { error: { code: "timeout", message: "late", retryable: true } })
      assert.deepStrictEqual([late.changed, late.row.state, late.row.error], [false, "completed", undefined])
      assert.isFalse((yield* store.commands.transition(c.id, "ack")).changed)
      assert.isFalse((yield* store.commands.resend(c.id)).changed)

      // pending -> failed directly (e.g. deadline passed before sending), error kept as given
      const c2 = yield* store.commands.insert({ agentId: f.agent.id, command: command("list_sessions", deadline) })
      assert.deepStrictEqual([c2.sessionId, c2.command.traceparent], [undefined, undefined])
      const error = { code: "timeout", message: "no answer in 30s", retryable: true } as const
      const failed = yield* store.commands.transition(c2.id, "failed", { error })
      assert.deepStrictEqual([failed.changed, failed.row.state, failed.row.error, failed.row.attempts], [true, "failed", error, 0])
      assert.isDefined(failed.row.failedAt)
      assert.isFalse((yield* store.commands.transition(c2.id, "completed", { result: { action: "list_sessions", sessions: [] } })).changed)

      assert.deepStrictEqual((yield* store.commands.listBySession(s.id)).map((x) => x.id), [c.id])
      assert.strictEqual(yield* reasonOf(store.commands.get("missing")), "NotFound")
      assert.strictEqual(yield* reasonOf(store.commands.transition("missing", "ack")), "NotFound")
      assert.strictEqual(yield* reasonOf(store.commands.resend("missing")), "NotFound")
    }))

  it.effect("commands: duplicate is Conflict, unknown agent or session is NotFound, stored data intact", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const deadlineAt = new Date(Date.now() + 1000)
      const c = yield* store.commands.insert({ agentId: f.agent.id, command: command("list_sessions", deadlineAt) })
      assert.strictEqual(
        yield* reasonOf(store.commands.insert({ agentId: f.agent.id, command: command("delete_session", deadlineAt, { id: c.id }) })),
        "Conflict"
      )
      assert.deepStrictEqual(yield* store.commands.get(c.id), c)
      const noAgent = { agentId: "ghost" as AgentId, command: command("list_sessions", deadlineAt) }
      assert.strictEqual(yield* reasonOf(store.commands.insert(noAgent)), "NotFound")
      const noSession = { agentId: f.agent.id, sessionId: "ghost" as SessionId, command: command("delete_session", deadlineAt) }
      assert.strictEqual(yield* reasonOf(store.commands.insert(noSession)), "NotFound")
      assert.strictEqual(yield* reasonOf(store.commands.get(noAgent.command.command_id)), "NotFound")
      assert.strictEqual(yield* reasonOf(store.commands.get(noSession.command.command_id)), "NotFound")
    }))

  it.effect("commands: listUnfinished returns pending, sent and ack ones, per agent or all, oldest first", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const { agent: other } = yield* store.agents.register({ id: uid("a"), platform: "kubernetes", region: "us", version: "1", capacity })
      const deadlineAt = new Date(Date.now() + 1000)
      const mk = (agentId: AgentId) =>
        store.commands.insert({ agentId, command: command("list_sessions", deadlineAt) }).pipe(
          Effect.tap(() => Effect.sleep("2 millis")) // distinct created_at
        )
      const pending = yield* mk(f.agent.id)
      const sent = yield* mk(f.agent.id)
      const acked = yield* mk(f.agent.id)
      const completed = yield* mk(f.agent.id)
      const failed = yield* mk(f.agent.id)
      const elsewhere = yield* mk(other.id)
      yield* store.commands.transition(sent.id, "sent")
      yield* store.commands.transition(acked.id, "ack")
      yield* store.commands.transition(completed.id, "completed", { result: { action: "list_sessions", sessions: [] } })
      yield* store.commands.transition(failed.id, "failed", { error: { code: "internal", message: "x", retryable: false } })

      const mine = yield* store.commands.listUnfinished(f.agent.id)
      assert.deepStrictEqual(mine.map((c) => [c.id, c.state]), [[pending.id, "pending"], [sent.id, "sent"], [acked.id, "ack"]])
      const all = (yield* store.commands.listUnfinished()).map((c) => c.id)
      assert.isTrue([pending.id, sent.id, acked.id, elsewhere.id].every((id) => all.includes(id)))
      assert.isFalse(all.includes(completed.id) || all.includes(failed.id))
    }))

  it.effect("withTransaction: a failure rolls back every write inside it", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const s = newSession(f)
      const cmdId = uid("cmd")
      const failure = yield* store.withTransaction(Effect.gen(function*() {
        yield* store.sessions.insert(s)
        yield* store.commands.insert({ agentId: f.agent.id, sessionId: s.id, command: command("create_session", new Date(), { id: cmdId, sessionId: s.id }) })
        return yield* Effect.fail("placement changed its mind" as const)
      })).pipe(Effect.flip)
      assert.strictEqual(failure, "placement changed its mind")
      assert.strictEqual(yield* reasonOf(store.sessions.get(s.id)), "NotFound")
      assert.strictEqual(yield* reasonOf(store.commands.get(cmdId)), "NotFound")

      const ok = yield* store.withTransaction(Effect.gen(function*() {
        const session = yield* store.sessions.insert(s)
        // a nested transaction (sessions.transition) inside the outer one
        yield* store.sessions.transition(s.id, "creating")
        const cmd = yield* store.commands.insert({ agentId: f.agent.id, sessionId: s.id, command: command("create_session", new Date(), { id: cmdId, sessionId: s.id }) })
        return [session.id, cmd.id]
      }))
      assert.deepStrictEqual(ok, [s.id, cmdId])
      assert.strictEqual((yield* store.sessions.get(s.id)).state, "creating")
      assert.deepStrictEqual((yield* store.sessions.history(s.id)).map((h) => h.state), ["pending", "creating"])
    }))

  it.effect("an interrupted transaction rolls back and frees the connection", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const s = newSession(f)
      const outcome = yield* store.withTransaction(Effect.gen(function*() {
        yield* store.sessions.insert(s)
        return yield* Effect.never
      })).pipe(Effect.timeout("300 millis"), Effect.flip)
      assert.strictEqual(outcome._tag, "TimeoutError")
      // on PGlite this would hang if the one connection were still inside the transaction
      assert.strictEqual(yield* reasonOf(store.sessions.get(s.id)), "NotFound")
      assert.strictEqual((yield* store.sessions.insert(s)).state, "pending")
    }).pipe(Effect.timeout("30 seconds")))

  it.effect("concurrent writes do not deadlock: 50 parallel inserts, transitions and transactions", () =>
    Effect.gen(function*() {
      const f = yield* fixture
      const { store } = f
      const ids = Array.from({ length: 50 }, () => uid("s"))
      yield* Effect.forEach(ids, (id) => store.sessions.insert(newSession(f, id)), { concurrency: "unbounded" })
      // each fiber races the others through a transaction (transition + history) and plain writes
      yield* Effect.forEach(
        ids,
        (id, i) =>
          Effect.all([
            store.sessions.transition(id, i % 2 === 0 ? "running" : "failed"),
            store.commands.insert({ agentId: f.agent.id, sessionId: id, command: command("delete_session", new Date(), { id: `c-${id}`, sessionId: id }) }),
            store.agents.heartbeat(f.agent.id, { status: "online", activeSessions: i })
          ], { concurrency: "unbounded" }),
        { concurrency: "unbounded" }
      )
      // the same command transitioned by 50 fibers at once: exactly one wins
      const wins = yield* Effect.forEach(ids, () => store.commands.transition(`c-${ids[0]}`, "sent"), { concurrency: "unbounded" })
      assert.strictEqual(wins.filter((w) => w.changed).length, 1)
      assert.strictEqual((yield* store.commands.get(`c-${ids[0]}`)).attempts, 1)
      const listed = yield* store.sessions.list({ agentId: f.agent.id })
      assert.strictEqual(listed.length, 50)
      assert.strictEqual(listed.filter((s) => s.state === "running").length, 25)
      for (const id of ids.slice(0, 5)) assert.strictEqual((yield* store.sessions.history(id)).length, 2)
      // a duplicate burst: one insert wins, the rest are Conflict, nothing is corrupted
      const dupId = uid("s")
      const results = yield* Effect.forEach(
        Array.from({ length: 20 }),
        () => Effect.result(store.sessions.insert(newSession(f, dupId))),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(results.filter((r) => r._tag === "Success").length, 1)
      assert.strictEqual((yield* store.sessions.history(dupId)).length, 1)
    }).pipe(Effect.timeout("60 seconds")), 90_000)
}

const timeout = "240 seconds"

layer(Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerMemory)), { timeout, excludeTestServices: true })(
  "Store on PGlite (in memory, over pglite-socket)",
  suite
)

const postgres = Layer.unwrap(
  Effect.gen(function*() {
    const server = yield* startPostgres
    const url = server.createDatabase("store_test")
    return Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerPostgres({ url })))
  })
)

layer(postgres, { timeout, excludeTestServices: true })("Store on a real PostgreSQL (pg_ctl cluster)", suite)
