// Issue 18 with two control planes on one real PostgreSQL (issue 15's deployment shape): each counts only its own
// sessions in memory, so the team quota must hold in the database too. Each replica has its own agent; creates
// are fired at both at once.
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Redacted } from "effect"
import { AgentHub } from "../src/AgentHub.ts"
import { ControlPlane } from "../src/ControlPlane.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { BOOTSTRAP, connectAndHello, enrol } from "./support/fakeAgent.ts"
import { sign, TEST_CLUSTER_SECRET, TEST_JWT_SECRET } from "./support/jwt.ts"
import { startPostgres } from "./support/postgres.ts"

const replica = (databaseUrl: string, agentId: string) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromRecord({
      HOST: "127.0.0.1", PORT: "0", DATABASE_URL: databaseUrl, CLUSTER_SECRET: TEST_CLUSTER_SECRET, JWT_SECRET: TEST_JWT_SECRET, AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP,
      PING_INTERVAL: "1h", LOG_LEVEL: "error", MAX_SESSIONS_PER_USER: "0", SESSION_CREATES_PER_MINUTE: "0"
    }))))
    const cp = Context.get(ctx, ControlPlane)
    const hub = Context.get(ctx, AgentHub)
    const ws = `${cp.url.replace(/^http/, "ws")}/api/v1/agent/connect`
    const credential = yield* enrol({ hub, url: ws }, agentId)
    yield* connectAndHello(ws, credential, agentId, { capacity: { cpu: "64", memory: "256Gi", max_sessions: 100 } })
    return cp.url
  })

const post = (base: string, path: string, token: string, body: unknown) =>
  Effect.promise(async () => {
    const r = await fetch(`${base}${path}`, { method: "POST", headers: { authorization: `Bearer ${token}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    return { status: r.status, json: await r.json() as { readonly agent_id?: string; readonly error?: { readonly code: string; readonly quota?: string } } }
  })

describe("team quotas across replicas", () => {
  it.live("20 creates split over two control planes on one PostgreSQL against quotas of 5 sessions and 2 CPUs: no overshoot", () =>
    Effect.gen(function*() {
      const pg = yield* startPostgres
      const url = Redacted.value(pg.createDatabase("teams_replicas"))
      const a = yield* replica(url, "agent-a")
      const b = yield* replica(url, "agent-b")
      const admin = yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
      assert.strictEqual((yield* post(a, "/api/v1/teams", admin, { name: "five", group: "g5", quota: { max_sessions: 5 } })).status, 201)
      assert.strictEqual((yield* post(b, "/api/v1/teams", admin, { name: "cpu", group: "gc", quota: { cpu: "2" } })).status, 201)
      for (const [group, body, want, quota] of [
        ["g5", { template: "demo" }, 5, "max_sessions"],
        ["gc", { template: "demo", resources: { cpu: "500m" } }, 4, "cpu"]
      ] as const) {
        const tokens = yield* Effect.all(Array.from({ length: 20 }, (_, i) => Effect.promise(() => sign({ sub: `${group}-u${i}`, groups: [group] }))))
        const results = yield* Effect.all(tokens.map((tok, i) => post(i % 2 === 0 ? a : b, "/api/v1/sessions", tok, body)), { concurrency: "unbounded" })
        const ok = results.filter((r) => r.status === 201)
        assert.strictEqual(ok.length, want, JSON.stringify(results.map((r) => r.status)))
        for (const r of results.filter((r) => r.status !== 201)) assert.deepStrictEqual([r.status, r.json.error?.code, r.json.error?.quota], [429, "quota_exceeded", quota])
        // Both replicas placed some (each on its own agent): the guard, not one replica alone, kept the count.
        assert.sameMembers([...new Set(ok.map((r) => r.json.agent_id))], ["agent-a", "agent-b"])
      }
    }), { timeout: 180_000 })
})
