// Waiting in tests: the one polling helper. Real time on purpose, so it also works under TestClock (where
// Clock-based sleeps never fire); use it only for state that changes without an event to wait on.
import { Effect } from "effect"

const tick = (ms: number) =>
  Effect.callback<void>((resume) => {
    const t = setTimeout(() => resume(Effect.void), ms)
    return Effect.sync(() => clearTimeout(t))
  })

export interface WaitOptions {
  /** Give up after this many milliseconds of real time (default 10 000). */
  readonly timeout?: number
  /** Poll every this many milliseconds (default 10). */
  readonly interval?: number
}

/** Runs `check` until it yields something other than undefined/false, and returns it; fails naming `what` at the timeout. */
export const waitFor = <A, E, R>(
  what: string,
  check: Effect.Effect<A | undefined | false, E, R>,
  options: WaitOptions = {}
): Effect.Effect<A, E | Error, R> =>
  Effect.gen(function*() {
    const timeout = options.timeout ?? 10_000
    const deadline = Date.now() + timeout
    while (true) {
      const a = yield* check
      if (a !== undefined && a !== false) return a as A
      if (Date.now() > deadline) return yield* Effect.fail(new Error(`timed out after ${timeout} ms waiting for ${what}`))
      yield* tick(options.interval ?? 10)
    }
  })

/** `waitFor` for promise-based tests. */
export const waitForPromise = <A>(
  what: string,
  check: () => A | undefined | false | Promise<A | undefined | false>,
  options: WaitOptions = {}
): Promise<A> => Effect.runPromise(waitFor(what, Effect.promise(async () => check()), options))

/** Fails with a defect when `effect` does not finish within `ms` of real time (works under TestClock too). */
export const within = <A, E, R>(ms: number, what: string, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.raceFirst(effect, tick(ms).pipe(Effect.andThen(Effect.die(new Error(`timed out after ${ms} ms waiting for ${what}`)))))
