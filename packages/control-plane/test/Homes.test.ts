// Homes against a fake agent answering list_homes and delete_home: listing and visibility, deletion refused
// while a session uses the home, and the retention policy on TestClock (warning with expires_at first, use
// cancels it, off by default).
import { assert, describe, it } from "@effect/vitest"
import type { AgentId, HomeVolume, TemplateName, UserId } from "@streamspace/protocol"
import { Context, Effect, Layer, References } from "effect"
import { TestClock } from "effect/testing"
import type { User } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { Homes, makeMemoryRepo as makeHomesRepo } from "../src/Homes.ts"
import { recordOf, retentionStep } from "../src/internal/homes/policy.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { TEST_JWT_SECRET } from "./support/jwt.ts"
import { Duration } from "effect"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const bob: User = { id: "bob" as UserId, role: "user", groups: [] }
const root: User = { id: "root" as UserId, role: "admin", groups: [] }
const HOUR = 3_600_000
const at = (ms: number) => new Date(ms).toISOString()

const setup = (env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const hub = yield* makeFakeHub
    const dispatcher = yield* makeFakeDispatcher
    hub.addAgent("a")
    // The agent's volumes; delete_home refuses a mounted one, like the agent does.
    const volumes = new Map<string, HomeVolume>([
      ["home-ann", { name: "home-ann", user_id: "ann" as UserId, size: "10Gi", created_at: at(0), in_use: false }],
      ["home-bob", { name: "home-bob", user_id: "bob" as UserId, size: "5Gi", created_at: at(0), in_use: true }]
    ])
    dispatcher.responder = (d) => {
      if (d.request.action === "list_homes") return { result: { action: "list_homes", homes: [...volumes.values()] } }
      if (d.request.action === "delete_home") {
        const v = volumes.get(d.request.args.name)
        if (v?.in_use) return { error: { code: "home_in_use", message: "mounted", retryable: true } }
        volumes.delete(d.request.args.name)
        return { result: { action: "delete_home", name: d.request.args.name } }
      }
      return undefined
    }
    const repo = makeHomesRepo()
    const config = ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, HOME_SCAN_INTERVAL: "5m", SESSION_POLICY_INTERVAL: "5m", ...env })
    const ctx = yield* Layer.build(
      Homes.layerMemory(repo).pipe(
        Layer.provideMerge(Sessions.layerMemory(makeMemoryRepo())),
        Layer.provide(Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), config, Layer.succeed(References.MinimumLogLevel, "Error")))
      )
    )
    return { hub, dispatcher, volumes, repo, homes: Context.get(ctx, Homes), sessions: Context.get(ctx, Sessions) }
  })

const byName = (hs: ReadonlyArray<{ readonly name: string }>) => hs.map((h) => h.name).sort()

