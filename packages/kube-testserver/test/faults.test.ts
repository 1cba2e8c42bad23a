import * as k8s from "@kubernetes/client-node"
import { describe, expect, it } from "vitest"
import { apiError, setup } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

describe("fault injection", () => {
  it("adds latency to a route", async () => {
    const { api, server } = await setup()
    server.addFault({ method: "GET", path: "/api/v1/namespaces/default/configmaps", latencyMs: 150, times: 1 })
    const t0 = Date.now()
    await api.listNamespacedConfigMap({ namespace: "default" })
    expect(Date.now() - t0).toBeGreaterThanOrEqual(140)
    const t1 = Date.now()
    await api.listNamespacedConfigMap({ namespace: "default" })
    expect(Date.now() - t1).toBeLessThan(140)
  })

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

  it("drops watch streams: a clean close makes the informer resume; a reset stops it with an error", async () => {
    const { api, kc, server } = await setup()
    server.addFault({ watch: true, dropAfterMs: 50, times: 1 })
    const inf = k8s.makeInformer(kc, "/api/v1/namespaces/default/configmaps", () => api.listNamespacedConfigMap({ namespace: "default" }))
    let connects = 0
    const added: Array<string> = []
    inf.on("connect", () => connects++)
    inf.on("add", (o) => added.push(o.metadata!.name!))
    await inf.start()
    await waitForPromise("informer reconnect", () => connects >= 2, { timeout: 3000 })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "after-drop" } } })
    await waitForPromise("the informer to see after-drop", () => added.includes("after-drop"))
    await inf.stop()

    server.addFault({ watch: true, dropAfterMs: 20, reset: true, times: 1 })
    const errors: Array<unknown> = []
    const w = new k8s.Watch(kc)
    await w.watch("/api/v1/namespaces/default/configmaps", {}, () => {}, (e) => errors.push(e ?? "clean"))
    await waitForPromise("an error", () => errors.length > 0)
    expect(errors[0]).not.toBe("clean")
  })

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
