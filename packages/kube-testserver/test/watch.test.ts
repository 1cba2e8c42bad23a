import { it } from "@effect/vitest"
import * as k8s from "@kubernetes/client-node"
import { waitFor } from "@streamspace/testbed"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { describe, expect } from "vitest"
import { pod, setup } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

interface Seen {
  type: string
  name: string
  rv: string
  obj: any
}

const collect = async (kc: k8s.KubeConfig, path: string, params: Record<string, string | number | boolean | undefined>) => {
  const seen: Array<Seen> = []
  let done: unknown = "open"
  const ctl = await new k8s.Watch(kc).watch(path, params, (type, obj: any) => {
    seen.push({ type, name: obj?.metadata?.name ?? obj?.reason, rv: obj?.metadata?.resourceVersion, obj })
  }, (err) => {
    done = err ?? null
  })
  return { seen, ctl, done: () => done }
}

/** Real time for an event sent too early to arrive (the server's timers run on the TestClock). */
const realPause = Effect.promise(() => new Promise((r) => setTimeout(r, 50)))

describe("watch", () => {
  it("resolves at once (headers flushed), replays existing objects as ADDED, then streams changes with kind/apiVersion", async () => {
    const { api, kc, server } = await setup({ kubelet: { paused: true } })
    // Nothing to replay here: the client's watch() resolves only because the headers are flushed at once.
    const empty = await collect(kc, "/api/v1/namespaces/streamspace/configmaps", {})
    expect(empty.seen).toEqual([])
    empty.ctl.abort()
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", {})
    await waitForPromise("1 watch event(s)", () => w.seen.length === 1)
    expect(w.seen[0]).toMatchObject({ type: "ADDED", name: "a" })
    expect(w.seen[0]!.obj.kind).toBe("ConfigMap")
    expect(w.seen[0]!.obj.apiVersion).toBe("v1")
    await api.patchNamespacedConfigMap({ name: "a", namespace: "default", body: [{ op: "add", path: "/data", value: { x: "1" } }] })
    await api.deleteNamespacedConfigMap({ name: "a", namespace: "default" })
    await waitForPromise("3 watch event(s)", () => w.seen.length === 3)
    expect(w.seen.map((s) => s.type)).toEqual(["ADDED", "MODIFIED", "DELETED"])
    // DELETED carries the RV of the deletion.
    expect(Number(w.seen[2]!.rv)).toBe(server.resourceVersion)
    w.ctl.abort()
  })

  it("from a resourceVersion replays only later events; the list RV is the watch start point", async () => {
    const { api, kc } = await setup({ kubelet: { paused: true } })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    const list = await api.listNamespacedConfigMap({ namespace: "default" })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "b" } } })
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { resourceVersion: list.metadata!.resourceVersion })
    // Events come in order: anything replayed from before the list would arrive before c.
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "c" } } })
    await waitForPromise("2 watch event(s)", () => w.seen.length >= 2)
    expect(w.seen.map((s) => `${s.type} ${s.name}`)).toEqual(["ADDED b", "ADDED c"])
    w.ctl.abort()
  })

  it("treats resourceVersion= (empty) as unset", async () => {
    const { api, kc } = await setup()
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { resourceVersion: "" })
    await waitForPromise("1 watch event(s)", () => w.seen.length === 1)
    expect(w.seen[0]).toMatchObject({ type: "ADDED", name: "a" })
    w.ctl.abort()
  })

  it("filtered watches turn selector transitions into ADDED/DELETED; set-based selectors with '+' work", async () => {
    const { api, kc } = await setup()
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { labelSelector: "tier in (a,b),!skip" })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "c", labels: { tier: "z" } } } })
    await api.patchNamespacedConfigMap({ name: "c", namespace: "default", body: { metadata: { labels: { tier: "a" } } } }, k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch))
    await api.patchNamespacedConfigMap({ name: "c", namespace: "default", body: { data: { k: "v" } } }, k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch))
    await api.patchNamespacedConfigMap({ name: "c", namespace: "default", body: { metadata: { labels: { skip: "1" } } } }, k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch))
    await waitForPromise("3 watch event(s)", () => w.seen.length === 3)
    expect(w.seen.map((s) => s.type)).toEqual(["ADDED", "MODIFIED", "DELETED"])
    w.ctl.abort()
  })

  it("single-object watch with fieldSelector metadata.name", async () => {
    const { api, kc } = await setup()
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { fieldSelector: "metadata.name=b" })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "b" } } })
    // Events come in order: one for a would arrive before b's MODIFIED.
    await api.patchNamespacedConfigMap({ name: "b", namespace: "default", body: { data: { k: "v" } } }, k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch))
    await waitForPromise("2 watch event(s)", () => w.seen.length === 2)
    expect(w.seen.map((s) => `${s.type} ${s.name}`)).toEqual(["ADDED b", "MODIFIED b"])
    w.ctl.abort()
  })

  it.effect("sends BOOKMARK events when allowed, every bookmarkIntervalMs (default a minute)", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clockWith(Effect.succeed)
      const { kc } = yield* Effect.promise(() => setup({ clock }))
      const w = yield* Effect.promise(() => collect(kc, "/api/v1/namespaces/default/pods", { allowWatchBookmarks: true }))
      yield* TestClock.adjust("59 seconds")
      yield* realPause
      expect(w.seen).toEqual([])
      yield* TestClock.adjust("1 second")
      const bm = yield* waitFor("a BOOKMARK event", Effect.sync(() => w.seen.find((s) => s.type === "BOOKMARK")))
      expect(bm.obj).toEqual({ kind: "Pod", apiVersion: "v1", metadata: { resourceVersion: bm.rv } })
      w.ctl.abort()
    }))

  it("sendInitialEvents ends the initial state with an annotated BOOKMARK", async () => {
    const { api, kc } = await setup()
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { sendInitialEvents: true, resourceVersionMatch: "NotOlderThan", allowWatchBookmarks: true })
    await waitForPromise("2 watch event(s)", () => w.seen.length === 2)
    expect(w.seen[1]!.type).toBe("BOOKMARK")
    expect(w.seen[1]!.obj.metadata.annotations).toEqual({ "k8s.io/initial-events-end": "true" })
    w.ctl.abort()
  })

  it("an expired resourceVersion is HTTP 200 with one ERROR 410 event, then the stream ends", async () => {
    const { api, kc, server } = await setup()
    const a = await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "b" } } })
    server.compact()
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { resourceVersion: a.metadata!.resourceVersion })
    await waitForPromise("the watch to end", () => w.done() !== "open")
    expect(w.done()).toBeNull()
    expect(w.seen).toHaveLength(1)
    expect(w.seen[0]!.type).toBe("ERROR")
    expect(w.seen[0]!.obj).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: `too old resource version: ${a.metadata!.resourceVersion} (${server.resourceVersion})`,
      reason: "Expired",
      code: 410
    })
  })

  it("a bounded history expires old resourceVersions on its own", async () => {
    const { api, kc } = await setup({ watchHistory: 3 })
    const a = await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" } } })
    for (const n of ["b", "c", "d", "e"]) await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: n } } })
    const w = await collect(kc, "/api/v1/namespaces/default/configmaps", { resourceVersion: a.metadata!.resourceVersion })
    await waitForPromise("the watch to end", () => w.done() !== "open")
    expect(w.seen[0]?.obj.code).toBe(410)
  })

  it.effect("timeoutSeconds ends the watch cleanly", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clockWith(Effect.succeed)
      const { kc } = yield* Effect.promise(() => setup({ clock }))
      const w = yield* Effect.promise(() => collect(kc, "/api/v1/namespaces/default/pods", { timeoutSeconds: 1 }))
      yield* TestClock.adjust("999 millis")
      yield* realPause
      expect(w.done()).toBe("open")
      yield* TestClock.adjust("1 millis")
      yield* waitFor("the watch to end", Effect.sync(() => w.done() !== "open"))
      expect(w.done()).toBeNull()
    }))

  it("graceful pod delete shows MODIFIED with deletionTimestamp before DELETED", async () => {
    const { api, kc, server } = await setup({ kubelet: { startDelayMs: 10, terminationDelayMs: 30 } })
    await api.createNamespacedPod({ namespace: "default", body: pod("vnc-1") })
    await waitForPromise("pod vnc-1 Running", () => server.get("pods", "default", "vnc-1")?.status.phase === "Running")
    const w = await collect(kc, "/api/v1/namespaces/default/pods", { resourceVersion: String(server.resourceVersion) })
    await api.deleteNamespacedPod({ name: "vnc-1", namespace: "default" })
    await waitForPromise("a DELETED event", () => w.seen.find((s) => s.type === "DELETED"))
    expect(w.seen[0]!.type).toBe("MODIFIED")
    expect(w.seen[0]!.obj.metadata.deletionTimestamp).toMatch(/Z$/)
    expect(w.seen[w.seen.length - 1]!.type).toBe("DELETED")
    w.ctl.abort()
  })
})

