// The replica registry on a real PostgreSQL: presence is trusted only while its replica's lease runs, a
// replica without a lease cannot claim, the leader's sweep records offline the agents no live replica holds,
// and a replica whose lease lapsed starts a fresh term without its old claims. A lease's expiry is the
// database's clock: the tests move it by writing the lease, not by waiting.
import { assert, layer } from "@effect/vitest"
import type { AgentId } from "@streamspace/protocol"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as Database from "../src/Database.ts"
import { makeRegistry } from "../src/internal/replicas/registry.ts"
import { Store } from "../src/Store.ts"
import { startPostgres } from "./support/postgres.ts"

const postgres = Layer.unwrap(
  Effect.gen(function*() {
    const server = yield* startPostgres
    return Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerPostgres({ url: server.createDatabase("registry_test") })))
  })
)

let n = 0
const fresh = (prefix: string) => `${prefix}-${Date.now().toString(36)}-${++n}`

const setup = Effect.gen(function*() {
  const sql = yield* SqlClient
  const store = yield* Store
  const agentId = fresh("agent") as AgentId
  yield* store.agents.register({ id: agentId, platform: "kubernetes", region: "eu", version: "1", capacity: { cpu: "1", memory: "1Gi", max_sessions: 1 } })
  const a = makeRegistry(sql, { id: fresh("cp-a"), peerUrl: "http://10.0.0.1:8000" }, 60_000)
  const b = makeRegistry(sql, { id: fresh("cp-b"), peerUrl: "http://10.0.0.2:8000" }, 60_000)
  yield* a.renew(true)
  yield* b.renew(true)
  /** The database's clock passes the replica's lease. */
  const expire = (id: string) => sql`UPDATE control_plane_replicas SET lease_expires_at = now() - interval '1 second' WHERE id = ${id}`
  const status = Effect.map(store.agents.get(agentId), (r) => r.status)
  return { sql, store, agentId, a, b, expire, status }
})

layer(postgres, { timeout: "120 seconds", excludeTestServices: true })("replica registry on a real PostgreSQL", (it) => {
  it.effect("the holder is known while its lease runs; once it expired its claim is not trusted, and it cannot claim", () =>
    Effect.gen(function*() {
      const { a, agentId, b, expire } = yield* setup
      assert.isTrue(yield* a.claim(agentId))
      assert.deepStrictEqual(yield* b.holderOf(agentId), { replicaId: (yield* a.holders).get(agentId)!.replicaId, peerUrl: "http://10.0.0.1:8000" })
      const aId = (yield* b.holders).get(agentId)!.replicaId
      yield* expire(aId)
      assert.isUndefined(yield* b.holderOf(agentId))
      assert.isFalse((yield* b.holders).has(agentId))
      assert.isFalse(yield* a.claim(agentId))
    }))

  it.effect("the newest connection wins: a claim by another replica takes the agent, and the old holder's release leaves it", () =>
    Effect.gen(function*() {
      const { a, agentId, b, status } = yield* setup
      assert.isTrue(yield* a.claim(agentId))
      assert.isTrue(yield* b.claim(agentId))
      yield* a.release(agentId)
      assert.strictEqual((yield* a.holderOf(agentId))?.peerUrl, "http://10.0.0.2:8000")
      assert.notStrictEqual(yield* status, "offline")
      yield* b.release(agentId)
      assert.isUndefined(yield* a.holderOf(agentId))
      assert.strictEqual(yield* status, "offline")
    }))

  it.effect("the sweep records offline the agents whose holder died, and only those", () =>
    Effect.gen(function*() {
      const { a, agentId, b, expire, sql, status, store } = yield* setup
      const other = fresh("agent") as AgentId
      yield* store.agents.register({ id: other, platform: "kubernetes", region: "eu", version: "1", capacity: { cpu: "1", memory: "1Gi", max_sessions: 1 } })
      assert.isTrue(yield* a.claim(agentId))
      assert.isTrue(yield* b.claim(other))
      const aId = (yield* b.holders).get(agentId)!.replicaId
      yield* expire(aId)
      const offline = yield* b.sweep
      assert.include(offline, agentId)
      assert.notInclude(offline, other)
      assert.strictEqual(yield* status, "offline")
      assert.notStrictEqual((yield* store.agents.get(other)).status, "offline")
      const rows = yield* sql`SELECT 1 FROM agent_presence WHERE agent_id = ${agentId}`
      assert.strictEqual(rows.length, 0)
    }))

  it.effect("a replica whose lease lapsed starts a fresh term: its old claims are gone, it may claim again", () =>
    Effect.gen(function*() {
      const { a, agentId, b, expire } = yield* setup
      assert.isTrue(yield* a.claim(agentId))
      const aId = (yield* b.holders).get(agentId)!.replicaId
      yield* expire(aId)
      assert.isTrue(yield* a.renew(false)) // lapsed in the database
      assert.isUndefined(yield* b.holderOf(agentId)) // the old claim did not come back with the new lease
      assert.isTrue(yield* a.claim(agentId))
      assert.strictEqual((yield* b.holderOf(agentId))?.replicaId, aId)
      assert.isFalse(yield* a.renew(false)) // a running lease is renewed
    }))
})
