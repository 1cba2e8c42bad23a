// How the Kubernetes API has been answering, for the heartbeat's status: degraded after recent errors,
// failing after a while of nothing but errors. Only errors that say the API (or our access to it) is
// unwell count; 404, 409 and 422 are ordinary answers of a working API. Every failed call is also
// counted in the API error metric.
import { Clock, Duration, Effect, Metric } from "effect"
import { kubernetesApiErrors } from "../Metrics.ts"
import type { KubernetesError, KubernetesErrorReason } from "./kubeError.ts"

export interface ClusterHealth {
  readonly status: "ok" | "degraded" | "failing"
  readonly message?: string
}

const UNHEALTHY = new Set<KubernetesErrorReason>(["Forbidden", "Unauthorized", "TooManyRequests", "Unavailable", "Timeout"])

export interface ApiHealth {
  readonly recordSuccess: Effect.Effect<void>
  readonly recordFailure: (verb: string, resource: string, e: KubernetesError) => Effect.Effect<void>
  readonly health: Effect.Effect<ClusterHealth>
}

export const makeApiHealth = (options: {
  /** Errors within this window make the health `degraded`. */
  readonly degradedWindow: Duration.Input
  /** Only errors for this long make the health `failing`. */
  readonly failingAfter: Duration.Input
}): ApiHealth => {
  const degradedWindow = Duration.toMillis(Duration.fromInputUnsafe(options.degradedWindow))
  const failingAfter = Duration.toMillis(Duration.fromInputUnsafe(options.failingAfter))
  let failingSince: number | undefined
  let lastError: string | undefined
  let errorTimes: Array<number> = []

  const recordFailure = (verb: string, resource: string, e: KubernetesError) =>
    Effect.gen(function*() {
      yield* Metric.update(Metric.withAttributes(kubernetesApiErrors, { verb, resource, code: String(e.code ?? e.reason) }), 1)
      if (!UNHEALTHY.has(e.reason)) {
        // The API answered (404, 409, 422...): it is reachable and working.
        failingSince = undefined
        return
      }
      const now = yield* Clock.currentTimeMillis
      failingSince ??= now
      lastError = e.message
      errorTimes.push(now)
    })

  const health = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    errorTimes = errorTimes.filter((t) => now - t < degradedWindow)
    if (failingSince !== undefined && now - failingSince >= failingAfter) {
      return { status: "failing", message: `Kubernetes API failing for ${Math.round((now - failingSince) / 1000)}s: ${lastError}` } as const
    }
    if (failingSince !== undefined || errorTimes.length > 0) {
      return { status: "degraded", message: `${errorTimes.length} Kubernetes API error(s) recently; last: ${lastError}` } as const
    }
    return { status: "ok" } as const
  })

  return {
    recordSuccess: Effect.sync(() => {
      failingSince = undefined
    }),
    recordFailure,
    health
  }
}
