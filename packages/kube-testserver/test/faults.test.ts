import { assert, it } from "@effect/vitest"
import * as k8s from "@kubernetes/client-node"
import { waitFor } from "@streamspace/testbed"
import { Effect, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { describe, expect } from "vitest"
import { apiError, setup } from "./helpers.ts"

/** The test's clock, for the server to run its delays on. */
const testClock = Effect.clockWith(Effect.succeed)
/** Real time for an answer released too early to arrive (the server's delays run on the TestClock). */
const realPause = Effect.promise(() => new Promise((r) => setTimeout(r, 50)))

describe("fault injection", () => {
  it.effect("adds latency to a route, on the server's clock", () =>
    Effect.gen(function*() {
      const clock = yield* testClock
      const { api, server } = yield* Effect.promise(() => setup({ clock }))
      const rule = server.addFault({ method: "GET", path: "/api/v1/namespaces/default/configmaps", latencyMs: 150, times: 1 })
      let answered = false
      const slow = yield* Effect.forkChild(Effect.promise(() => api.listNamespacedConfigMap({ namespace: "default" }).then(() => (answered = true))))
      yield* waitFor("the request to reach the fault", Effect.sync(() => rule.hits === 1))
      yield* TestClock.adjust("149 millis")
      yield* realPause
      assert.isFalse(answered, "still delayed before latencyMs")
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(slow)
      // The rule was used up: the next request is answered without moving the clock.
      yield* Effect.promise(() => api.listNamespacedConfigMap({ namespace: "default" }))
    }))

  it("answers 429/503 with Retry-After and 500, then recovers when the rule is used up or removed", async () => {
    const { api, server } = await setup()
    server.addFault({ path: /\/pods$/, status: 429, retryAfterSeconds: 2, times: 1 })
    const tooMany = await apiError(api.listNamespacedPod({ namespace: "default" }))
    expect(tooMany.code).toBe(429)
    expect(tooMany.headers["retry-after"]).toBe("2")
    expect(tooMany.status).toMatchObject({ reason: "TooManyRequests", details: { retryAfterSeconds: 2 }, code: 429 })
    await api.listNamespacedPod({ namespace: "default" })
    const remove = server.addFault({ method: "POST", status: 503, retryAfterSeconds: 1 })
    const unavailable = await apiError(api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "x" } } }))
    expect(unavailable.code).toBe(503)
    expect(unavailable.status.reason).toBe("ServiceUnavailable")
    remove()
    server.addFault({ path: "/api/v1/namespaces/default/configmaps/x", status: 500 })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "x" } } })
    expect((await apiError(api.readNamespacedConfigMap({ name: "x", namespace: "default" }))).status.reason).toBe("InternalError")
    server.clearFaults()
    await api.readNamespacedConfigMap({ name: "x", namespace: "default" })
  })

  it.effect("drops watch streams after dropAfterMs: a clean close makes the informer resume; a reset stops it with an error", () =>
    Effect.gen(function*() {
      const clock = yield* testClock
      const { api, kc, server } = yield* Effect.promise(() => setup({ clock }))
      const drop = server.addFault({ watch: true, dropAfterMs: 50, times: 1 })
      const inf = k8s.makeInformer(kc, "/api/v1/namespaces/default/configmaps", () => api.listNamespacedConfigMap({ namespace: "default" }))
      let connects = 0
      const added: Array<string> = []
      inf.on("connect", () => connects++)
      inf.on("add", (o) => added.push(o.metadata!.name!))
      yield* Effect.promise(() => inf.start())
      yield* waitFor("the watch to open", Effect.sync(() => drop.hits === 1 && connects === 1))
      yield* TestClock.adjust("49 millis")
      yield* realPause
      assert.strictEqual(connects, 1, "the watch stays open until dropAfterMs")
      yield* TestClock.adjust("1 millis")
      yield* waitFor("informer reconnect", Effect.sync(() => connects >= 2))
      yield* Effect.promise(() => api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "after-drop" } } }))
      yield* waitFor("the informer to see after-drop", Effect.sync(() => added.includes("after-drop")))
      yield* Effect.promise(() => inf.stop())

      const reset = server.addFault({ watch: true, dropAfterMs: 20, reset: true, times: 1 })
      const errors: Array<unknown> = []
      const w = new k8s.Watch(kc)
      yield* Effect.promise(() => w.watch("/api/v1/namespaces/default/configmaps", {}, () => {}, (e) => errors.push(e ?? "clean")))
      yield* waitFor("the watch to open", Effect.sync(() => reset.hits === 1))
      yield* TestClock.adjust("20 millis")
      yield* waitFor("an error", Effect.sync(() => errors.length > 0))
      assert.notStrictEqual(errors[0], "clean")
    }))

  it("resets a request's connection, and refuses connections (ECONNREFUSED) until resumed", async () => {
    const { api, server } = await setup()
    server.addFault({ path: "/api/v1/namespaces/default/secrets", reset: true, times: 1 })
    await expect(api.listNamespacedSecret({ namespace: "default" })).rejects.toThrow()
    await api.listNamespacedSecret({ namespace: "default" })
    await server.refuseConnections(true)
    const err = await api.listNamespacedSecret({ namespace: "default" }).then(() => undefined, (e) => e)
    expect(String(err?.message)).toContain("fetch failed")
    expect(err?.cause?.code).toBe("ECONNREFUSED")
    await server.refuseConnections(false)
    await api.listNamespacedSecret({ namespace: "default" })
  })
})
