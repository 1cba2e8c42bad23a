// The one shape of an HTTP error answer, for the API, the upgrade routes and the web UI: `{"error": {"code", "message"}}`.
import { Cause, Effect } from "effect"
import { HttpServerResponse } from "effect/http"

export const errorResponse = (status: number, code: string, message: string, extra: Readonly<Record<string, unknown>> = {}) =>
  HttpServerResponse.jsonUnsafe({ error: { code, message, ...extra } }, { status })

/**
 * A route's answer: its expected failures answered by `toResponse`, a defect logged and answered 500 without
 * details, inside a span named after the route. Interruption passes through.
 */
export const answering = <F>(toResponse: (e: F) => HttpServerResponse.HttpServerResponse) =>
<R>(name: string, effect: Effect.Effect<HttpServerResponse.HttpServerResponse, F, R>) =>
  effect.pipe(
    Effect.catch((e: F) => Effect.succeed(toResponse(e))),
    Effect.catchCause((cause) =>
      Cause.hasInterruptsOnly(cause)
        ? Effect.failCause(cause)
        : Effect.logError(`${name} failed`, cause).pipe(Effect.as(errorResponse(500, "internal", "internal error; see the control plane log")))
    ),
    Effect.withSpan(name)
  )
