// One watch of the agent's session pods as a Stream: every ADDED / MODIFIED / DELETED / BOOKMARK event
// until the server closes the watch (the stream ends), a 410 Expired (fails with `Expired`: relist), or
// an error. The watch itself is the client's (Kubernetes.ts passes it in); failures are recorded once.
import { Cause, Effect, Queue, Stream } from "effect"
import type { ApiHealth } from "./apiHealth.ts"
import { KubernetesError } from "./kubeError.ts"
import type { PodView } from "./kubeObjects.ts"

export interface PodEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK"
  readonly object: PodView
}

/** Starts a watch with these callbacks (the client's Watch.watch, bound to a path and query). */
export type StartWatch = (
  onEvent: (type: string, object: { code?: number; message?: string }) => void,
  onDone: (err: unknown) => void
) => Promise<AbortController>

export const watchPods = (start: StartWatch, health: ApiHealth, toError: (what: string, e: unknown) => KubernetesError): Stream.Stream<PodEvent, KubernetesError> =>
  Stream.callback<PodEvent, KubernetesError>((queue) => {
    const fail = (e: KubernetesError) => Queue.failCauseUnsafe(queue, Cause.fail(e))
    return Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          start(
            (type, object) => {
              if (type === "ERROR") {
                fail(object.code === 410
                  ? new KubernetesError({ reason: "Expired", message: `watch pods: ${object.message ?? "resourceVersion expired"}`, code: 410 })
                  : toError("watch pods", { statusCode: object.code ?? 500, message: object.message }))
              } else if (type === "ADDED" || type === "MODIFIED" || type === "DELETED" || type === "BOOKMARK") {
                Queue.offerUnsafe(queue, { type, object: object as PodView })
              }
            },
            (err) => {
              const e = err as { name?: string } | null | undefined
              // A clean server close and the client's 30 s inactivity timeout both just end this watch.
              if (e === null || e === undefined || e.name === "TimeoutError") Queue.endUnsafe(queue)
              else if (e.name !== "AbortError") fail(toError("watch pods", err))
            }
          ),
        catch: (e) => toError("watch pods", e)
      }).pipe(Effect.tap(() => health.recordSuccess)),
      (controller) => Effect.sync(() => controller.abort())
    )
  }).pipe(
    // Every failure, whether the watch could not start or broke later, is counted once here.
    Stream.tapError((e) => e.reason === "Expired" ? Effect.void : health.recordFailure("watch", "pods", e))
  )
