// Small helpers shared by the control plane's tests: bounded polling without sleeps on the test clock.
import { Effect } from "effect"

/** Yields to other fibers until `check` holds, at most `tries` times; fails with `what` otherwise. */
export const eventually = <E, R>(what: string, check: Effect.Effect<boolean, E, R>, tries = 200) =>
  Effect.gen(function*() {
    for (let i = 0; i < tries; i++) {
      if (yield* check) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`timed out waiting for: ${what}`))
  })

/** Polls with real time (for tests over real sockets): every 10 ms, for at most `ms`. */
export const waitFor = async (what: string, check: () => boolean | Promise<boolean>, ms = 5000): Promise<void> => {
  const until = Date.now() + ms
  while (Date.now() < until) {
    if (await check()) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`timed out after ${ms} ms waiting for: ${what}`)
}
