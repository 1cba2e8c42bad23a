import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Random, Schedule } from "effect"
import { TestClock } from "effect/testing"
import { exponentialFullJitter, makeStepper, reconnectSchedule, resetWhen } from "../src/internal/backoff.ts"

const options = { base: Duration.seconds(5), cap: Duration.minutes(5), resetAfter: Duration.minutes(1) }
const seconds = (d: Duration.Duration) => Math.round(Duration.toMillis(d) / 1000)
const failedDial = Duration.zero

/** A Random whose every draw is `u`, so delays are exact. */
const fixedRandom = (u: number) =>
  Random.Random.of({ nextDoubleUnsafe: () => u, nextIntUnsafe: () => Math.floor(u * Number.MAX_SAFE_INTEGER) })
const maximalDraw = Effect.provideService(Random.Random, fixedRandom(0.9999999))

describe("reconnect backoff (Schedule)", () => {
  it.effect("ceilings grow from RECONNECT_DELAY by doubling and stop at MAX_RECONNECT_DELAY", () =>
    Effect.gen(function*() {
      const next = yield* makeStepper(reconnectSchedule(options))
      const delays: Array<number> = []
      for (let i = 0; i < 9; i++) delays.push(seconds(yield* next(failedDial)))
      assert.deepStrictEqual(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300])
      for (let i = 0; i < 2000; i++) yield* next(failedDial)
      assert.strictEqual(seconds(yield* next(failedDial)), 300, "2^n overflowing stays at the cap")
    }).pipe(maximalDraw))

  it.effect("full jitter spans [0, ceiling]", () =>
    Effect.gen(function*() {
      const first = (u: number) =>
        makeStepper(reconnectSchedule(options)).pipe(
          Effect.flatMap((next) => next(failedDial)),
          Effect.map(Duration.toMillis),
          Effect.provideService(Random.Random, fixedRandom(u))
        )
      assert.strictEqual(yield* first(0), 0)
      assert.strictEqual(yield* first(0.5), 2500)
      assert.strictEqual(yield* first(0.999999), 4999)
    }))

  it.effect("jittered delays stay within [0, ceiling] and are spread out", () =>
    Effect.gen(function*() {
      const next = yield* makeStepper(reconnectSchedule(options))
      const capped: Array<number> = []
      for (let attempt = 0; attempt < 200; attempt++) {
        const d = Duration.toMillis(yield* next(failedDial))
        const ceiling = Math.min(5000 * 2 ** attempt, 300_000)
        assert.isAtLeast(d, 0)
        assert.isAtMost(d, ceiling)
        if (attempt >= 6) capped.push(d)
      }
      // full jitter, not "cap plus a little": capped delays use the whole range
      assert.isBelow(Math.min(...capped), 60_000)
      assert.isAbove(Math.max(...capped), 240_000)
    }).pipe(Random.withSeed("backoff")))

  it.effect("starts afresh after a link stayed up for RECONNECT_RESET_AFTER, not before", () =>
    Effect.gen(function*() {
      const next = yield* makeStepper(reconnectSchedule(options))
      for (let i = 0; i < 4; i++) yield* next(failedDial) // 5, 10, 20, 40
      assert.strictEqual(seconds(yield* next(Duration.seconds(59))), 80, "short-lived: keeps growing")
      assert.strictEqual(seconds(yield* next(Duration.minutes(1))), 5, "healthy: back to the start")
      assert.strictEqual(seconds(yield* next(failedDial)), 10)
    }).pipe(maximalDraw))

  it.effect("dials follow the schedule under TestClock", () =>
    Effect.gen(function*() {
      const dialsAt: Array<number> = []
      const dial = Effect.map(Clock.currentTimeMillis, (now) => {
        dialsAt.push(now / 1000)
        return failedDial
      })
      yield* Effect.forkChild(Effect.repeat(dial, reconnectSchedule(options)))
      yield* TestClock.adjust("20 minutes")
      assert.deepStrictEqual(dialsAt.slice(0, 9).map(Math.round), [0, 5, 15, 35, 75, 155, 315, 615, 915])
    }).pipe(maximalDraw))
})

describe("resetWhen", () => {
  it.effect("restarts any schedule when the input says the last attempt went well", () =>
    Effect.gen(function*() {
      // The session watch: an attempt that delivered events starts the backoff afresh.
      const watch = resetWhen(exponentialFullJitter("1 second", "30 seconds").pipe(Schedule.setInputType<number>()), (events) => events > 0)
      const next = yield* makeStepper(watch)
      const delays: Array<number> = []
      for (const events of [0, 0, 0, 0, 0, 0, 0, 3, 0]) delays.push(seconds(yield* next(events)))
      assert.deepStrictEqual(delays, [1, 2, 4, 8, 16, 30, 30, 1, 2])
    }).pipe(maximalDraw))
})
