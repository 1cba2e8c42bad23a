// One Kubernetes API call as the backend makes it: a request timeout, error mapping, the health record
// and the error metric, and a bounded retry of what is worth retrying (409 Conflict, 429, 5xx, network
// errors, timeouts) with the agent's backoff, never waiting less than a Retry-After asks (up to a bound).
import { Duration, Effect, Option, Schedule } from "effect"
import type { ApiHealth } from "./apiHealth.ts"
import { exponentialFullJitter } from "./backoff.ts"
import { KubernetesError, type KubernetesErrorReason } from "./kubeError.ts"

const RETRYABLE = new Set<KubernetesErrorReason>(["Conflict", "TooManyRequests", "Unavailable", "Timeout"])

export interface CallOptions {
  /** First retry delay's ceiling; doubles each attempt (full jitter). */
  readonly retryBase: Duration.Input
  /** Retries after the first attempt. */
  readonly retryTimes: number
  /** Longest wait honoured from a Retry-After header, and the cap of the backoff. */
  readonly maxRetryAfter: Duration.Input
  /** A call without an answer by then counts as a Timeout. */
  readonly requestTimeout: Duration.Input
}

/** A call that runs `f`, maps what it throws with `toError`, and records the outcome under `verb` and `resource`. */
export type Call = <A>(verb: string, resource: string, what: string, f: () => Promise<A>) => Effect.Effect<A, KubernetesError>

export const makeCall = (options: CallOptions, health: ApiHealth, toError: (what: string, e: unknown) => KubernetesError): Call => {
  const requestTimeout = Duration.fromInputUnsafe(options.requestTimeout)
  const maxRetryAfter = Duration.fromInputUnsafe(options.maxRetryAfter)
  const retrySchedule = exponentialFullJitter(options.retryBase, maxRetryAfter).pipe(
    Schedule.setInputType<KubernetesError>(),
    Schedule.modifyDelay(({ duration, input }) =>
      Effect.succeed(
        input.retryAfterSeconds === undefined
          ? duration
          : Duration.max(duration, Duration.min(Duration.seconds(input.retryAfterSeconds), maxRetryAfter))
      )
    )
  )
  return (verb, resource, what, f) =>
    Effect.tryPromise({ try: f, catch: (e) => toError(what, e) }).pipe(
      Effect.timeoutOrElse({
        duration: requestTimeout,
        orElse: () => Effect.fail(new KubernetesError({ reason: "Timeout", message: `${what}: no answer within ${Duration.format(requestTimeout)}` }))
      }),
      Effect.tapError((e) => health.recordFailure(verb, resource, e)),
      Effect.tap(() => health.recordSuccess),
      // One client span per attempt, inside the command's trace (retries show as siblings).
      Effect.withSpan(`Kubernetes.${verb} ${resource}`, { kind: "client", attributes: { "k8s.verb": verb, "k8s.resource": resource } }),
      Effect.retry({ schedule: retrySchedule, times: options.retryTimes, while: (e) => RETRYABLE.has(e.reason) })
    )
}

/** A NotFound answer as None. */
export const orNone = <A>(eff: Effect.Effect<A, KubernetesError>): Effect.Effect<Option.Option<A>, KubernetesError> =>
  eff.pipe(Effect.map(Option.some), Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeedNone))

/** A NotFound answer as success (deleting what is already gone). */
export const ignoreNotFound = (eff: Effect.Effect<unknown, KubernetesError>): Effect.Effect<void, KubernetesError> =>
  eff.pipe(Effect.asVoid, Effect.catchIf((e) => e.reason === "NotFound", () => Effect.void))