describe("informer", () => {
  it("lists, watches, and relists after a 410 on reconnect", async () => {
    const { api, kc, server } = await setup({ kubelet: { paused: true } })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a", labels: { app: "vnc" } } } })
    const inf = k8s.makeInformer(kc, "/api/v1/namespaces/default/configmaps", () => api.listNamespacedConfigMap({ namespace: "default", labelSelector: "app=vnc" }), "app=vnc")
    const log: Array<string> = []
    let connects = 0
    inf.on("add", (o) => log.push(`add ${o.metadata?.name}`))
    inf.on("update", (o) => log.push(`update ${o.metadata?.name}`))
    inf.on("delete", (o) => log.push(`delete ${o.metadata?.name}`))
    inf.on("connect", () => connects++)
    inf.on("error", (e) => log.push(`error ${String(e)}`))
    await inf.start()
    await waitForPromise("informer: add a", () => log.includes("add a"))
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "b", labels: { app: "vnc" } } } })
    await waitForPromise("informer: add b", () => log.includes("add b"))
    // While the watch is down, "a" is deleted and history is compacted: the informer's resume RV is too old.
    server.delete("configmaps", "default", "a")
    server.compact()
    const c0 = connects
    server.dropWatches()
    // The informer reconnects with its last RV, gets ERROR 410, relists (delete a) and watches again.
    await waitForPromise("relist after 410", () => log.includes("delete a"), { timeout: 5000 })
    expect(connects).toBeGreaterThan(c0)
    expect(inf.list("default").map((o) => o.metadata?.name)).toEqual(["b"])
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "c", labels: { app: "vnc" } } } })
    await waitForPromise("informer: add c", () => log.includes("add c"), { timeout: 5000 })
    expect(log.filter((l) => l.startsWith("error"))).toEqual([])
    await inf.stop()
  })

  it("a 403 on the watch stops the informer with an error", async () => {
    const { server } = await setup()
    const token = server.addServiceAccount("default", "agent")
    server.loadRbac(`- apiGroups: [""]\n  resources: ["configmaps"]\n  verbs: ["list"]\n`, { namespace: "default", bindServiceAccount: { namespace: "default", name: "agent" } })
    const kc = new k8s.KubeConfig()
    kc.loadFromString(server.kubeconfigFor(token))
    const api = kc.makeApiClient(k8s.CoreV1Api)
    const inf = k8s.makeInformer(kc, "/api/v1/namespaces/default/configmaps", () => api.listNamespacedConfigMap({ namespace: "default" }))
    const errors: Array<any> = []
    inf.on("error", (e) => errors.push(e))
    await inf.start()
    await waitForPromise("an error", () => errors.length > 0)
    expect(errors[0].statusCode ?? errors[0].code).toBe(403)
  })
})