describe("Homes", () => {
  it.effect("lists each agent's homes with owner, size and last use; users see their own, admins all or one user's", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* TestClock.adjust("1 hour")
      yield* t.homes.refresh("a" as AgentId)
      const all = yield* t.homes.list(root)
      assert.deepStrictEqual(all.map((h) => [h.name, h.userId, h.size, h.inUse, h.lastUsedAt.getTime()]).sort(), [
        ["home-ann", "ann", "10Gi", false, 0],
        ["home-bob", "bob", "5Gi", true, HOUR]
      ])
      assert.deepStrictEqual(byName(yield* t.homes.list(ann)), ["home-ann"])
      assert.deepStrictEqual(byName(yield* t.homes.list(root, "bob")), ["home-bob"])
      assert.strictEqual((yield* Effect.flip(t.homes.list(ann, "bob"))).reason, "Forbidden")
      // A volume the agent no longer lists is forgotten; ids stay stable across listings.
      const annId = all.find((h) => h.name === "home-ann")!.id
      t.volumes.delete("home-bob")
      yield* t.homes.refresh("a" as AgentId)
      assert.deepStrictEqual((yield* t.homes.list(root)).map((h) => h.id), [annId])
    }))

  it.effect("delete: owner or admin; refused while a session has the home; the agent deletes the volume", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.homes.refresh("a" as AgentId)
      const [annHome] = yield* t.homes.list(ann)
      const [bobHome] = yield* t.homes.list(bob)
      assert.strictEqual((yield* Effect.flip(t.homes.remove(bob, annHome!.id))).reason, "NotFound")
      assert.strictEqual((yield* Effect.flip(t.homes.remove(bob, bobHome!.id))).reason, "InUse")
      // A live session of ann with a persistent home uses hers, even before a pod mounts it.
      const s = yield* t.sessions.create(ann, { template: "demo" as TemplateName, persistent_home: true })
      assert.strictEqual((yield* Effect.flip(t.homes.remove(ann, annHome!.id))).reason, "InUse")
      assert.isFalse(t.dispatcher.commands.some((c) => c.request.action === "delete_home"))
      yield* t.sessions.remove(ann, s.id)
      yield* t.dispatcher.complete(t.dispatcher.commands.find((c) => c.request.action === "delete_session")!.record.id, { action: "delete_session", session_id: s.id })
      yield* Effect.yieldNow
      yield* t.homes.remove(ann, annHome!.id)
      const del = t.dispatcher.commands.find((c) => c.request.action === "delete_home")!
      assert.deepStrictEqual(del.request.args, { name: "home-ann", user_id: "ann" })
      assert.isFalse(t.volumes.has("home-ann"))
      assert.deepStrictEqual(byName(yield* t.homes.list(root)), ["home-bob"])
    }))

  it.effect("retention: a home unused for HOME_RETENTION shows expires_at for HOME_RETENTION_WARNING, then is deleted", () =>
    Effect.gen(function*() {
      const t = yield* setup({ HOME_RETENTION: "48h", HOME_RETENTION_WARNING: "24h" })
      const annHome = () => Effect.map(t.homes.list(ann), (hs) => hs[0])
      yield* TestClock.adjust("23 hours")
      assert.isUndefined((yield* annHome())!.expiresAt, "not yet within the warning period")
      yield* TestClock.adjust("1 hour")
      assert.strictEqual((yield* annHome())!.expiresAt?.getTime(), 48 * HOUR)
      yield* TestClock.adjust("1435 minutes")
      assert.isTrue(t.volumes.has("home-ann"), "still there before expires_at")
      yield* TestClock.adjust("5 minutes")
      assert.isFalse(t.volumes.has("home-ann"))
      assert.isUndefined(yield* annHome())
      // bob's home is in use: never scheduled
      assert.isUndefined((yield* t.homes.list(bob))[0]!.expiresAt)
    }))

  it.effect("retention: use during the warning cancels the deletion; off by default", () =>
    Effect.gen(function*() {
      const t = yield* setup({ HOME_RETENTION: "48h", HOME_RETENTION_WARNING: "24h" })
      yield* TestClock.adjust("30 hours")
      assert.isDefined((yield* t.homes.list(ann))[0]!.expiresAt)
      yield* t.sessions.create(ann, { template: "demo" as TemplateName, persistent_home: true })
      yield* TestClock.adjust("5 minutes")
      const h = (yield* t.homes.list(ann))[0]!
      assert.isUndefined(h.expiresAt)
      assert.isTrue(h.inUse)
      yield* TestClock.adjust("60 hours")
      assert.isTrue(t.volumes.has("home-ann"))

      const off = yield* setup({ HOME_SCAN_INTERVAL: "1h" })
      yield* TestClock.adjust("200 hours")
      assert.isUndefined((yield* off.homes.list(ann))[0]!.expiresAt)
      assert.isTrue(off.volumes.has("home-ann"))
    }))

  it("policy: a warning is visible for the whole warning period even when the home is found late", () => {
    const listed: HomeVolume = { name: "h", user_id: "u" as UserId, created_at: at(0), in_use: false }
    const h = recordOf("h-1", "a" as AgentId, listed, undefined, { live: false, lastEnded: undefined }, new Date(100 * HOUR))
    const step = retentionStep(h, Duration.hours(48), Duration.hours(24), new Date(100 * HOUR))
    assert.deepStrictEqual(step, { _tag: "Warn", expiresAt: new Date(124 * HOUR) })
    assert.deepStrictEqual(retentionStep({ ...h, expiresAt: new Date(124 * HOUR) }, Duration.hours(48), Duration.hours(24), new Date(123 * HOUR)), { _tag: "Keep" })
    assert.deepStrictEqual(retentionStep({ ...h, expiresAt: new Date(124 * HOUR) }, undefined, Duration.hours(24), new Date(123 * HOUR)), { _tag: "Cancel" })
  })
})
