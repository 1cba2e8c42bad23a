// Plain node:http helpers of the API front end: JSON answers, Status errors, request bodies.
import type * as http from "node:http"
import type { ResourceInfo } from "./resources.ts"
import { ApiError, badRequest, failure } from "./status.ts"
import type { Obj } from "./store.ts"

export const sendJson = (res: http.ServerResponse, code: number, body: unknown, headers: Record<string, string | Array<string>> = {}) => {
  if (res.headersSent) {
    res.end()
    return
  }
  const text = JSON.stringify(body)
  res.writeHead(code, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...headers })
  res.end(text)
}

export const sendError = (res: http.ServerResponse, e: unknown) => {
  if (e instanceof ApiError) return sendJson(res, e.status.code ?? 500, e.status, e.headers)
  console.error("kube-testserver: internal error", e)
  sendJson(res, 500, failure(500, "InternalError", `Internal error occurred: ${(e as Error)?.message ?? String(e)}`))
}

export const readBody = (req: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    const chunks: Array<Buffer> = []
    req.on("data", (c: Buffer) => chunks.push(c))
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
    req.on("error", reject)
  })

export const parseJsonBody = (info: ResourceInfo, text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch (e) {
    throw badRequest(`${info.kind} in version "${info.version}" cannot be handled as a ${info.kind}: ${text.trim() === "" ? "no content" : `couldn't get version/kind; json parse error: ${(e as Error).message}`}`)
  }
}

/** A list item carries no kind/apiVersion of its own. */
export const stripType = (o: Obj): Obj => {
  const { kind: _k, apiVersion: _a, ...rest } = o
  return rest
}

export const parseDryRun = (q: URLSearchParams): boolean => {
  const vals = q.getAll("dryRun")
  for (const v of vals) if (v !== "All") throw badRequest(`Invalid dryRun value: ${v}`)
  return vals.length > 0
}
