// Reconnect backoff: capped exponential with FULL jitter (AWS "full jitter": the delay is uniform in
// [0, min(cap, base * 2^attempt)]), reset once a connection has stayed healthy for `resetAfter`.
// Pure in time and randomness: the delay comes from Random, the healthy check from Clock, so tests
// drive both with TestClock and a seeded Random.
import { Clock, Duration, Effect, Random } from "effect"

export interface BackoffOptions {
  readonly base: Duration.Duration
  readonly cap: Duration.Duration
  readonly resetAfter: Duration.Duration
}

/** The ceiling of the n-th delay (attempt 0 = first retry): `min(cap, base * 2^attempt)`. */
export const ceiling = (options: Pick<BackoffOptions, "base" | "cap">, attempt: number): Duration.Duration => {
  const base = Duration.toMillis(options.base)
  const cap = Duration.toMillis(options.cap)
  // 2^attempt overflows to Infinity for large attempts; min() keeps it at the cap.
  return Duration.millis(Math.min(cap, base * 2 ** Math.min(attempt, 52)))
}

/** Full jitter: `u` in [0, 1) scales the ceiling. */
export const fullJitter = (options: Pick<BackoffOptions, "base" | "cap">, attempt: number, u: number): Duration.Duration =>
  Duration.millis(Math.floor(Duration.toMillis(ceiling(options, attempt)) * u))

export interface Backoff {
  /** Call when a connection completes its handshake. */
  readonly connected: Effect.Effect<void>
  /** Call when the link is lost or a dial fails; returns how long to wait before the next dial. */
  readonly nextDelay: Effect.Effect<Duration.Duration>
  /** Forget the failure history (e.g. after re-authenticating with a new credential). */
  readonly reset: Effect.Effect<void>
  readonly attempt: Effect.Effect<number>
}

export const makeBackoff = (options: BackoffOptions): Effect.Effect<Backoff> =>
  Effect.sync(() => {
    let attempt = 0
    let connectedAt: number | undefined
    const connected = Clock.currentTimeMillis.pipe(Effect.map((now) => {
      connectedAt = now
    }))
    const nextDelay = Effect.gen(function*() {
      if (connectedAt !== undefined) {
        const now = yield* Clock.currentTimeMillis
        if (now - connectedAt >= Duration.toMillis(options.resetAfter)) attempt = 0
        connectedAt = undefined
      }
      const u = yield* Random.next
      const delay = fullJitter(options, attempt, u)
      attempt++
      return delay
    })
    return {
      connected,
      nextDelay,
      reset: Effect.sync(() => {
        attempt = 0
        connectedAt = undefined
      }),
      attempt: Effect.sync(() => attempt)
    }
  })
