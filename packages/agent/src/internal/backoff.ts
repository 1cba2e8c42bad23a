// The agent's one backoff, as Schedule values: capped exponential growth with FULL jitter (AWS "full
// jitter": the n-th delay is uniform in [0, min(cap, base * 2^n)]), started afresh when the caller says
// the last attempt went well. The reconnect loop, the session watch and the Kubernetes call retry use it.
// Delays come from Random and waits from Clock, so tests drive them with TestClock and a fixed Random.
import { Clock, Duration, Effect, Random, Schedule } from "effect"

/** Exponential delays from `base`, doubling, each drawn uniformly from [0, min(cap, base * 2^n)]. */
export const exponentialFullJitter = (base: Duration.Input, cap: Duration.Input): Schedule.Schedule<Duration.Duration> => {
  const capMillis = Duration.toMillis(Duration.fromInputUnsafe(cap))
  return Schedule.exponential(base).pipe(
    // 2^n overflows to Infinity for large n; min() keeps the ceiling at the cap.
    Schedule.modifyDelay(({ duration }) => Effect.map(Random.next, (u) => Duration.millis(Math.floor(Math.min(Duration.toMillis(duration), capMillis) * u))))
  )
}

/** `self`, started afresh (first delay, attempt 1) whenever `reset(input)` holds for the input of a step. */
export const resetWhen = <Output, Input, E, R>(
  self: Schedule.Schedule<Output, Input, E, R>,
  reset: (input: Input) => boolean
): Schedule.Schedule<Output, Input, E, R> =>
  Schedule.fromStep(Effect.map(Schedule.toStep(self), (first) => {
    let step = first
    return (now: number, input: Input) =>
      reset(input)
        ? Effect.flatMap(Schedule.toStep(self), (fresh) => {
          step = fresh
          return fresh(now, input)
        })
        : step(now, input)
  }))

export interface ReconnectBackoff {
  /** RECONNECT_DELAY: the ceiling of the first delay. */
  readonly base: Duration.Duration
  /** MAX_RECONNECT_DELAY: no ceiling grows past it. */
  readonly cap: Duration.Duration
  /** RECONNECT_RESET_AFTER: a link up at least this long starts the backoff afresh. */
  readonly resetAfter: Duration.Duration
}

/** The reconnect backoff. Its input is how long the link that just ended was up (zero when a dial failed). */
export const reconnectSchedule = (options: ReconnectBackoff): Schedule.Schedule<Duration.Duration, Duration.Duration> =>
  resetWhen(
    exponentialFullJitter(options.base, options.cap).pipe(Schedule.setInputType<Duration.Duration>()),
    (upFor) => Duration.isGreaterThanOrEqualTo(upFor, options.resetAfter)
  )

/** Steps a never-ending schedule by hand, for loops that decide per attempt whether to wait (and log how long). */
export const makeStepper = <Input>(schedule: Schedule.Schedule<Duration.Duration, Input>) =>
  Effect.map(Schedule.toStep(schedule), (step) => (input: Input): Effect.Effect<Duration.Duration> =>
    Clock.currentTimeMillis.pipe(
      Effect.flatMap((now) => step(now, input)),
      Effect.map(([, delay]) => delay),
      Effect.orDie // the schedules above never end
    ))
