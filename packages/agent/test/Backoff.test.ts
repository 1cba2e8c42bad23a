import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Random } from "effect"
import { TestClock } from "effect/testing"
import { ceiling, fullJitter, makeBackoff } from "../src/internal/backoff.ts"

const options = { base: Duration.seconds(5), cap: Duration.minutes(5), resetAfter: Duration.minutes(1) }
const ms = Duration.toMillis

/** A Random whose every draw is `u`, so delays are exact. */
const fixedRandom = (u: number) =>
  Random.Random.of({ nextDoubleUnsafe: () => u, nextIntUnsafe: () => Math.floor(u * Number.MAX_SAFE_INTEGER) })

describe("reconnect backoff", () => {
  it("ceilings grow from RECONNECT_DELAY by doubling and stop at MAX_RECONNECT_DELAY", () => {
    assert.deepStrictEqual(
      Array.from({ length: 9 }, (_, i) => ms(ceiling(options, i)) / 1000),
      [5, 10, 20, 40, 80, 160, 300, 300, 300]
    )
    assert.strictEqual(ms(ceiling(options, 5000)), 300_000)
  })

  it("full jitter spans [0, ceiling]", () => {
    assert.strictEqual(ms(fullJitter(options, 0, 0)), 0)
    assert.strictEqual(ms(fullJitter(options, 0, 0.5)), 2500)
    assert.strictEqual(ms(fullJitter(options, 0, 0.999999)), 4999)
    assert.strictEqual(ms(fullJitter(options, 20, 0.999999)), 299_999)
  })

  it.effect("first delay, growth and cap with the maximal draw", () =>
    Effect.gen(function*() {
      const backoff = yield* makeBackoff(options)
      const delays: Array<number> = []
      for (let i = 0; i < 9; i++) delays.push(Math.round(ms(yield* backoff.nextDelay) / 1000))
      assert.deepStrictEqual(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300])
    }).pipe(Effect.provideService(Random.Random, fixedRandom(0.9999999))))

  it.effect("jittered delays stay within [0, ceiling] and are spread out", () =>
    Effect.gen(function*() {
      const backoff = yield* makeBackoff(options)
      const draws: Array<number> = []
      for (let i = 0; i < 200; i++) {
        const d = ms(yield* backoff.nextDelay)
        const attempt = (yield* backoff.attempt) - 1
        assert.isAtLeast(d, 0)
        assert.isAtMost(d, ms(ceiling(options, attempt)))
        if (attempt >= 6) draws.push(d)
      }
      // full jitter, not "cap plus a little": capped delays use the whole range
      assert.isBelow(Math.min(...draws), 60_000)
      assert.isAbove(Math.max(...draws), 240_000)
    }).pipe(Random.withSeed("backoff")))

  it.effect("resets after a connection stayed healthy for RECONNECT_RESET_AFTER, not before", () =>
    Effect.gen(function*() {
      const backoff = yield* makeBackoff(options)
      for (let i = 0; i < 4; i++) yield* backoff.nextDelay // 5, 10, 20, 40
      yield* backoff.connected
      yield* TestClock.adjust("59 seconds")
      assert.strictEqual(Math.round(ms(yield* backoff.nextDelay) / 1000), 80) // short-lived: keeps growing
      yield* backoff.connected
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(Math.round(ms(yield* backoff.nextDelay) / 1000), 5) // healthy: back to the start
      assert.strictEqual(Math.round(ms(yield* backoff.nextDelay) / 1000), 10)
    }).pipe(Effect.provideService(Random.Random, fixedRandom(0.9999999))))

  it.effect("dials follow the schedule under TestClock", () =>
    Effect.gen(function*() {
      const backoff = yield* makeBackoff(options)
      const dialsAt: Array<number> = []
      const loop = Effect.gen(function*() {
        while (true) {
          dialsAt.push((yield* Effect.clockWith((c) => c.currentTimeMillis)) / 1000)
          yield* Effect.sleep(yield* backoff.nextDelay)
        }
      })
      yield* Effect.forkChild(loop)
      yield* TestClock.adjust("20 minutes")
      assert.deepStrictEqual(dialsAt.slice(0, 9).map(Math.round), [0, 5, 15, 35, 75, 155, 315, 615, 915])
    }).pipe(Effect.provideService(Random.Random, fixedRandom(0.9999999))))
})
