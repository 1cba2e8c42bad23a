// Drain: the graceful stop of one replica. When its scope starts closing (SIGTERM), `start` turns the replica
// to draining: GET /readyz answers 503 (the Service stops sending it traffic), new viewer and agent sockets are
// refused with "go elsewhere", agents get `goaway` (reconnect now, to another replica) and viewers are closed
// with CloseCode.reconnect (the web UI reconnects and resumes the session); then the usual shutdown runs.
// The default value (an embedder wiring single services without ControlPlane) never drains.
import { Context, Effect, Layer, type Scope } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"

export interface DrainShape {
  /** True once draining has started (read synchronously on each request). */
  readonly draining: () => boolean
  /** Runs `hook` when draining starts (hooks run one after the other, in registration order). */
  readonly onDrain: (hook: Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
  /** Starts draining and runs the hooks; once. */
  readonly start: Effect.Effect<void>
}

/** Where Kubernetes' readiness probe looks: 200 while taking traffic, 503 while draining. */
export const READYZ_PATH = "/readyz"

export const make = Effect.sync((): DrainShape => {
  let draining = false
  const hooks = new Set<Effect.Effect<void>>()
  return {
    draining: () => draining,
    onDrain: (hook) =>
      Effect.acquireRelease(Effect.sync(() => void hooks.add(hook)), () => Effect.sync(() => void hooks.delete(hook))),
    start: Effect.suspend(() => {
      if (draining) return Effect.void
      draining = true
      return Effect.logInfo("draining: refusing new viewers and agents, handing over the connected ones").pipe(
        Effect.andThen(Effect.forEach([...hooks], (hook) => Effect.catchCause(hook, (cause) => Effect.logWarning("draining: a hook failed", cause)), { discard: true }))
      )
    })
  }
})

export const Drain = Context.Reference<DrainShape>("control-plane/Drain", {
  defaultValue: () => ({ draining: () => false, onDrain: () => Effect.void, start: Effect.void })
})

/** A drain of its own, with GET /readyz on the HttpRouter. */
export const layer = Layer.effect(Drain, Effect.gen(function*() {
  const drain = yield* make
  const router = yield* HttpRouter.HttpRouter
  yield* router.add("GET", READYZ_PATH, Effect.sync(() =>
    drain.draining()
      ? HttpServerResponse.jsonUnsafe({ status: "draining" }, { status: 503 })
      : HttpServerResponse.jsonUnsafe({ status: "ready" })))
  return drain
}))
