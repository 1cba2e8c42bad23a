// WebUi: serves the web UI from the package's web/ folder (`/` is index.html, `/ui/*` the rest) and noVNC from
// the installed @novnc/novnc package (`/vendor/novnc/core/*` and `/vendor/novnc/vendor/*`), so the UI needs no
// build step and nothing from the network. Files are served by effect/http's HttpStaticServer (paths resolved
// inside their root, content types, ETags and 304s); on top, only the file types the UI uses are served and no
// dotfiles. Every answer of the control plane, UI or API, carries the security headers below.
import { Effect } from "effect"
import { HttpEffect, HttpRouter, HttpServerRequest, HttpServerResponse, HttpStaticServer } from "effect/http"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { errorResponse } from "./internal/httpError.ts"

const WEB_ROOT = fileURLToPath(new URL("../web/", import.meta.url))
/** The package root of @novnc/novnc (its only export is core/rfb.js). */
const NOVNC_ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.resolve("@novnc/novnc"))))

/** The file types the UI and noVNC consist of; anything else under the roots is not served. */
const SERVED = new Set([".html", ".js", ".mjs", ".css", ".json", ".svg", ".png", ".ico", ".woff2", ".wasm"])

// The UI changes with each release and must be revalidated; noVNC changes only with the package version.
const UI_CACHE = "no-cache"
const VENDOR_CACHE = "public, max-age=86400"

export const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy":
    "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
}

const notFound = errorResponse(404, "not_found", "no such file")

/** Whether a request path (below its root) names a file the UI serves: no dotfiles, no encoded separators, a known type. */
export const servable = (requestPath: string): boolean => {
  const raw = requestPath.split(/[?#]/)[0]!
  let decoded: string
  try {
    decoded = decodeURIComponent(raw)
  } catch {
    return false
  }
  if (decoded.includes("\0") || decoded.includes("\\") || /%2f/i.test(raw)) return false
  const parts = decoded.split("/").filter((p) => p !== "")
  return parts.length > 0 && !parts.some((p) => p.startsWith(".")) && SERVED.has(path.extname(decoded).toLowerCase())
}

/** Files under `root` (the request URL is already relative to the route's prefix); anything not served is a JSON 404. */
const files = (root: string, cacheControl: string) =>
  Effect.map(HttpStaticServer.make({ root, index: undefined, cacheControl }), (app) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      servable(request.url) ? app.pipe(Effect.orElseSucceed(() => notFound)) : Effect.succeed(notFound)))

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  yield* router.addGlobalMiddleware((app) =>
    HttpEffect.withPreResponseHandler(app, (_request, response) => Effect.succeed(HttpServerResponse.setHeaders(response, SECURITY_HEADERS)))
  )
  const ui = yield* files(WEB_ROOT, UI_CACHE)
  const index = HttpServerRequest.HttpServerRequest.use((request) => Effect.provideService(ui, HttpServerRequest.HttpServerRequest, request.modify({ url: "/index.html" })))
  yield* router.add("GET", "/", index)
  yield* router.add("GET", "/index.html", index)
  yield* router.prefixed("/ui").add("GET", "/*", ui)
  for (const folder of ["core", "vendor"]) {
    yield* router.prefixed(`/vendor/novnc/${folder}`).add("GET", "/*", yield* files(path.join(NOVNC_ROOT, folder), VENDOR_CACHE))
  }
}))

/** The web UI routes and the security headers. Needs an HttpRouter and the HTTP platform (FileSystem, Path, HttpPlatform). */
export const layer = routes
