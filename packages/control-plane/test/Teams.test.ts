// Teams (issue 18) through the real control plane: the admin API over HTTP, the store on embedded PGlite, a fake
// agent over a real WebSocket, users' JWTs carrying a `groups` claim. Quotas at the boundary under concurrent creates.
import { assert, describe, it } from "@effect/vitest"
import type { AgentId, UserId } from "@streamspace/protocol"
import { waitFor } from "@streamspace/testbed"
import { Context, Effect, Layer } from "effect"
import { AgentHub } from "../src/AgentHub.ts"
import { ControlPlane } from "../src/ControlPlane.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { Store } from "../src/Store.ts"
import { BOOTSTRAP, connectAndHello, enrol } from "./support/fakeAgent.ts"
import { sign, TEST_JWT_SECRET } from "./support/jwt.ts"

const start = Effect.gen(function*() {
  const layer = ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromRecord({
    HOST: "127.0.0.1", PORT: "0", DATABASE_IN_MEMORY: "true", JWT_SECRET: TEST_JWT_SECRET, AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP,
    PING_INTERVAL: "1h", LOG_LEVEL: "error", MAX_SESSIONS_PER_USER: "0", SESSION_CREATES_PER_MINUTE: "0"
  })))
  const ctx = yield* Layer.build(layer)
  const cp = Context.get(ctx, ControlPlane)
  const hub = Context.get(ctx, AgentHub)
  const store = Context.get(ctx, Store)
  const wsUrl = `${cp.url.replace(/^http/, "ws")}/api/v1/agent/connect`
  /** An approved agent in `region`, connected. */
  const agent = (id: string, region: string) =>
    Effect.gen(function*() {
      const credential = yield* enrol({ hub, url: wsUrl }, id)
      return (yield* connectAndHello(wsUrl, credential, id, { region, capacity: { cpu: "64", memory: "256Gi", max_sessions: 100 } })).agent
    })
  const token = (sub: string, groups?: ReadonlyArray<string>, role = "user") =>
    Effect.promise(() => sign({ sub, role, ...(groups === undefined ? {} : { groups: [...groups] }) }))
  const admin = yield* token("root", undefined, "admin")
  const call = (method: string, path: string, tok: string, body?: unknown) =>
    Effect.promise(async () => {
      const res = await fetch(`${cp.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${tok}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
      const text = await res.text()
      let json: any
      try {
        json = JSON.parse(text)
      } catch {}
      return { status: res.status, json, text }
    })
  return { cp, hub, store, agent, token, admin, call }
})

type T = Effect.Success<typeof start>

const createTeam = (t: T, body: unknown) =>
  Effect.map(t.call("POST", "/api/v1/teams", t.admin, body), (r) => {
    assert.strictEqual(r.status, 201, r.text)
    return r.json
  })

/** Fires all creates at once; the statuses and bodies in order. */
const createAll = (t: T, requests: ReadonlyArray<readonly [string, unknown]>) =>
  Effect.all(requests.map(([tok, body]) => t.call("POST", "/api/v1/sessions", tok, body)), { concurrency: "unbounded" })

describe("teams API", () => {
  it.live("admins create, list in pages, get, patch and delete teams; bad input is a 400 naming the field", () =>
    Effect.gen(function*() {
      const t = yield* start
      const created = yield* createTeam(t, { name: "research", group: "grp-research", quota: { max_sessions: 5, cpu: "4", memory: "8Gi", storage: "100Gi" }, templates: ["demo"], regions: ["eu-west"] })
      assert.deepStrictEqual(
        { name: created.name, group: created.group, quota: created.quota, templates: created.templates, regions: created.regions },
        { name: "research", group: "grp-research", quota: { max_sessions: 5, cpu: "4", memory: "8Gi", storage: "100Gi" }, templates: ["demo"], regions: ["eu-west"] }
      )
      yield* createTeam(t, { name: "art", group: "grp-art" })
      const dup = yield* t.call("POST", "/api/v1/teams", t.admin, { name: "art", group: "x" })
      assert.deepStrictEqual([dup.status, dup.json.error.code], [409, "conflict"])

      const bad: ReadonlyArray<readonly [unknown, string]> = [
        [{ name: "Bad_Name", group: "g" }, "name"],
        [{ name: "none", group: "g" }, "reserved"],
        [{ name: "x" }, "group"],
        [{ name: "x", group: "" }, "group must not be empty"],
        [{ name: "x", group: "g", quota: { cpu: "lots" } }, "cpu"],
        [{ name: "x", group: "g", quota: { max_sessions: -1 } }, "max_sessions"],
        [{ name: "x", group: "g", quota: { max_sessions: 1.5 } }, "max_sessions"],
        [{ name: "x", group: "g", quota: { storage: "10 GB" } }, "storage"],
        [{ name: "x", group: "g", quota: { gpus: 1 } }, "gpus"],
        [{ name: "x", group: "g", templates: ["no-such-template"] }, "templates: no template named \"no-such-template\""],
        [{ name: "x", group: "g", regions: ["a", "a"] }, "regions must not repeat"]
      ]
      for (const [body, field] of bad) {
        const r = yield* t.call("POST", "/api/v1/teams", t.admin, body)
        assert.strictEqual(r.status, 400, JSON.stringify(body))
        assert.strictEqual(r.json.error.code, "invalid_request")
        assert.include(r.json.error.message, field, JSON.stringify(body))
      }

      const user = yield* t.token("ann", ["grp-research"])
      assert.strictEqual((yield* t.call("GET", "/api/v1/teams", user)).status, 403)
      assert.strictEqual((yield* t.call("POST", "/api/v1/teams", user, { name: "mine", group: "g" })).status, 403)

      const page1 = yield* t.call("GET", "/api/v1/teams?limit=1", t.admin)
      assert.deepStrictEqual(page1.json.teams.map((x: any) => x.name), ["art"])
      const page2 = yield* t.call("GET", `/api/v1/teams?limit=1&cursor=${page1.json.next_cursor}`, t.admin)
      assert.deepStrictEqual([page2.json.teams.map((x: any) => x.name), page2.json.next_cursor], [["research"], null])

      const patched = yield* t.call("PATCH", "/api/v1/teams/research", t.admin, { quota: { max_sessions: 2 }, templates: null })
      assert.strictEqual(patched.status, 200, patched.text)
      assert.deepStrictEqual([patched.json.quota, patched.json.templates, patched.json.regions, patched.json.group], [
        { max_sessions: 2, cpu: null, memory: null, storage: null }, null, ["eu-west"], "grp-research"
      ])
      assert.strictEqual((yield* t.call("PATCH", "/api/v1/teams/research", t.admin, { name: "renamed" })).status, 400)
      assert.strictEqual((yield* t.call("PATCH", "/api/v1/teams/nobody", t.admin, { group: "g" })).status, 404)
      assert.deepStrictEqual((yield* t.call("GET", "/api/v1/teams/research", t.admin)).json.quota.max_sessions, 2)
      assert.strictEqual((yield* t.call("DELETE", "/api/v1/teams/research", t.admin)).status, 204)
      assert.strictEqual((yield* t.call("GET", "/api/v1/teams/research", t.admin)).status, 404)
      assert.strictEqual((yield* t.call("DELETE", "/api/v1/teams/research", t.admin)).status, 404)
      const audit = yield* t.call("GET", "/api/v1/audit", t.admin)
      assert.includeMembers(audit.json.events.map((e: any) => e.action), ["team.create", "team.update", "team.delete"])
    }), { timeout: 120_000 })
})

describe("team quotas", () => {
  it.live("20 concurrent creates against a quota of 5 sessions: exactly 5 succeed, the rest are refused naming the team and quota", () =>
    Effect.gen(function*() {
      const t = yield* start
      yield* t.agent("a1", "eu-west")
      yield* createTeam(t, { name: "five", group: "g5", quota: { max_sessions: 5 } })
      const tokens = yield* Effect.all(Array.from({ length: 20 }, (_, i) => t.token(`u${i}`, ["g5"])))
      const results = yield* createAll(t, tokens.map((tok) => [tok, { template: "demo" }] as const))
      const ok = results.filter((r) => r.status === 201)
      const refused = results.filter((r) => r.status !== 201)
      assert.strictEqual(ok.length, 5)
      for (const r of ok) assert.strictEqual(r.json.team, "five")
      for (const r of refused) {
        assert.deepStrictEqual([r.status, r.json.error.code, r.json.error.team, r.json.error.quota], [429, "quota_exceeded", "five", "max_sessions"])
        assert.include(r.json.error.message, "team \"five\" is at its quota of 5 sessions")
      }
      // The record says who pays.
      const listed = yield* t.call("GET", "/api/v1/sessions", t.admin)
      assert.deepStrictEqual(listed.json.sessions.map((s: any) => s.team), Array(5).fill("five"))
      // Raising the quota by one lets exactly one more in.
      yield* t.call("PATCH", "/api/v1/teams/five", t.admin, { quota: { max_sessions: 6 } })
      const again = yield* createAll(t, tokens.slice(0, 3).map((tok) => [tok, { template: "demo" }] as const))
      assert.deepStrictEqual(again.map((r) => r.status).sort(), [201, 429, 429])
    }), { timeout: 120_000 })

  it.live("20 concurrent creates of 500m against a CPU quota of 2: exactly 4 succeed; then memory is the limit", () =>
    Effect.gen(function*() {
      const t = yield* start
      yield* t.agent("a1", "eu-west")
      yield* createTeam(t, { name: "cpu", group: "gc", quota: { cpu: "2", memory: "3Gi" } })
      const tokens = yield* Effect.all(Array.from({ length: 20 }, (_, i) => t.token(`c${i}`, ["gc"])))
      const results = yield* createAll(t, tokens.map((tok) => [tok, { template: "demo", resources: { cpu: "500m", memory: "512Mi" } }] as const))
      assert.strictEqual(results.filter((r) => r.status === 201).length, 4)
      for (const r of results.filter((r) => r.status !== 201)) {
        assert.deepStrictEqual([r.status, r.json.error.code, r.json.error.quota], [429, "quota_exceeded", "cpu"])
        assert.include(r.json.error.message, "CPU quota of 2")
      }
      // 2 cores and 2Gi held: a raised CPU quota lets the memory quota decide, at its exact boundary.
      yield* t.call("PATCH", "/api/v1/teams/cpu", t.admin, { quota: { cpu: "10", memory: "3Gi" } })
      const tooBig = yield* t.call("POST", "/api/v1/sessions", tokens[0]!, { template: "demo", resources: { cpu: "100m", memory: "1025Mi" } })
      assert.deepStrictEqual([tooBig.status, tooBig.json.error.quota], [429, "memory"])
      const exact = yield* t.call("POST", "/api/v1/sessions", tokens[0]!, { template: "demo", resources: { cpu: "100m", memory: "1Gi" } })
      assert.strictEqual(exact.status, 201, exact.text)
      const over = yield* t.call("POST", "/api/v1/sessions", tokens[1]!, { template: "demo", resources: { cpu: "100m", memory: "256Mi" } })
      assert.deepStrictEqual([over.status, over.json.error.quota], [429, "memory"])
    }), { timeout: 120_000 })
})

describe("which team pays", () => {
  it.live("the asked team if the user is in it and it allows the template and region; else the first that allows; no team: unchanged", () =>
    Effect.gen(function*() {
      const t = yield* start
      yield* t.agent("eu", "eu-west")
      yield* t.agent("us", "us-east")
      yield* t.call("POST", "/api/v1/templates", t.admin, { name: "other", image: "img:1" })
      // "alpha" sorts first but allows only "other"; "beta" allows everything in us-east; "gamma" is someone else's.
      yield* createTeam(t, { name: "alpha", group: "g-a", templates: ["other"] })
      yield* createTeam(t, { name: "beta", group: "g-b", regions: ["us-east"], quota: { max_sessions: 0 } })
      yield* createTeam(t, { name: "gamma", group: "g-c" })
      yield* t.call("PATCH", "/api/v1/teams/beta", t.admin, { quota: { max_sessions: 10 } })
      const ann = yield* t.token("ann", ["g-a", "g-b", "unrelated"])

      const byDefault = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo" })
      assert.strictEqual(byDefault.status, 201, byDefault.text)
      // beta pays, and its region list confines placement to us-east.
      assert.deepStrictEqual([byDefault.json.team, byDefault.json.agent_id], ["beta", "us"])
      const audited = (yield* t.call("GET", "/api/v1/audit", t.admin)).json.events.find((e: any) => e.action === "session.create" && e.target_id === byDefault.json.id)
      assert.strictEqual(audited.details.team, "beta")
      const other = yield* t.call("POST", "/api/v1/sessions", ann, { template: "other" })
      assert.strictEqual(other.json.team, "alpha")
      const chosen = yield* t.call("POST", "/api/v1/sessions", ann, { template: "other", team: "beta" })
      assert.deepStrictEqual([chosen.status, chosen.json.team], [201, "beta"])

      const forbidden = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", team: "alpha" })
      assert.deepStrictEqual([forbidden.status, forbidden.json.error.code], [403, "team_forbidden"])
      assert.include(forbidden.json.error.message, "team \"alpha\" does not allow template \"demo\"")
      const region = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", team: "beta", region: "eu-west" })
      assert.deepStrictEqual([region.status, region.json.error.code], [403, "team_forbidden"])
      assert.include(region.json.error.message, "does not allow region \"eu-west\"")
      const noneFits = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", region: "eu-west" })
      assert.deepStrictEqual([noneFits.status, noneFits.json.error.code], [403, "team_forbidden"])
      assert.include(noneFits.json.error.message, "none of your teams allows this session")
      const notMember = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", team: "gamma" })
      assert.deepStrictEqual([notMember.status, notMember.json.error.code], [403, "team_forbidden"])
      assert.include(notMember.json.error.message, "not a member of team \"gamma\"")
      const unknown = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", team: "nope" })
      assert.deepStrictEqual([unknown.status, unknown.json.error.code], [400, "invalid_request"])
      assert.include(unknown.json.error.message, "team: no team named \"nope\"")

      // No groups claim, or groups of no team: no team, any region, team quotas do not apply.
      const bob = yield* t.token("bob")
      const carol = yield* t.token("carol", ["unrelated"])
      for (const tok of [bob, carol]) {
        const r = yield* t.call("POST", "/api/v1/sessions", tok, { template: "demo", region: "eu-west" })
        assert.deepStrictEqual([r.status, r.json.team, r.json.agent_id], [201, null, "eu"])
      }
      const bobInTeam = yield* t.call("POST", "/api/v1/sessions", bob, { template: "demo", team: "beta" })
      assert.strictEqual(bobInTeam.status, 403)
      // A malformed groups claim is refused at authentication.
      const badGroups = yield* Effect.promise(() => sign({ sub: "dan", groups: "g-a" as never }))
      assert.strictEqual((yield* t.call("GET", "/api/v1/sessions", badGroups)).status, 401)
    }), { timeout: 120_000 })
})

describe("usage", () => {
  it.live("per team and per user: sessions, CPU, memory and homes' storage, in the API and as team-labelled metrics", () =>
    Effect.gen(function*() {
      const t = yield* start
      yield* t.agent("a1", "eu-west")
      yield* createTeam(t, { name: "red", group: "g-red", quota: { max_sessions: 10, cpu: "4", storage: "50Gi" } })
      yield* createTeam(t, { name: "idle", group: "g-idle" })
      const ann = yield* t.token("ann", ["g-red"])
      const bob = yield* t.token("bob", ["g-red"])
      const zed = yield* t.token("zed")
      for (const [tok, body] of [
        [ann, { template: "demo", resources: { cpu: "1", memory: "1Gi" }, persistent_home: true }],
        [ann, { template: "demo", resources: { cpu: "500m", memory: "512Mi" } }],
        [bob, { template: "demo", resources: { cpu: "250m", memory: "256Mi" } }],
        [zed, { template: "demo", resources: { cpu: "2", memory: "2Gi" }, persistent_home: true }]
      ] as const) assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", tok, body)).status, 201)
      // Homes as the agent listed them: ann's is charged to red (her session with a home there), zed's to none.
      const now = new Date()
      for (const [user, size] of [["ann", "10Gi"], ["zed", "5Gi"]] as const) {
        yield* t.store.homes.put({
          id: `h-${user}`, agentId: "a1" as AgentId, name: `home-${user}`, userId: user as UserId, size, inUse: true,
          createdAt: now, lastUsedAt: now, reportedAt: now, expiresAt: undefined
        })
      }
      const Gi = 2 ** 30
      const Mi = 2 ** 20
      const teams = yield* t.call("GET", "/api/v1/usage?by=team", t.admin)
      assert.strictEqual(teams.status, 200, teams.text)
      const row = (name: string) => {
        const r = teams.json.usage.find((x: any) => x.team === name)
        return [r.sessions, r.cpu_cores, r.memory_bytes, r.homes, r.storage_bytes]
      }
      assert.deepStrictEqual(teams.json.usage.map((x: any) => x.team), ["idle", "none", "red"])
      assert.deepStrictEqual(row("red"), [3, 1.75, Gi + 512 * Mi + 256 * Mi, 1, 10 * Gi])
      assert.deepStrictEqual(row("none"), [1, 2, 2 * Gi, 1, 5 * Gi])
      assert.deepStrictEqual(row("idle"), [0, 0, 0, 0, 0])
      assert.deepStrictEqual(teams.json.usage.find((x: any) => x.team === "red").quota, { max_sessions: 10, cpu: "4", memory: null, storage: "50Gi" })

      const users = yield* t.call("GET", "/api/v1/usage?by=user", t.admin)
      const byUser = Object.fromEntries(users.json.usage.map((u: any) => [u.user_id, [u.sessions, u.cpu_cores, u.memory_bytes, u.storage_bytes]]))
      assert.deepStrictEqual(byUser, {
        ann: [2, 1.5, Gi + 512 * Mi, 10 * Gi],
        bob: [1, 0.25, 256 * Mi, 0],
        zed: [1, 2, 2 * Gi, 5 * Gi]
      })
      const paged = yield* t.call("GET", "/api/v1/usage?by=user&limit=2", t.admin)
      assert.deepStrictEqual(paged.json.usage.map((u: any) => u.user_id), ["ann", "bob"])
      assert.isString(paged.json.next_cursor)
      assert.strictEqual((yield* t.call("GET", "/api/v1/usage?by=agent", t.admin)).status, 400)
      assert.strictEqual((yield* t.call("GET", "/api/v1/usage?by=team", ann)).status, 403)

      const metrics = yield* Effect.promise(() => fetch(`${t.cp.url}/metrics`).then((r) => r.text()))
      const value = (name: string, ...labels: ReadonlyArray<string>) => {
        const line = metrics.split("\n").find((l) => l.startsWith(`streamspace_control_plane_${name}{`) && labels.every((x) => l.includes(x)))
        return line === undefined ? undefined : Number(line.split(" ").at(-1))
      }
      assert.strictEqual(value("team_sessions", "team=\"red\""), 3)
      assert.strictEqual(value("team_sessions", "team=\"none\""), 1)
      assert.strictEqual(value("team_sessions", "team=\"idle\""), 0)
      assert.strictEqual(value("team_cpu_cores", "team=\"red\""), 1.75)
      assert.strictEqual(value("team_memory_bytes", "team=\"none\""), 2 * Gi)
      assert.strictEqual(value("team_home_storage_bytes", "team=\"red\""), 10 * Gi)
      assert.strictEqual(value("team_quota", "team=\"red\"", "resource=\"cpu\""), 4)
      assert.strictEqual(value("team_quota", "team=\"red\"", "resource=\"memory\""), -1)
      // Only team labels: no per-user series.
      assert.notInclude(metrics, "user=\"ann\"")
    }), { timeout: 120_000 })
})

describe("quota on resume and on homes' storage", () => {
  it.live("a hibernated session holds none of the quota; resuming it must fit again", () =>
    Effect.gen(function*() {
      const t = yield* start
      const agent = yield* t.agent("a1", "eu-west")
      yield* createTeam(t, { name: "hib", group: "g-hib", quota: { max_sessions: 1 } })
      const ann = yield* t.token("ann", ["g-hib"])
      const first = yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", persistent_home: true })
      assert.strictEqual(first.status, 201, first.text)
      const id = first.json.id
      const report = (phase: "running" | "terminated") => agent.send("session_status", { session_id: id, phase, observed_at: new Date().toISOString() })
      const stateOf = Effect.map(t.call("GET", `/api/v1/sessions/${id}`, ann), (r) => r.json.state as string)
      const waitState = (want: string) => waitFor(`session ${want}`, Effect.map(stateOf, (s) => s === want), { timeout: 20_000 })
      yield* report("running")
      yield* waitState("running")
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo" })).json.error.quota, "max_sessions")
      assert.strictEqual((yield* t.call("POST", `/api/v1/sessions/${id}/hibernate`, ann)).status, 202)
      yield* report("terminated")
      yield* waitState("hibernated")
      // The pod is gone, so its slot is free for another session...
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo" })).status, 201)
      // ...and the hibernated one cannot take it back while that one runs.
      const resume = yield* t.call("POST", `/api/v1/sessions/${id}/resume`, ann)
      assert.deepStrictEqual([resume.status, resume.json.error.code, resume.json.error.team, resume.json.error.quota], [429, "quota_exceeded", "hib", "max_sessions"])
      assert.strictEqual(yield* stateOf, "hibernated")
      yield* t.call("PATCH", "/api/v1/teams/hib", t.admin, { quota: { max_sessions: 2 } })
      const resumed = yield* t.call("POST", `/api/v1/sessions/${id}/resume`, ann)
      assert.strictEqual(resumed.status, 202, resumed.text)
      assert.strictEqual(resumed.json.state, "creating")
    }), { timeout: 120_000 })

  it.live("once a team's homes take its storage quota, a create that needs a new home is refused; others still start", () =>
    Effect.gen(function*() {
      const t = yield* start
      yield* t.agent("a1", "eu-west")
      yield* createTeam(t, { name: "disk", group: "g-disk", quota: { storage: "10Gi" } })
      const ann = yield* t.token("ann", ["g-disk"])
      const bob = yield* t.token("bob", ["g-disk"])
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", persistent_home: true })).status, 201)
      const now = new Date()
      const home = (size: string) =>
        t.store.homes.put({
          id: "h-ann", agentId: "a1" as AgentId, name: "home-ann", userId: "ann" as UserId, size, inUse: true,
          createdAt: now, lastUsedAt: now, reportedAt: now, expiresAt: undefined
        })
      // Below the quota a new home may still be made.
      yield* home("9Gi")
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", bob, { template: "demo", persistent_home: true })).status, 201)
      // At it, not: bob's home is not listed yet, so ann's 10Gi is what the team's homes take.
      yield* home("10Gi")
      const carol = yield* t.token("carol", ["g-disk"])
      const refused = yield* t.call("POST", "/api/v1/sessions", carol, { template: "demo", persistent_home: true })
      assert.deepStrictEqual([refused.status, refused.json.error.code, refused.json.error.team, refused.json.error.quota], [429, "quota_exceeded", "disk", "storage"])
      assert.include(refused.json.error.message, "home storage quota of 10Gi")
      // Without a new home: allowed (no home at all, or ann's own home again).
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", carol, { template: "demo" })).status, 201)
      assert.strictEqual((yield* t.call("POST", "/api/v1/sessions", ann, { template: "demo", persistent_home: true })).status, 201)
    }), { timeout: 120_000 })
})
