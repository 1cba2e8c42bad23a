// What the browser loads from the control plane before any API call: the web UI (/, /ui/*) and noVNC from
// the installed @novnc/novnc package (/vendor/novnc/*), with content types, cache headers and ETags, and
// nothing outside those folders however the path is spelled. Raw HTTP requests, so paths reach the server
// exactly as written (fetch would normalise `..`).
import { assert, describe, it } from "@effect/vitest"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { Effect, Layer } from "effect"
import { request } from "node:http"

interface Answer {
  readonly status: number
  readonly headers: Record<string, string | Array<string> | undefined>
  readonly body: string
}

const get = (port: number, path: string, headers: Record<string, string> = {}) =>
  Effect.promise(() =>
    new Promise<Answer>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port, path, headers }, (res) => {
        let body = ""
        res.setEncoding("utf8")
        res.on("data", (c: string) => (body += c))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      })
      req.on("error", reject)
      req.end()
    })
  )

const controlPlane = ControlPlane.layerNoDeps.pipe(
  Layer.provide(ControlPlaneConfig.layerFromRecord({ HOST: "127.0.0.1", PORT: "0", DEV_MODE: "true", DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn" }))
)

describe("web UI and noVNC files", () => {
  it.live("serves the UI, noVNC and nothing else", () =>
    Effect.gen(function*() {
      const { port } = yield* ControlPlane

      const index = yield* get(port, "/")
      assert.strictEqual(index.status, 200)
      assert.strictEqual(index.headers["content-type"], "text/html; charset=utf-8")
      assert.strictEqual(index.headers["cache-control"], "no-cache")
      assert.strictEqual(index.headers["x-content-type-options"], "nosniff")
      assert.include(String(index.headers["content-security-policy"]), "default-src 'self'")
      assert.include(index.body, `src="/ui/app.js"`)

      const app = yield* get(port, "/ui/app.js")
      assert.strictEqual(app.status, 200)
      assert.strictEqual(app.headers["content-type"], "text/javascript; charset=utf-8")
      const css = yield* get(port, "/ui/style.css")
      assert.strictEqual(css.headers["content-type"], "text/css; charset=utf-8")

      // Revalidation: the same ETag gets 304 and no body.
      const etag = String(app.headers["etag"])
      assert.match(etag, /^"[0-9a-f]+-[0-9a-f]+"$/)
      const again = yield* get(port, "/ui/app.js", { "if-none-match": etag })
      assert.strictEqual(again.status, 304)
      assert.strictEqual(again.body, "")

      // noVNC's entry module and what it imports from its vendor folder, cached for a day.
      const rfb = yield* get(port, "/vendor/novnc/core/rfb.js")
      assert.strictEqual(rfb.status, 200)
      assert.strictEqual(rfb.headers["content-type"], "text/javascript; charset=utf-8")
      assert.strictEqual(rfb.headers["cache-control"], "public, max-age=86400")
      assert.include(rfb.body, "export default class RFB")
      assert.strictEqual((yield* get(port, "/vendor/novnc/vendor/pako/lib/zlib/inflate.js")).status, 200)

      for (const path of [
        "/ui/../src/Api.ts",
        "/ui/%2e%2e/package.json",
        "/ui/..%2fpackage.json",
        "/ui/..%5cpackage.json",
        "/ui/%00app.js",
        "/ui/.hidden.js",
        "/ui/",
        "/ui/missing.js",
        "/vendor/novnc/core/../../package.json",
        "/vendor/novnc/core/..%2f..%2fpackage.json",
        "/vendor/novnc/docs/API.md",
        "/vendor/novnc/package.json",
        "/vendor/novnc/core/rfb.js.map.txt",
        "/health",
        "/nope"
      ]) {
        const answer = yield* get(port, path)
        assert.strictEqual(answer.status, 404, `${path} answered ${answer.status}`)
        assert.notInclude(answer.body, "\"name\"", `${path} leaked a file`)
        // Not an empty 404: the JSON error shape, as everywhere else.
        assert.strictEqual(JSON.parse(answer.body).error.code, "not_found", `${path} answered ${answer.body}`)
      }
      assert.include(JSON.parse((yield* get(port, "/health")).body).error.message, "/api/v1/health")

      // The API keeps its own JSON 404 under /api/v1.
      const api = yield* get(port, "/api/v1/nope")
      assert.strictEqual(api.status, 404)
      assert.include(api.body, "not_found")
    }).pipe(Effect.provide(controlPlane)), 60_000)
})
