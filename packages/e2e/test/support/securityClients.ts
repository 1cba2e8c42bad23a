// Hand-rolled clients for security tests: an agent socket that says only what the test wants (to try stolen,
// reused or revoked tokens), and log/DB greps for secrets.
import { PGlite } from "@electric-sql/pglite"
import { Effect } from "effect"
import { createHash } from "node:crypto"
import { WebSocket } from "ws"

export const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest("hex")

/** Every row of every table of the PGlite database in DATA_DIR (the control plane must not be running). */
export const dumpDatabase = (dataDir: string) =>
  Effect.promise(async () => {
    const db = await PGlite.create(dataDir)
    try {
      const tables = await db.query<{ table_name: string }>(`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`)
      const dump: Record<string, Array<Record<string, unknown>>> = {}
      for (const { table_name } of tables.rows) dump[table_name] = (await db.query<Record<string, unknown>>(`SELECT * FROM "${table_name}"`)).rows
      return dump
    } finally {
      await db.close()
    }
  })

export interface RawAgentResult {
  /** HTTP status when the upgrade was refused, else 101. */
  readonly status: number
  readonly body: string
  /** Close code (0 when still open at the end). */
  readonly code: number
  readonly frames: ReadonlyArray<{ readonly type: string; readonly payload: any }>
}

export const helloFrame = (agentId: string) =>
  JSON.stringify({
    type: "hello",
    id: `m-${agentId}-${Date.now()}`,
    ts: new Date().toISOString(),
    payload: {
      agent_id: agentId,
      platform: "kubernetes",
      region: "",
      version: "0.1.0",
      protocol_versions: ["v1"],
      capacity: { cpu: "1000m", memory: "1Gi", max_sessions: 5 },
      sessions: []
    }
  })

/**
 * Dials the agent endpoint with `token` (none when undefined), sends a hello for `agentId`, and returns once the
 * socket closes or a `welcome` arrives (then it closes the socket itself, code 0).
 */
export const rawAgent = (cpWsUrl: string, token: string | undefined, agentId: string) =>
  Effect.promise(() =>
    new Promise<RawAgentResult>((resolve) => {
      const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
      const ws = new WebSocket(`${cpWsUrl}/api/v1/agent/connect`, ["streamspace.v1"], { headers })
      const frames: Array<{ type: string; payload: any }> = []
      ws.on("unexpected-response", (_req, res) => {
        let body = ""
        res.on("data", (c: Buffer) => (body += c.toString()))
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body, code: 0, frames }))
      })
      ws.on("error", () => {})
      ws.on("open", () => ws.send(helloFrame(agentId)))
      ws.on("message", (d, isBinary) => {
        if (isBinary) return
        const f = JSON.parse(String(d))
        frames.push(f)
        if (f.type === "welcome") {
          resolve({ status: 101, body: "", code: 0, frames })
          ws.close(1000)
        }
      })
      ws.on("close", (code) => resolve({ status: 101, body: "", code, frames }))
    })
  )

/** Every secret of `secrets` that occurs in `text` (also base64/base64url-encoded), for a readable failure. */
export const leakedSecrets = (text: string, secrets: Record<string, string>): Array<string> =>
  Object.entries(secrets)
    .filter(([, s]) => s.length >= 8)
    .filter(([, s]) => text.includes(s) || text.includes(Buffer.from(s).toString("base64")) || text.includes(Buffer.from(s).toString("base64url")))
    .map(([name]) => name)
