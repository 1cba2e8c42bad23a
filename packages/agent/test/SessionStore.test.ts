// SessionStore against kube-testserver: adoption at start, phase changes from the watch (Pending ->
// Running, ImagePullBackOff, CrashLoopBackOff), out-of-band deletion, dropped and expired watches, faults.
import { assert, describe, it } from "@effect/vitest"
import type { SessionStatus } from "@streamspace/protocol"
import { Context, Effect, Layer, Option, Stream } from "effect"
import { Kubernetes } from "../src/Kubernetes.ts"
import { SessionStore } from "../src/SessionStore.ts"
import { type Cluster, makeCluster, NAMESPACE, sessionSpec, sid } from "./support/cluster.ts"
import { waitFor } from "@streamspace/testbed"

const build = (cluster: Cluster, extra: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const ctx = yield* Layer.build(cluster.store(extra))
    const store = Context.get(ctx, SessionStore)
    const kube = Context.get(ctx, Kubernetes)
    const seen: Array<SessionStatus> = []
    yield* Effect.forkScoped(Stream.runForEach(store.changes, (s) => Effect.sync(() => seen.push(s))), { startImmediately: true })
    yield* Effect.yieldNow
    const phases = (id: string) => seen.filter((s) => s.session_id === id).map((s) => s.phase)
    return { store, kube, seen, phases }
  })


