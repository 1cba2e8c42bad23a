// The sharing tables on a real database (PGlite in memory, and a real PostgreSQL cluster): shares upserted
// and removed, links counted atomically against max_uses and refused once expired or revoked, the control
// mode kept, and all of it going with the session.
import { assert, layer, type Vitest } from "@effect/vitest"
import type { AgentId, SessionId, TemplateName, UserId } from "@streamspace/protocol"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as Database from "../src/Database.ts"
import { Store } from "../src/Store.ts"
import { startPostgres } from "./support/postgres.ts"

let counter = 0
const uid = (prefix: string): never => `${prefix}-${Date.now().toString(36)}-${++counter}` as never

const session = Effect.gen(function*() {
  const store = yield* Store
  const user = yield* store.users.insert({ id: uid("u"), name: "Ann", role: "user" })
  const template = yield* store.templates.insert({ name: uid("t"), displayName: "T", image: "img:1", resources: { cpu: "1", memory: "1Gi" }, vncPort: 5901 })
  const { agent } = yield* store.agents.register({ id: uid("a"), platform: "kubernetes", region: "eu", version: "1.0.0", capacity: { cpu: "8", memory: "16Gi", max_sessions: 10 } })
  const s = yield* store.sessions.insert({
    id: uid("s") as SessionId,
    userId: user.id as UserId,
    template: template.name as TemplateName,
    agentId: agent.id as AgentId,
    spec: { user_id: user.id as UserId, template: template.name as TemplateName, image: "img:1", persistent_home: false, vnc_port: 5901 },
    region: "eu"
  })
  return { store, s }
})

const at = (iso: string) => new Date(iso)

const suite = (it: Vitest.MethodsNonLive<Store | Database.Sql>) => {
  it.effect("shares: insert, change of access (keeping who made it), list by session and by user, remove", () =>
    Effect.gen(function*() {
      const { store, s } = yield* session
      const t = store.shares
      yield* t.put({ sessionId: s.id, userId: "bob", access: "view", createdBy: "ann", createdAt: at("2026-01-01T00:00:00Z") })
      yield* t.put({ sessionId: s.id, userId: "cat", access: "control", createdBy: "ann", createdAt: at("2026-01-01T00:00:01Z") })
      const changed = yield* t.put({ sessionId: s.id, userId: "bob", access: "control", createdBy: "root", createdAt: at("2026-01-02T00:00:00Z") })
      assert.deepStrictEqual([changed.access, changed.createdBy, changed.createdAt.toISOString()], ["control", "ann", "2026-01-01T00:00:00.000Z"])
      assert.deepStrictEqual((yield* t.list({ sessionId: s.id })).map((x) => [x.userId, x.access]), [["bob", "control"], ["cat", "control"]])
      assert.deepStrictEqual((yield* t.list({ userId: "cat" })).filter((x) => x.sessionId === s.id).map((x) => x.access), ["control"])
      assert.isTrue(yield* t.remove(s.id, "bob"))
      assert.isFalse(yield* t.remove(s.id, "bob"))
      assert.isUndefined(yield* t.get(s.id, "bob"))
      assert.strictEqual((yield* t.get(s.id, "cat"))?.access, "control")
    }))

  it.effect("links: found by the token's hash; uses counted up to max_uses under concurrency; refused once expired or revoked", () =>
    Effect.gen(function*() {
      const { store, s } = yield* session
      const t = store.shares
      const link = {
        id: uid("l"),
        sessionId: s.id,
        tokenHash: uid("h"),
        access: "view" as const,
        label: "demo",
        createdBy: "ann",
        createdAt: at("2026-01-01T00:00:00Z"),
        expiresAt: at("2026-01-01T01:00:00Z"),
        maxUses: 3,
        uses: 0,
        revokedAt: undefined
      }
      yield* t.putLink(link)
      assert.strictEqual((yield* t.linkByTokenHash(link.tokenHash))?.id, link.id)
      const tries = yield* Effect.forEach(Array.from({ length: 10 }), () => t.useLink(link.id, at("2026-01-01T00:10:00Z")), { concurrency: "unbounded" })
      assert.strictEqual(tries.filter((x) => x !== undefined).length, 3)
      assert.strictEqual((yield* t.getLink(link.id))?.uses, 3)

      const open = { ...link, id: uid("l"), tokenHash: uid("h"), maxUses: undefined }
      yield* t.putLink(open)
      assert.isDefined(yield* t.useLink(open.id, at("2026-01-01T00:59:59Z")))
      assert.isUndefined(yield* t.useLink(open.id, at("2026-01-01T01:00:00Z")))
      const revoked = yield* t.revokeLink(open.id, at("2026-01-01T00:30:00Z"))
      assert.strictEqual(revoked?.revokedAt?.toISOString(), "2026-01-01T00:30:00.000Z")
      // Revoking again keeps the first time.
      assert.strictEqual((yield* t.revokeLink(open.id, at("2026-01-01T00:40:00Z")))?.revokedAt?.toISOString(), "2026-01-01T00:30:00.000Z")
      assert.isUndefined(yield* t.useLink(open.id, at("2026-01-01T00:31:00Z")))
      assert.deepStrictEqual((yield* t.links(s.id)).map((l) => l.id).sort(), [link.id, open.id].sort())
    }))

  it.effect("the control mode defaults to exclusive and is kept; deleting the session removes its sharing rows", () =>
    Effect.gen(function*() {
      const { store, s } = yield* session
      const t = store.shares
      assert.strictEqual(yield* t.controlMode(s.id), "exclusive")
      yield* t.setControlMode(s.id, "shared", at("2026-01-01T00:00:00Z"))
      assert.strictEqual(yield* t.controlMode(s.id), "shared")
      yield* t.put({ sessionId: s.id, userId: "bob", access: "view", createdBy: "ann", createdAt: at("2026-01-01T00:00:00Z") })
      const db = yield* SqlClient
      yield* db`DELETE FROM session_history WHERE session_id = ${s.id}`
      yield* db`DELETE FROM sessions WHERE id = ${s.id}`
      assert.deepStrictEqual(yield* t.list({ sessionId: s.id }), [])
      assert.strictEqual(yield* t.controlMode(s.id), "exclusive")
    }))
}

const timeout = "240 seconds"

layer(Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerMemory)), { timeout, excludeTestServices: true })("sharing tables on PGlite", suite)

const postgres = Layer.unwrap(
  Effect.gen(function*() {
    const server = yield* startPostgres
    return Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerPostgres({ url: server.createDatabase("shares_test") })))
  })
)

layer(postgres, { timeout, excludeTestServices: true })("sharing tables on a real PostgreSQL", suite)
