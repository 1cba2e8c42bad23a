// TLS material made at test time with `openssl` (a throwaway CA and a server certificate for 127.0.0.1 and
// localhost), and an API client that trusts that CA.
import { Effect } from "effect"
import { execFileSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { request as httpsRequest } from "node:https"
import { join } from "node:path"
import type { ApiResponse } from "./stack.ts"

export interface TestPki {
  readonly caFile: string
  readonly certFile: string
  readonly keyFile: string
  readonly ca: string
}

/** A private CA and a server certificate signed by it, in `dir` (EC P-256: quick to generate). */
export const makePki = (dir: string): TestPki => {
  const f = (n: string) => join(dir, n)
  const openssl = (...args: Array<string>) => execFileSync("openssl", args, { stdio: "pipe" })
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
  openssl("req", "-x509", ...ec, "-keyout", f("ca.key"), "-out", f("ca.pem"), "-days", "1", "-subj", "/CN=StreamSpace test CA")
  openssl("req", ...ec, "-keyout", f("server.key"), "-out", f("server.csr"), "-subj", "/CN=127.0.0.1")
  writeFileSync(f("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n")
  openssl("x509", "-req", "-in", f("server.csr"), "-CA", f("ca.pem"), "-CAkey", f("ca.key"), "-CAcreateserial", "-out", f("server.pem"), "-days", "1", "-extfile", f("ext.cnf"))
  return { caFile: f("ca.pem"), certFile: f("server.pem"), keyFile: f("server.key"), ca: readFileSync(f("ca.pem"), "utf8") }
}

/** The same shape as `api` in stack.ts, over https trusting `ca`. */
export const httpsApi = (base: string, token: string, ca: string) => {
  const call = (method: string, path: string, body?: unknown) =>
    Effect.promise(() =>
      new Promise<ApiResponse>((resolve, reject) => {
        const payload = body === undefined ? undefined : JSON.stringify(body)
        const req = httpsRequest(`${base}/api/v1${path}`, {
          method,
          ca,
          headers: { authorization: `Bearer ${token}`, ...(payload === undefined ? {} : { "content-type": "application/json" }) }
        }, (res) => {
          let text = ""
          res.on("data", (c: Buffer) => (text += c.toString()))
          res.on("end", () => {
            let parsed: unknown = undefined
            try {
              parsed = JSON.parse(text)
            } catch {
              // not JSON
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, text })
          })
        })
        req.on("error", reject)
        req.end(payload)
      })
    )
  return {
    get: (path: string) => call("GET", path),
    post: (path: string, body?: unknown) => call("POST", path, body ?? {}),
    patch: (path: string, body: unknown) => call("PATCH", path, body),
    del: (path: string) => call("DELETE", path)
  }
}
