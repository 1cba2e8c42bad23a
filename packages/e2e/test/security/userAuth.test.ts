// User authentication and isolation on the whole system: every kind of bad JWT is refused on the API and on the
// VNC endpoint; a user cannot list, read, delete, get a ticket for or view another user's session; VNC tickets
// are single-use, short-lived and bound to one session and one user.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { createHmac } from "node:crypto"
import { WebSocket } from "ws"
import * as S from "../support/stack.ts"

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
const now = () => Math.floor(Date.now() / 1000)

/**
 * What a viewer gets: the HTTP status of a refused upgrade, or, once upgraded, "data" when RFB bytes arrive (the
 * desktop is visible) or the close code when the proxy closes first.
 */
const viewerStatus = (url: string, headers: Record<string, string> = {}) =>
  Effect.promise(() =>
    new Promise<number | "data">((resolve) => {
      const ws = new WebSocket(url, ["binary"], { headers })
      ws.on("message", () => {
        resolve("data")
        ws.close()
      })
      ws.on("close", (code) => resolve(code))
      ws.on("unexpected-response", (_req, res) => {
        resolve(res.statusCode ?? 0)
        res.resume()
      })
      ws.on("error", () => resolve(0))
    })
  )

describe("user authentication and isolation", () => {
  it.live("bad JWTs are 401 everywhere; users cannot touch each other's sessions; tickets are single-use, bound and short-lived", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane({ VNC_TICKET_TTL: "1500ms", JWT_CLOCK_TOLERANCE: "1s" })
      yield* S.startAgent(S.agentEnv(cluster, cp.wsUrl, "agent-users"))
      yield* S.approveAgent(cp, "agent-users")
      const alice = S.api(cp.url, S.userToken("alice"))
      const bob = S.api(cp.url, S.userToken("bob"))
      const created = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201, created.text)
      const id = created.body.id as string
      yield* S.waitForSession(alice, id, ["running"])

      // ---- bad tokens
      const head = b64({ alg: "HS256", typ: "JWT" })
      const claims = { sub: "alice", role: "admin" }
      const bad: Record<string, string | undefined> = {
        missing: undefined,
        garbage: "not.a.jwt",
        expired: S.signJwt({ ...claims, exp: now() - 120 }),
        noExp: S.signJwt({ ...claims, exp: undefined }),
        hundredYears: S.signJwt(claims, { ttlSec: 100 * 365 * 86400 }),
        notYetValid: S.signJwt({ ...claims, nbf: now() + 600 }),
        wrongSignature: S.signJwt(claims, { secret: "another-secret-of-sufficient-length-123" }),
        algNone: `${b64({ alg: "none", typ: "JWT" })}.${b64({ ...claims, exp: now() + 600 })}.`,
        algNoneWithSig: `${b64({ alg: "none", typ: "JWT" })}.${b64({ ...claims, exp: now() + 600 })}.${S.signJwt(claims).split(".")[2]}`,
        wrongAlgorithm: (() => {
          // RS256 header, signed with the HMAC secret: the key-confusion attack
          const h = b64({ alg: "RS256", typ: "JWT" })
          const p = b64({ ...claims, exp: now() + 600 })
          return `${h}.${p}.${createHmac("sha256", S.JWT_SECRET).update(`${h}.${p}`).digest("base64url")}`
        })(),
        tamperedClaims: (() => {
          const [h, , sig] = S.signJwt({ sub: "alice", role: "user" }).split(".")
          return `${h}.${b64({ sub: "alice", role: "admin", exp: now() + 600 })}.${sig}`
        })(),
        noSub: S.signJwt({ role: "admin" }),
        badRole: S.signJwt({ sub: "alice", role: "root" }),
        headerOnly: head
      }
      for (const [name, token] of Object.entries(bad)) {
        const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` }
        for (const [method, path] of [["GET", "/api/v1/sessions"], ["GET", `/api/v1/sessions/${id}`], ["DELETE", `/api/v1/sessions/${id}`], ["POST", `/api/v1/sessions/${id}/vnc-ticket`], ["GET", "/api/v1/agents"]] as const) {
          const r = yield* S.request(cp.url, method, path, { headers })
          assert.strictEqual(r.status, 401, `${name}: ${method} ${path} -> ${r.status} ${r.text}`)
          assert.strictEqual(r.body.error.code, "unauthorized")
        }
        assert.strictEqual(yield* viewerStatus(`${cp.wsUrl}/api/v1/sessions/${id}/vnc`, headers), 401, `${name}: viewer`)
      }
      assert.strictEqual((yield* alice.get(`/sessions/${id}`)).body.state, "running", "nothing above touched the session")

      // ---- isolation: bob sees nothing of alice's, and cannot act on it
      assert.deepStrictEqual((yield* bob.get("/sessions")).body.sessions, [])
      assert.strictEqual((yield* bob.get(`/sessions/${id}`)).status, 404)
      assert.strictEqual((yield* bob.del(`/sessions/${id}`)).status, 404)
      assert.strictEqual((yield* bob.post(`/sessions/${id}/vnc-ticket`)).status, 404)
      assert.strictEqual((yield* bob.get(`/commands/${created.body.create_command_id}`)).status, 404)
      assert.strictEqual(yield* viewerStatus(`${cp.wsUrl}/api/v1/sessions/${id}/vnc`, { authorization: `Bearer ${S.userToken("bob")}` }), 4404)
      const bobPatch = yield* bob.patch("/agents/agent-users", { status: "offline" })
      assert.strictEqual(bobPatch.status, 403)
      assert.strictEqual((yield* alice.get(`/sessions/${id}`)).body.state, "running")

      // ---- tickets
      const ticketFor = (client: ReturnType<typeof S.api>, sid: string) => Effect.map(client.post(`/sessions/${sid}/vnc-ticket`), (r) => r.body.ticket as string)
      const viaTicket = (sid: string, ticket: string) => viewerStatus(`${cp.wsUrl}/api/v1/sessions/${sid}/vnc?ticket=${encodeURIComponent(ticket)}`)
      const t1 = yield* ticketFor(alice, id)
      assert.strictEqual(yield* viaTicket(id, t1), "data")
      assert.strictEqual(yield* viaTicket(id, t1), 401, "single use")
      // bound to the session: another session of the same user does not accept it
      const other = yield* alice.post("/sessions", { template: "demo" })
      yield* S.waitForSession(alice, other.body.id, ["running"])
      const t2 = yield* ticketFor(alice, id)
      assert.notStrictEqual(yield* viaTicket(other.body.id, t2), "data", "a ticket for one session does not open another")
      // bound to the user: bob holding alice's ticket for his own session gets nothing either
      const bobSession = yield* bob.post("/sessions", { template: "demo" })
      yield* S.waitForSession(bob, bobSession.body.id, ["running"])
      const t3 = yield* ticketFor(alice, id)
      assert.notStrictEqual(yield* viaTicket(bobSession.body.id, t3), "data")
      assert.notStrictEqual(yield* viaTicket(id, "x".repeat(43)), "data", "a made-up ticket")
      // short-lived: unused past VNC_TICKET_TTL, it is refused
      const t4 = yield* alice.post(`/sessions/${id}/vnc-ticket`)
      const expiresAt = Date.parse(t4.body.expires_at)
      assert.isAtMost(expiresAt - Date.now(), 1600)
      yield* S.waitFor("the ticket's expiry", Effect.sync(() => Date.now() > expiresAt + 100), { timeout: 5000 })
      assert.strictEqual(yield* viaTicket(id, t4.body.ticket), 401, "expired")
    }), 90_000)
})