describe("SessionStore", () => {
  it.live("emits creating then running for a new session; get/list/activeCount follow", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { phases, store } = yield* build(cluster)
      const created = yield* store.create(sid("s-1"), sessionSpec())
      assert.include(["creating", "pending", "running"], created.phase)
      yield* waitFor("running", Effect.sync(() => phases("s-1").includes("running")))
      assert.strictEqual(phases("s-1")[0], "creating")
      const got = yield* store.get(sid("s-1"))
      assert.strictEqual(Option.getOrThrow(got).phase, "running")
      assert.isString(Option.getOrThrow(got).pod_ip)
      assert.strictEqual(Option.getOrThrow(got).user_id, "alice")
      assert.strictEqual((yield* store.list).length, 1)
      assert.strictEqual(yield* store.activeCount, 1)
    }))

  it.live("adopts the sessions that exist at start, and only its own", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      // A first agent incarnation creates two sessions, then goes away.
      yield* Effect.scoped(Effect.gen(function*() {
        const { phases, store } = yield* build(cluster)
        yield* store.create(sid("s-1"), sessionSpec())
        yield* store.create(sid("s-2"), sessionSpec({ user_id: "bob" as never }))
        yield* waitFor("both running", Effect.sync(() => phases("s-1").includes("running") && phases("s-2").includes("running")))
      }))
      cluster.server.put("pods", {
        metadata: { name: "foreign", namespace: NAMESPACE, labels: { app: "session", agent: "other-agent", "streamspace.io/session-id": "foreign" } },
        spec: { containers: [{ name: "x", image: "x:1" }] }
      })
      const { store } = yield* build(cluster)
      const ids = (yield* store.list).map((s) => s.session_id).sort()
      assert.deepStrictEqual(ids, ["s-1", "s-2"])
      assert.strictEqual(Option.getOrThrow(yield* store.get(sid("s-2"))).user_id, "bob")
      // Create of an adopted session is idempotent.
      const again = yield* store.create(sid("s-1"), sessionSpec())
      assert.strictEqual(again.phase, "running")
    }))

  it.live("ImagePullBackOff and CrashLoopBackOff are failed, with the reason", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster({ kubelet: { startDelayMs: 10, cannotPull: ["bad/image:1"], crashImages: ["crash/image:1"] } })
      const { seen, store } = yield* build(cluster)
      yield* store.create(sid("s-pull"), sessionSpec({ image: "bad/image:1" }))
      yield* store.create(sid("s-crash"), sessionSpec({ image: "crash/image:1" }))
      const pull = yield* waitFor("pull failure", Effect.sync(() => seen.find((s) => s.session_id === "s-pull" && s.phase === "failed")))
      assert.strictEqual(pull.reason, "ImagePullBackOff")
      const crash = yield* waitFor("crash loop", Effect.sync(() => seen.find((s) => s.session_id === "s-crash" && s.phase === "failed")))
      assert.strictEqual(crash.reason, "CrashLoopBackOff")
      assert.strictEqual(yield* store.activeCount, 0)
    }))

  it.live("a running pod that fails later (evicted) is failed, with the reason and message", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { phases, seen, store } = yield* build(cluster)
      yield* store.create(sid("s-1"), sessionSpec())
      yield* waitFor("running", Effect.sync(() => phases("s-1").includes("running")))
      const pod = cluster.server.get("pods", NAMESPACE, "s-1")!
      cluster.server.put("pods", { ...pod, status: { ...pod.status, phase: "Failed", reason: "Evicted", message: "The node was low on resource: memory." } })
      const failed = yield* waitFor("failed", Effect.sync(() => seen.find((s) => s.session_id === "s-1" && s.phase === "failed")))
      assert.strictEqual(failed.reason, "Evicted")
      assert.strictEqual(failed.message, "The node was low on resource: memory.")
    }))

  it.live("a pod deleted out of band goes terminating then terminated (PodDeleted)", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { phases, seen, store } = yield* build(cluster)
      yield* store.create(sid("s-1"), sessionSpec())
      yield* waitFor("running", Effect.sync(() => phases("s-1").includes("running")))
      yield* Effect.promise(async () => {
        const { CoreV1Api, KubeConfig } = await import("@kubernetes/client-node")
        const kc = new KubeConfig()
        kc.loadFromString(cluster.server.kubeconfig)
        await kc.makeApiClient(CoreV1Api).deleteNamespacedPod({ name: "s-1", namespace: NAMESPACE })
      })
      yield* waitFor("terminated", Effect.sync(() => phases("s-1").includes("terminated")))
      assert.deepStrictEqual(phases("s-1").slice(-2), ["terminating", "terminated"])
      assert.strictEqual(seen.at(-1)!.reason, "PodDeleted")
      assert.isTrue(Option.isNone(yield* store.get(sid("s-1"))))
      // A crash that removes the pod at once (no grace) is seen too.
      yield* store.create(sid("s-2"), sessionSpec())
      yield* waitFor("s-2 running", Effect.sync(() => phases("s-2").includes("running")))
      cluster.server.delete("pods", NAMESPACE, "s-2")
      yield* waitFor("s-2 terminated", Effect.sync(() => phases("s-2").includes("terminated")))
    }))

  it.live("delete through the store: terminating, terminated, the home PVC stays", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { phases, store } = yield* build(cluster)
      yield* store.create(sid("s-1"), sessionSpec({ persistent_home: true }))
      yield* waitFor("running", Effect.sync(() => phases("s-1").includes("running")))
      yield* store.delete(sid("s-1"))
      yield* waitFor("terminated", Effect.sync(() => phases("s-1").includes("terminated")))
      assert.isDefined(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice"))
      yield* store.delete(sid("s-1"))
    }))

  it.live("a dropped watch resumes; an expired one relists and still sees what changed meanwhile", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { phases, store } = yield* build(cluster)
      yield* store.create(sid("s-1"), sessionSpec())
      yield* waitFor("running", Effect.sync(() => phases("s-1").includes("running")))
      cluster.server.dropWatches()
      yield* store.create(sid("s-2"), sessionSpec())
      yield* waitFor("s-2 running after a dropped watch", Effect.sync(() => phases("s-2").includes("running")))
      // Expire the history and drop the watch while the pod disappears: only a relist can notice.
      // The next watch is held back while the pod goes and the history is compacted: it resumes from an
      // expired resourceVersion (410), and only the relist can notice the deletion.
      cluster.server.addFault({ path: `/api/v1/namespaces/${NAMESPACE}/pods`, watch: true, latencyMs: 300, times: 1 })
      cluster.server.dropWatches()
      cluster.server.delete("pods", NAMESPACE, "s-1")
      cluster.server.compact()
      yield* waitFor("s-1 terminated after relist", Effect.sync(() => phases("s-1").includes("terminated")))
      yield* store.create(sid("s-3"), sessionSpec())
      yield* waitFor("s-3 running", Effect.sync(() => phases("s-3").includes("running")))
    }))

  it.live("a watch refused by the API (403) degrades the health; the store recovers when the API does", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { phases, store } = yield* build(cluster)
      const stop = cluster.server.addFault({ path: `/api/v1/namespaces/${NAMESPACE}/pods`, watch: true, status: 403, message: "watch denied" })
      cluster.server.dropWatches()
      yield* waitFor("degraded", Effect.map(store.health, (h) => h.status !== "ok"))
      assert.include((yield* store.health).message, "Forbidden")
      stop()
      cluster.server.put("pods", {
        metadata: {
          name: "s-9",
          namespace: NAMESPACE,
          labels: { app: "session", agent: "agent-test", "app.kubernetes.io/managed-by": "streamspace-agent", "streamspace.io/session-id": "s-9" }
        },
        spec: { containers: [{ name: "session", image: "x:1" }] }
      })
      yield* waitFor("s-9 seen after recovery", Effect.sync(() => phases("s-9").length > 0))
    }))

  it.live("warm pool: pods kept started and unassigned; a matching create takes one at once (running), the pool refills; a home never comes from it", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const { kube, phases, store } = yield* build(cluster, { WARM_POOL_INTERVAL: "200ms" })
      const spec = sessionSpec()
      const pool = { template: spec.template, size: 2, image: spec.image, vnc_port: spec.vnc_port }
      const warm = () =>
        cluster.server.list("pods", NAMESPACE).filter((p: any) => p.metadata.labels?.["streamspace.io/warm-pool"] === "firefox" && p.metadata.deletionTimestamp === undefined)
      const readyWarm = () => warm().filter((p: any) => p.status?.phase === "Running")
      yield* store.setWarmPools([pool])
      yield* waitFor("two warm pods running", Effect.sync(() => readyWarm().length === 2))
      // Warm pods are no sessions.
      assert.deepStrictEqual(yield* store.list, [])
      for (const p of warm()) {
        assert.isUndefined(p.metadata.labels["streamspace.io/session-id"])
        assert.isUndefined(p.metadata.labels["streamspace.io/user"])
        assert.isUndefined(p.spec.volumes?.find((v: any) => v.persistentVolumeClaim !== undefined))
      }
      const created = yield* store.create(sid("s-1"), spec)
      assert.strictEqual(created.phase, "running", "a warm pod is running already")
      const pod = cluster.server.list("pods", NAMESPACE).find((p: any) => p.metadata.labels?.["streamspace.io/session-id"] === "s-1")!
      assert.match(pod.metadata.name, /^warm-firefox-/)
      assert.deepInclude(pod.metadata.labels, { app: "session", "streamspace.io/user": "alice", "streamspace.io/template": "firefox" })
      assert.isUndefined(pod.metadata.labels["streamspace.io/warm-pool"])
      assert.isDefined(cluster.server.get("services", NAMESPACE, "s-1"))
      assert.isTrue(Option.isSome(yield* kube.readPod(sid("s-1"))))
      // The same create again (a re-sent command) adopts the claimed pod instead of taking another.
      const warmBefore = readyWarm().length
      assert.strictEqual((yield* store.create(sid("s-1"), spec)).phase, "running")
      assert.strictEqual(cluster.server.list("pods", NAMESPACE).filter((p: any) => p.metadata.labels?.["streamspace.io/session-id"] === "s-1").length, 1)
      assert.isAtLeast(readyWarm().length, warmBefore)
      // ... also on a restarted agent, which finds the claimed pod by its session label and reaches it.
      const restarted = yield* build(cluster, { WARM_POOL_INTERVAL: "200ms" })
      assert.strictEqual((yield* restarted.store.create(sid("s-1"), spec)).phase, "running")
      assert.strictEqual(cluster.server.list("pods", NAMESPACE).filter((p: any) => p.metadata.labels?.["streamspace.io/session-id"] === "s-1").length, 1)
      assert.strictEqual(Option.getOrThrow(yield* restarted.kube.readPod(sid("s-1"))).metadata?.name, pod.metadata.name)
      yield* waitFor("the pool refilled", Effect.sync(() => readyWarm().length === 2))
      assert.strictEqual(Option.getOrThrow(yield* store.get(sid("s-1"))).phase, "running")
      assert.deepStrictEqual(phases("s-1").slice(0, 1), ["running"])
      // Other resources or a persistent home: a pod of its own.
      yield* store.create(sid("s-2"), sessionSpec({ persistent_home: true }))
      yield* store.create(sid("s-3"), sessionSpec({ resources: { cpu: "2" } }))
      assert.isDefined(cluster.server.get("pods", NAMESPACE, "s-2"))
      assert.isDefined(cluster.server.get("pods", NAMESPACE, "s-3"))
      assert.strictEqual(readyWarm().length, 2)
      // Deleting the session deletes the pod it claimed.
      yield* store.delete(sid("s-1"))
      yield* waitFor("claimed pod gone", Effect.sync(() => {
        const p = cluster.server.get("pods", NAMESPACE, pod.metadata.name)
        return p === undefined || p.metadata.deletionTimestamp !== undefined
      }))
      // No pools any more: the warm pods go.
      yield* store.setWarmPools([])
      yield* waitFor("warm pods removed", Effect.sync(() => warm().length === 0))
    }))
})
