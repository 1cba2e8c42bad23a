// The one shape of an HTTP error answer, for the API, the upgrade routes and the web UI: `{"error": {"code", "message"}}`.
import { HttpServerResponse } from "effect/http"

export const errorResponse = (status: number, code: string, message: string, extra: Readonly<Record<string, unknown>> = {}) =>
  HttpServerResponse.jsonUnsafe({ error: { code, message, ...extra } }, { status })
