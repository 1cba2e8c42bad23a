// WebUi: serves the web UI from the package's web/ folder (`/` is index.html, `/ui/*` the rest) and noVNC
// from the installed @novnc/novnc package (`/vendor/novnc/core/*` and `/vendor/novnc/vendor/*`), so the UI
// needs no build step and nothing from the network. Paths are resolved inside their root only (no `..`,
// no encoded separators, no dotfiles); answers carry a content type, an ETag and a Cache-Control header.
import { Effect } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { readFile, stat } from "node:fs/promises"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

const WEB_ROOT = fileURLToPath(new URL("../web/", import.meta.url))
/** The package root of @novnc/novnc (its only export is core/rfb.js). */
const NOVNC_ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.resolve("@novnc/novnc"))))

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
  ".wasm": "application/wasm"
}

// The UI changes with each release and must be revalidated; noVNC changes only with the package version.
const UI_CACHE = "no-cache"
const VENDOR_CACHE = "public, max-age=86400"

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "x-frame-options": "DENY",
  "content-security-policy":
    "default-src 'self'; connect-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
}

const notFound = HttpServerResponse.jsonUnsafe({ error: { code: "not_found", message: "no such file" } }, { status: 404 })

/**
 * Maps the rest of a URL path to a file under `root`, or undefined when it could escape it or names
 * something that is not served (dotfiles, encoded slashes, unknown types).
 */
export const resolveInside = (root: string, rest: string): string | undefined => {
  let decoded: string
  try {
    decoded = decodeURIComponent(rest)
  } catch {
    return undefined
  }
  if (decoded.includes("\0") || decoded.includes("\\") || rest.includes("%2f") || rest.includes("%2F")) return undefined
  const parts = decoded.split("/").filter((p) => p !== "")
  if (parts.length === 0 || parts.some((p) => p.startsWith("."))) return undefined
  const file = path.resolve(root, ...parts)
  if (!file.startsWith(root.endsWith(path.sep) ? root : root + path.sep)) return undefined
  if (CONTENT_TYPES[path.extname(file)] === undefined) return undefined
  return file
}

/** Answers one file with its content type, cache policy and ETag (304 when the browser has it). */
const serveFile = (file: string | undefined, cacheControl: string) =>
  Effect.gen(function*() {
    if (file === undefined) return notFound
    const request = yield* HttpServerRequest.HttpServerRequest
    const found = yield* Effect.tryPromise(async () => {
      const info = await stat(file)
      if (!info.isFile()) return undefined
      const etag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`
      if (request.headers["if-none-match"] === etag) return { etag, body: undefined }
      return { etag, body: new Uint8Array(await readFile(file)) }
    }).pipe(Effect.orElseSucceed(() => undefined))
    if (found === undefined) return notFound
    const headers = { ...SECURITY_HEADERS, "cache-control": cacheControl, etag: found.etag }
    if (found.body === undefined) return HttpServerResponse.empty({ status: 304, headers })
    return HttpServerResponse.uint8Array(found.body, { contentType: CONTENT_TYPES[path.extname(file)]!, headers })
  })

/** The part of the request path after `prefix`. */
const restOf = (prefix: string) =>
  Effect.map(HttpServerRequest.HttpServerRequest, (request) => new URL(request.url, "http://x").pathname.slice(prefix.length))

export const routes = HttpRouter.use(Effect.fnUntraced(function*(router) {
  const index = serveFile(path.join(WEB_ROOT, "index.html"), UI_CACHE)
  yield* router.add("GET", "/", index)
  yield* router.add("GET", "/index.html", index)
  yield* router.add("GET", "/ui/*", Effect.flatMap(restOf("/ui/"), (rest) => serveFile(resolveInside(WEB_ROOT, rest), UI_CACHE)))
  for (const folder of ["core", "vendor"]) {
    const prefix = `/vendor/novnc/${folder}/` as const
    const root = path.join(NOVNC_ROOT, folder)
    yield* router.add("GET", `${prefix}*`, Effect.flatMap(restOf(prefix), (rest) => serveFile(resolveInside(root, rest), VENDOR_CACHE)))
  }
}))

/** The web UI routes. Needs an HttpRouter. */
export const layer = routes
