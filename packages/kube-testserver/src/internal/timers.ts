// Time in the test server. Every delay it makes (kubelet steps, fault latency, watch timeouts and
// bookmarks, a port-forward's last flush) runs on an Effect Clock: the real one by default, or the one a
// test passes (`ServerOptions.clock`), so a TestClock moves the server's time by hand.
import { Clock, Duration, Effect } from "effect"

export interface Timers {
  /** Calls `f` after `ms`; the returned function cancels it. */
  readonly after: (ms: number, f: () => void) => () => void
  /** Calls `f` every `ms` until cancelled. */
  readonly every: (ms: number, f: () => void) => () => void
  /** Resolves after `ms`. */
  readonly sleep: (ms: number) => Promise<void>
}

export const makeTimers = (clock: Clock.Clock | undefined): Timers => {
  const onClock = <A>(effect: Effect.Effect<A>) => (clock === undefined ? effect : Effect.provideService(effect, Clock.Clock, clock))
  // Callbacks never run inside the caller (a store event, a request handler), even for a zero delay.
  const fork = (effect: Effect.Effect<void>) => {
    const fiber = Effect.runFork(onClock(Effect.andThen(Effect.yieldNow, effect)))
    return () => fiber.interruptUnsafe()
  }
  const wait = (ms: number) => Effect.sleep(Duration.millis(Math.max(0, ms)))
  return {
    after: (ms, f) => fork(Effect.andThen(wait(ms), Effect.sync(f))),
    every: (ms, f) => fork(Effect.forever(Effect.andThen(wait(ms), Effect.sync(f)))),
    sleep: (ms) => Effect.runPromise(onClock(wait(ms)))
  }
}
