import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Scope } from "effect"
import { makeGroupCommit } from "../src/internal/groupCommit.ts"

describe("group commit (internal/groupCommit.ts)", () => {
  it.effect("a lone call is written at once; calls made meanwhile are written together, in order; a failed batch is written one by one", () =>
    Effect.gen(function*() {
      const writes: Array<ReadonlyArray<number>> = []
      const gate = yield* Deferred.make<void>()
      const write = yield* makeGroupCommit<number, string, string>({
        one: (n) =>
          Effect.gen(function*() {
            writes.push([n])
            if (n === 0) yield* Deferred.await(gate) // the first write is slow: the next calls queue behind it
            return n === 13 ? yield* Effect.fail("unlucky") : `row ${n}`
          }),
        many: (ns) => Effect.sync(() => writes.push(ns)).pipe(Effect.andThen(ns.includes(13) ? Effect.fail("a bad row") : Effect.succeed(ns.map((n) => `row ${n}`)))),
        max: 3
      })
      const first = yield* Effect.forkChild(write(0))
      yield* Effect.yieldNow
      const rest = yield* Effect.forkChild(Effect.all([1, 2, 3, 4, 5].map(write), { concurrency: "unbounded" }))
      yield* Effect.yieldNow
      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual(yield* Fiber.join(first), "row 0")
      assert.deepStrictEqual(yield* Fiber.join(rest), ["row 1", "row 2", "row 3", "row 4", "row 5"])
      assert.deepStrictEqual(writes, [[0], [1, 2, 3], [4, 5]])

      writes.length = 0
      const outcomes = yield* Effect.all([11, 12, 13, 14].map((n) => Effect.result(write(n))), { concurrency: "unbounded" })
      assert.deepStrictEqual(outcomes.map((r) => r._tag === "Success" ? r.success : `failed: ${r.failure}`), ["row 11", "row 12", "failed: unlucky", "row 14"])
      // All four queued before the writer woke: 11-13 together (at most 3), which failed, so each again on its own.
      assert.deepStrictEqual(writes, [[11, 12, 13], [11], [12], [13], [14]])
    }))

  it.effect("when its scope closes, the calls not written are interrupted, and so are later ones", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const write = yield* makeGroupCommit<number, number, never>({ one: () => Effect.never, many: () => Effect.never, max: 10 }).pipe(Scope.provide(scope))
      const pending = yield* Effect.forkChild(Effect.exit(Effect.all([write(1), write(2)], { concurrency: "unbounded" })))
      yield* Effect.yieldNow
      yield* Scope.close(scope, Exit.void)
      assert.isTrue(Exit.hasInterrupts(yield* Fiber.join(pending)))
      assert.isTrue(Exit.hasInterrupts(yield* Effect.exit(write(3))))
    }))
})
