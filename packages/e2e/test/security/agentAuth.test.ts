// Agent authentication on the real processes (control plane main.ts on a PGlite DATA_DIR, agent main.ts), with
// their logs captured: no token, wrong token, the bootstrap token reused for an approved agent id, another
// agent's credential, rotation with a grace period, revocation; credentials stored only as SHA-256 (read from
// the database files), and no token, credential, ticket or JWT secret anywhere in either process's output.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { dumpDatabase, leakedSecrets, rawAgent, sha256 } from "../support/securityClients.ts"
import * as S from "../support/stack.ts"

const AGENT = "agent-sec"
const GRACE_MS = 3000

describe("agent authentication, credential storage and logs", () => {
  it.live("the whole enrolment lifecycle on real processes: refusals, rotation with grace, revocation, hashed storage, no secret in logs", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const dataDir = join(cluster.dir, "cp-data")
      const port = yield* S.freePort
      const cpEnv = { DATA_DIR: dataDir, LOG_LEVEL: "debug", LOG_FORMAT: "json", CREDENTIAL_ROTATION_GRACE: `${GRACE_MS}ms` }
      const outputs: Array<() => string> = []
      const cp = yield* S.startControlPlaneProcess(port, cpEnv)
      outputs.push(cp.output)
      const healthPort = yield* S.freePort
      const agentEnv = S.agentEnv(cluster, cp.wsUrl, AGENT, { LOG_LEVEL: "debug", LOG_FORMAT: "json", HEALTH_PORT: String(healthPort), METRICS_ENABLED: "false" })
      const agent = yield* S.spawnNode("packages/agent/src/main.ts", agentEnv)
      outputs.push(agent.output)
      const credentialFile = agentEnv.AGENT_CREDENTIAL_FILE!

      // no token / wrong token: 401 before the upgrade, with a JSON reason
      const none = yield* rawAgent(cp.wsUrl, undefined, "agent-x")
      assert.strictEqual(none.status, 401)
      assert.strictEqual(JSON.parse(none.body).error.code, "unauthorized")
      const wrong = yield* rawAgent(cp.wsUrl, "not-the-bootstrap-token-0123456789", "agent-x")
      assert.strictEqual(wrong.status, 401)

      yield* S.approveAgent(cp, AGENT)
      const cred1 = yield* S.waitFor("the agent to save its credential", Effect.sync(() => existsSync(credentialFile) && readFileSync(credentialFile, "utf8").trim()))
      assert.notStrictEqual(cred1, S.BOOTSTRAP_TOKEN)

      // the bootstrap token cannot take over an approved id; a credential is bound to its agent id
      const reuse = yield* rawAgent(cp.wsUrl, S.BOOTSTRAP_TOKEN, AGENT)
      assert.strictEqual(reuse.code, 4003, JSON.stringify(reuse))
      const stolen = yield* rawAgent(cp.wsUrl, cred1, "agent-other")
      assert.isTrue(stolen.status === 401 || stolen.code === 4003, JSON.stringify(stolen))
      yield* S.waitForOnline(cp, AGENT)

      // a session, a ticket and a viewer, so that every kind of secret has been used once
      const aliceToken = S.userToken("alice")
      const alice = S.api(cp.url, aliceToken)
      const created = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201, created.text)
      yield* S.waitForSession(alice, created.body.id, ["running"])
      const ticket = yield* alice.post(`/sessions/${created.body.id}/vnc-ticket`)
      assert.strictEqual(ticket.status, 201)

      // rotation: the new credential reaches the agent; the old one works only within the grace period
      const rotatedAt = Date.now()
      assert.strictEqual((yield* cp.admin.post(`/agents/${AGENT}/rotate`)).status, 200)
      const cred2 = yield* S.waitFor("the rotated credential to be saved", Effect.sync(() => {
        const c = readFileSync(credentialFile, "utf8").trim()
        return c !== cred1 && c
      }))
      const withinGrace = yield* rawAgent(cp.wsUrl, cred1, AGENT)
      // Within the grace the old credential still authenticates; the real agent holds the id and answers pings, so the
      // dial is refused as AlreadyConnected (4007), never as Unauthorized, and the agent keeps its link.
      if (Date.now() - rotatedAt < GRACE_MS) {
        assert.strictEqual(withinGrace.code, 4007, JSON.stringify(withinGrace))
        assert.strictEqual(withinGrace.frames.at(-1)?.type, "error", JSON.stringify(withinGrace))
      }
      yield* S.waitFor("the old credential to stop working", Effect.map(rawAgent(cp.wsUrl, cred1, AGENT), (r) => r.status === 401 || r.code === 4003), { timeout: 20_000 })
      assert.isAtLeast(Date.now() - rotatedAt, GRACE_MS - 50, "not before the grace period ended")
      yield* S.waitForOnline(cp, AGENT)

      // revocation shuts the agent out at once, its own redials included
      assert.strictEqual((yield* cp.admin.post(`/agents/${AGENT}/revoke`)).status, 200)
      yield* S.waitFor("the revoked agent to be disconnected", Effect.map(S.agentView(cp, AGENT), (a) => a.connected === false && a.enrollment === "revoked"))
      const revoked = yield* rawAgent(cp.wsUrl, cred2, AGENT)
      assert.isTrue(revoked.status === 401 || revoked.code === 4003, JSON.stringify(revoked))
      assert.isFalse((yield* S.agentView(cp, AGENT)).connected)

      // nothing secret in any log line of either process
      yield* agent.kill("SIGTERM")
      yield* cp.kill("SIGTERM")

      // the database files hold no token in the clear; the revoked agent has no credential hash left
      const dump = yield* dumpDatabase(dataDir)
      assert.deepStrictEqual(leakedSecrets(JSON.stringify(dump), { cred1, cred2, bootstrap: S.BOOTSTRAP_TOKEN, ticket: ticket.body.ticket, jwt: S.JWT_SECRET }), [])
      const row = (dump.agents as Array<Record<string, unknown>>).find((r) => r.id === AGENT)!
      assert.strictEqual(row.enrollment, "revoked")
      assert.isNull(row.credential_hash)

      const logs = outputs.map((o) => o()).join("\n")
      assert.isAbove(logs.split("\n").length, 20, "logs were captured")
      assert.deepStrictEqual(
        leakedSecrets(logs, {
          cred1,
          cred2,
          bootstrap: S.BOOTSTRAP_TOKEN,
          jwtSecret: S.JWT_SECRET,
          aliceJwt: aliceToken,
          adminJwt: S.adminToken().split(".").slice(0, 2).join("."),
          ticket: ticket.body.ticket,
          cred1Hash: sha256(cred1),
          cred2Hash: sha256(cred2)
        }),
        []
      )
    }), 120_000)
})
