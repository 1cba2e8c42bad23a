// The replica-to-replica credentials (issue 15): CLUSTER_SECRET's rules, VNC tickets any replica sharing the
// secret can check (expiring, single use across replicas through the Store, bound to a session), and peer tokens that nothing else
// (a ticket, a user JWT, another secret's token) passes for. The relay itself runs in packages/e2e/test/ha.
import { assert, describe, it } from "@effect/vitest"
import type { SessionId, UserId } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import { TestClock } from "effect/testing"
import type { User } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { checkPeerToken, issuePeerToken, PEER_TOKEN_TTL_MS } from "../src/internal/peer/peerToken.ts"
import { deriveKey } from "../src/internal/peer/signing.ts"
import { makeTickets } from "../src/internal/vnc/tickets.ts"
import { Store } from "../src/Store.ts"
import { sign, TEST_JWT_SECRET } from "./support/jwt.ts"

const SECRET = Option.some(Redacted.make("cluster-secret-for-tests-0123456789abcdef"))
const OTHER = Option.some(Redacted.make("another-cluster-secret-0123456789abcdef01"))
const ann: User = { id: "ann" as UserId, role: "user", groups: ["staff"] }
const S1 = "s-1" as SessionId
const S2 = "s-2" as SessionId
const TTL = Duration.seconds(60)

const readConfig = (env: Record<string, string>) => Effect.flip(Layer.build(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, ...env })))

describe("CLUSTER_SECRET", () => {
  it.effect("is required with DATABASE_URL, refused under 32 bytes (naming it, never its value), optional on the embedded database", () =>
    Effect.gen(function*() {
      const missing = yield* readConfig({ DATABASE_URL: "postgres://u:p@db/ss" })
      assert.strictEqual((missing as { variable?: string }).variable, "CLUSTER_SECRET")
      assert.include(missing.message, "CLUSTER_SECRET is required with DATABASE_URL")
      const short = yield* readConfig({ DATABASE_URL: "postgres://u:p@db/ss", CLUSTER_SECRET: "tooshort-secret" })
      assert.strictEqual((short as { variable?: string }).variable, "CLUSTER_SECRET")
      assert.include(short.message, "CLUSTER_SECRET is too short (15 bytes)")
      assert.notInclude(short.message, "tooshort-secret")
      yield* Layer.build(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, DATABASE_URL: "postgres://u:p@db/ss", CLUSTER_SECRET: "c".repeat(32) }))
      yield* Layer.build(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, DATABASE_IN_MEMORY: "true" }))
    }))
})

describe("VNC tickets", () => {
  it.effect("a ticket issued on one replica is redeemed on another with the same CLUSTER_SECRET, once across replicas sharing the Store", () =>
    Effect.gen(function*() {
      const store = Context.get(yield* Layer.build(Store.layerMemory), Store)
      const claim = (jti: string, exp: number) => store.ticketUses.claim(jti, new Date(exp))
      const a = makeTickets(TTL, SECRET, claim)
      const b = makeTickets(TTL, SECRET, claim)
      const c = makeTickets(TTL, SECRET, claim)
      const { ticket, viewerId } = yield* a.issue(ann, S1)
      assert.deepStrictEqual(yield* b.redeem(ticket, S1), { user: ann, viewerId, linkId: undefined })
      assert.include((yield* Effect.flip(b.redeem(ticket, S1))).message, "already used")
      assert.include((yield* Effect.flip(c.redeem(ticket, S1))).message, "already used")
      // Expired uses are dropped as new ones are claimed.
      yield* TestClock.adjust("61 seconds")
      yield* a.redeem((yield* a.issue(ann, S1)).ticket, S1)
    }))

  it.effect("refused: another secret, another session, expired (TestClock), tampered", () =>
    Effect.gen(function*() {
      const a = makeTickets(TTL, SECRET)
      const other = makeTickets(TTL, OTHER)
      const t1 = (yield* a.issue(ann, S1)).ticket
      assert.strictEqual((yield* Effect.flip(other.redeem(t1, S1))).reason, "InvalidTicket")
      assert.include((yield* Effect.flip(a.redeem((yield* a.issue(ann, S1)).ticket, S2))).message, "another session")
      const t3 = (yield* a.issue(ann, S1)).ticket
      yield* TestClock.adjust("60 seconds")
      assert.include((yield* Effect.flip(a.redeem(t3, S1))).message, "expired")
      // An admin role written into the claims breaks the signature.
      const t4 = (yield* a.issue(ann, S1)).ticket
      const [body, mac] = t4.split(".")
      const claims = JSON.parse(Buffer.from(body!, "base64url").toString())
      const forged = `${Buffer.from(JSON.stringify({ ...claims, role: "admin" })).toString("base64url")}.${mac}`
      assert.include((yield* Effect.flip(a.redeem(forged, S1))).message, "unknown")
      assert.include((yield* Effect.flip(a.redeem("garbage", S1))).message, "unknown")
    }))

  it.effect("without CLUSTER_SECRET (one replica) tickets work on the replica that issued them only", () =>
    Effect.gen(function*() {
      const a = makeTickets(TTL, Option.none())
      const b = makeTickets(TTL, Option.none())
      assert.deepStrictEqual((yield* a.redeem((yield* a.issue(ann, S1, "link-1")).ticket, S1)).linkId, "link-1")
      assert.strictEqual((yield* Effect.flip(b.redeem((yield* a.issue(ann, S1)).ticket, S1))).reason, "InvalidTicket")
    }))
})

describe("peer tokens", () => {
  const key = deriveKey(SECRET, "peer-vnc")
  it.effect("accepted for its session within PEER_TOKEN_TTL; refused expired, for another session, or signed with another secret", () =>
    Effect.sync(() => {
      const now = 1_000_000
      const claims = { sessionId: S1, user: ann, viewerId: "v-1", linkId: undefined }
      const token = issuePeerToken(key, claims, now)
      assert.deepStrictEqual(checkPeerToken(key, token, S1, now + PEER_TOKEN_TTL_MS - 1), claims)
      assert.deepStrictEqual(checkPeerToken(key, token, S1, now + PEER_TOKEN_TTL_MS), { refused: "replica-to-replica endpoint: the peer token has expired" })
      assert.include((checkPeerToken(key, token, S2, now) as { refused: string }).refused, "another session")
      const foreign = issuePeerToken(deriveKey(OTHER, "peer-vnc"), claims, now)
      assert.include((checkPeerToken(key, foreign, S1, now) as { refused: string }).refused, "invalid peer token")
      assert.include((checkPeerToken(key, undefined, S1, now) as { refused: string }).refused, "header is required")
    }))

  it.effect("a VNC ticket and a user JWT never pass for a peer token", () =>
    Effect.gen(function*() {
      const ticket = (yield* makeTickets(TTL, SECRET).issue(ann, S1)).ticket
      assert.include((checkPeerToken(key, ticket, S1, Date.now()) as { refused: string }).refused, "invalid peer token")
      const jwt = yield* Effect.promise(() => sign({ sub: "ann", role: "admin" }))
      assert.include((checkPeerToken(key, jwt, S1, Date.now()) as { refused: string }).refused, "invalid peer token")
    }))
})
