// The Kubernetes backend against kube-testserver through the real client: object shapes as stored,
// idempotent create and adoption, delete keeping the home PVC, rollback, faults, secrets, capacity.
import { assert, describe, it } from "@effect/vitest"
import { waitFor } from "@streamspace/testbed"
import { Effect, Fiber, Layer, Metric, Option } from "effect"
import { TestClock } from "effect/testing"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { Kubernetes, type KubernetesError } from "../src/Kubernetes.ts"
import { kubernetesApiErrors } from "../src/Metrics.ts"
import { AGENT_ID, fastKube, makeCluster, NAMESPACE, sessionSpec, sid } from "./support/cluster.ts"

const kubeFor = (cluster: Effect.Success<ReturnType<typeof makeCluster>>, extra: Record<string, string> = {}, options = fastKube) =>
  Layer.build(Kubernetes.layerWith(options).pipe(Layer.provide(cluster.config(extra)))).pipe(
    Effect.map((ctx) => ctx.mapUnsafe.get(Kubernetes.key) as Kubernetes["Service"])
  )

const failure = <A>(eff: Effect.Effect<A, KubernetesError>) => Effect.flip(eff)

describe("Kubernetes session objects", () => {
  it.live("create makes a labelled Pod, Service and home PVC as the API stores them", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster, { SESSION_STORAGE_CLASS: "fast", SESSION_DEFAULT_STORAGE: "5Gi", SESSION_IMAGE_PULL_POLICY: "Always" })
      const pod = yield* kube.createSession(sid("s-1"), sessionSpec({ persistent_home: true, env: { LANG: "C.UTF-8" } }))
      assert.strictEqual(pod.metadata?.name, "s-1")
      const stored = cluster.server.get("pods", NAMESPACE, "s-1")!
      assert.deepInclude(stored.metadata.labels, {
        app: "session",
        agent: AGENT_ID,
        "streamspace.io/session-id": "s-1",
        "streamspace.io/user": "alice",
        "streamspace.io/template": "firefox",
        "app.kubernetes.io/managed-by": "streamspace-agent"
      })
      const c = stored.spec.containers[0]
      assert.strictEqual(c.imagePullPolicy, "Always")
      assert.deepStrictEqual(c.resources.requests, { cpu: "1000m", memory: "2Gi", "ephemeral-storage": "0" })
      assert.strictEqual(c.resources.limits["ephemeral-storage"], "10Gi")
      assert.strictEqual(stored.spec.securityContext.fsGroup, 1000)
      assert.strictEqual(c.securityContext.allowPrivilegeEscalation, false)
      assert.deepStrictEqual(c.securityContext.capabilities, { drop: ["ALL"] })
      assert.deepStrictEqual(stored.spec.securityContext.seccompProfile, { type: "RuntimeDefault" })
      assert.isTrue(stored.spec.securityContext.runAsNonRoot)
      assert.deepInclude(c.env, { name: "LANG", value: "C.UTF-8" })
      assert.deepStrictEqual(stored.spec.volumes.find((v: { name: string }) => v.name === "home").persistentVolumeClaim, { claimName: "home-alice" })
      const svc = cluster.server.get("services", NAMESPACE, "s-1")!
      assert.strictEqual(svc.spec.type, "ClusterIP")
      assert.strictEqual(svc.spec.ports[0].port, 5900)
      assert.strictEqual(svc.spec.selector["streamspace.io/session-id"], "s-1")
      const pvc = cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice")!
      assert.deepStrictEqual(pvc.spec.accessModes, ["ReadWriteOnce"])
      assert.strictEqual(pvc.spec.storageClassName, "fast")
      assert.strictEqual(pvc.spec.resources.requests.storage, "5Gi")
    }))

  it.live("create is idempotent, a user's later session reuses the home, a shared home is RWX", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      const first = yield* kube.createSession(sid("s-1"), sessionSpec({ persistent_home: true }))
      const again = yield* kube.createSession(sid("s-1"), sessionSpec({ persistent_home: true }))
      assert.strictEqual(again.metadata?.uid, first.metadata?.uid, "the existing pod is adopted")
      yield* kube.createSession(sid("s-2"), sessionSpec({ persistent_home: true }))
      assert.strictEqual(cluster.server.list("persistentvolumeclaims", NAMESPACE).length, 1)
      yield* kube.createSession(sid("s-3"), sessionSpec({ user_id: "bob" as never, persistent_home: true, shared_home: true }))
      assert.deepStrictEqual(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-bob")!.spec.accessModes, ["ReadWriteMany"])
    }))

  it.live("an object of the same name that is not ours is not adopted", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      cluster.server.put("pods", {
        metadata: { name: "s-1", namespace: NAMESPACE, labels: { app: "other" } },
        spec: { containers: [{ name: "x", image: "x:1" }] }
      })
      const e = yield* failure(kube.createSession(sid("s-1"), sessionSpec()))
      assert.strictEqual(e.reason, "AlreadyExists")
      assert.isUndefined(cluster.server.get("services", NAMESPACE, "s-1"), "the service it made was rolled back")
    }))

  it.live("delete removes pod and service, keeps the home PVC, and succeeds when already gone", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      yield* kube.createSession(sid("s-1"), sessionSpec({ persistent_home: true }))
      yield* kube.deleteSession(sid("s-1"))
      assert.isUndefined(cluster.server.get("services", NAMESPACE, "s-1"))
      const pod = cluster.server.get("pods", NAMESPACE, "s-1")
      assert.isTrue(pod === undefined || pod.metadata.deletionTimestamp !== undefined)
      assert.isDefined(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice"))
      yield* kube.deleteSession(sid("s-1"))
      yield* kube.deleteSession(sid("never-existed"))
    }))

  it.live("hibernate waits until the pod is gone and names the home it keeps; resume needs that home to exist", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      yield* kube.createSession(sid("s-1"), sessionSpec({ persistent_home: true }))
      const home = cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice")!
      const claim = yield* kube.hibernateSession(sid("s-1"))
      assert.deepStrictEqual(claim, Option.some("home-alice"))
      assert.isUndefined(cluster.server.get("pods", NAMESPACE, "s-1"), "the pod is gone, not only terminating")
      assert.isUndefined(cluster.server.get("services", NAMESPACE, "s-1"))
      assert.strictEqual(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice")?.metadata.uid, home.metadata.uid)
      // Already hibernated: nothing to do, no claim to name.
      assert.deepStrictEqual(yield* kube.hibernateSession(sid("s-1")), Option.none())

      const pod = yield* kube.resumeSession(sid("s-1"), sessionSpec({ persistent_home: true }))
      assert.strictEqual(pod.metadata?.name, "s-1")
      assert.strictEqual(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice")?.metadata.uid, home.metadata.uid)

      // A home that is gone is not silently replaced by an empty one.
      const e = yield* failure(kube.resumeSession(sid("s-2"), sessionSpec({ user_id: "carol" as never, persistent_home: true })))
      assert.strictEqual(e.reason, "NotFound")
      assert.include(e.message, "home-carol")
      assert.isUndefined(cluster.server.get("pods", NAMESPACE, "s-2"))
      assert.isUndefined(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-carol"))
    }))

  it.live("home volumes: listed with owner, size and use; deleted only when no pod mounts them and only for their owner", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster, { SESSION_DEFAULT_STORAGE: "5Gi" })
      yield* kube.createSession(sid("s-1"), sessionSpec({ persistent_home: true }))
      yield* kube.createSession(sid("s-2"), sessionSpec({ user_id: "bob" as never, persistent_home: true }))
      yield* kube.createSession(sid("s-3"), sessionSpec())
      const homes = [...yield* kube.listHomes].sort((a, b) => (a.name < b.name ? -1 : 1))
      assert.deepStrictEqual(homes.map((h) => [h.name, h.user_id, h.size, h.in_use]), [["home-alice", "alice", "5Gi", true], ["home-bob", "bob", "5Gi", true]])
      assert.match(homes[0]!.created_at, /^\d{4}-\d\d-\d\dT/)
      assert.strictEqual(yield* kube.deleteHome("home-alice", "alice" as never), "in_use")
      assert.isDefined(cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice"))
      assert.strictEqual((yield* failure(kube.deleteHome("home-bob", "alice" as never))).reason, "Invalid")
      yield* kube.deleteSession(sid("s-1"))
      yield* waitFor("pod s-1 gone", Effect.sync(() => cluster.server.get("pods", NAMESPACE, "s-1") === undefined))
      assert.deepStrictEqual((yield* kube.listHomes).map((h) => [h.name, h.in_use]).sort(), [["home-alice", false], ["home-bob", true]])
      assert.strictEqual(yield* kube.deleteHome("home-alice", "alice" as never), "deleted")
      const gone = cluster.server.get("persistentvolumeclaims", NAMESPACE, "home-alice")
      assert.isTrue(gone === undefined || gone.metadata.deletionTimestamp !== undefined)
      assert.include(["deleted", "absent"], yield* kube.deleteHome("home-alice", "alice" as never))
      assert.deepStrictEqual((yield* kube.listHomes).map((h) => h.name), ["home-bob"])
    }))

  it.live("a pod the API rejects fails with the API's message and rolls back the service", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const template = join(cluster.dir, "pod-template.yaml")
      writeFileSync(template, "spec:\n  containers:\n  - name: Bad_Sidecar\n    image: x:1\n")
      const kube = yield* kubeFor(cluster, { SESSION_POD_TEMPLATE: template })
      const e = yield* failure(kube.createSession(sid("s-1"), sessionSpec()))
      assert.strictEqual(e.reason, "Invalid")
      assert.strictEqual(e.code, 422)
      assert.include(e.message, "spec.containers[1].name")
      assert.isUndefined(cluster.server.get("services", NAMESPACE, "s-1"))
      assert.isUndefined(cluster.server.get("pods", NAMESPACE, "s-1"))
    }))

  it.live("the pod template is merged into what the API stores", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const template = join(cluster.dir, "pod-template.yaml")
      writeFileSync(template, [
        "apiVersion: v1",
        "kind: Pod",
        "spec:",
        "  nodeSelector: {workload: streamspace}",
        "  tolerations: [{key: streamspace, operator: Equal, value: sessions, effect: NoSchedule}]",
        "  securityContext: {runAsUser: 1000, fsGroup: 1000}",
        "  containers:",
        "  - name: sidecar",
        "    image: sidecar:1"
      ].join("\n"))
      const kube = yield* kubeFor(cluster, { SESSION_POD_TEMPLATE: template })
      yield* kube.createSession(sid("s-1"), sessionSpec())
      const stored = cluster.server.get("pods", NAMESPACE, "s-1")!
      assert.deepStrictEqual(stored.spec.nodeSelector, { workload: "streamspace" })
      assert.deepInclude(stored.spec.tolerations, { key: "streamspace", operator: "Equal", value: "sessions", effect: "NoSchedule" })
      assert.strictEqual(stored.spec.securityContext.fsGroup, 1000)
      assert.deepStrictEqual(stored.spec.containers.map((c: { name: string }) => c.name), ["session", "sidecar"])
    }))
})

describe("Kubernetes API faults", () => {
  it.live("500 and 409 Conflict are retried", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      cluster.server.addFault({ method: "POST", path: `/api/v1/namespaces/${NAMESPACE}/services`, status: 500, times: 2 })
      cluster.server.addFault({ method: "POST", path: `/api/v1/namespaces/${NAMESPACE}/pods`, status: 409, times: 1, message: "the object has been modified" })
      yield* kube.createSession(sid("s-1"), sessionSpec())
      assert.isDefined(cluster.server.get("pods", NAMESPACE, "s-1"))
      assert.isDefined(cluster.server.get("services", NAMESPACE, "s-1"))
    }))

  it.effect("429 waits for Retry-After before the retry, and the health turns degraded", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      const tooMany = Metric.withAttributes(kubernetesApiErrors, { verb: "create", resource: "pods", code: "429" })
      const before = (yield* Metric.value(tooMany)).count
      cluster.server.addFault({ method: "POST", path: `/api/v1/namespaces/${NAMESPACE}/pods`, status: 429, retryAfterSeconds: 1, times: 1 })
      const create = yield* Effect.forkChild(kube.createSession(sid("s-2"), sessionSpec()))
      yield* waitFor("the 429 answer", Effect.map(Metric.value(tooMany), (v) => v.count > before))
      yield* TestClock.adjust("999 millis")
      yield* Effect.promise(() => new Promise((r) => setTimeout(r, 200))) // room for a retry that should not come yet
      assert.isUndefined(cluster.server.get("pods", NAMESPACE, "s-2"), "no retry before Retry-After")
      yield* TestClock.adjust("1 millis")
      yield* Fiber.join(create)
      assert.isDefined(cluster.server.get("pods", NAMESPACE, "s-2"))
      assert.strictEqual((yield* kube.health).status, "degraded")
    }))

  it.live("a call without an answer in time is retried; every failure is counted in the API error metric", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster, {}, { ...fastKube, requestTimeout: "200 millis" })
      const errors = Metric.withAttributes(kubernetesApiErrors, { verb: "get", resource: "secrets", code: "Timeout" })
      const before = (yield* Metric.value(errors)).count
      cluster.server.addFault({ method: "GET", path: `/api/v1/namespaces/${NAMESPACE}/secrets/cred`, latencyMs: 600, times: 1 })
      assert.isTrue(Option.isNone(yield* kube.readSecret("cred")))
      assert.strictEqual((yield* Metric.value(errors)).count - before, 1)
    }))

  it.live("403 fails at once as Forbidden (no retry), 5xx past the budget fails as Unavailable", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      // One 403 only: had it been retried, the second attempt would have succeeded.
      cluster.server.addFault({ method: "POST", path: `/api/v1/namespaces/${NAMESPACE}/services`, status: 403, times: 1, message: "denied by test" })
      const forbidden = yield* failure(kube.createSession(sid("s-1"), sessionSpec()))
      assert.strictEqual(forbidden.reason, "Forbidden")
      assert.include(forbidden.message, "denied by test")
      cluster.server.addFault({ method: "POST", path: `/api/v1/namespaces/${NAMESPACE}/services`, status: 503 })
      const unavailable = yield* failure(kube.createSession(sid("s-2"), sessionSpec()))
      assert.strictEqual(unavailable.reason, "Unavailable")
      assert.strictEqual(unavailable.code, 503)
    }))

  it.effect("an unreachable API turns the health from degraded to failing, and back to ok", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster, {}, { ...fastKube, retryTimes: 0, failingAfter: "1 second" })
      yield* Effect.promise(() => cluster.server.refuseConnections(true))
      const e = yield* failure(kube.readPod(sid("x")))
      assert.strictEqual(e.reason, "Unavailable")
      assert.strictEqual((yield* kube.health).status, "degraded")
      yield* TestClock.adjust("999 millis")
      yield* failure(kube.readPod(sid("x")))
      assert.strictEqual((yield* kube.health).status, "degraded", "not failing before FAILING_AFTER")
      yield* TestClock.adjust("1 millis")
      yield* failure(kube.readPod(sid("x")))
      const failing = yield* kube.health
      assert.strictEqual(failing.status, "failing")
      assert.include(failing.message, "failing for")
      yield* Effect.promise(() => cluster.server.refuseConnections(false))
      assert.isTrue(Option.isNone(yield* kube.readPod(sid("x"))))
      assert.notStrictEqual((yield* kube.health).status, "failing")
    }))
})

describe("Kubernetes secrets and capacity", () => {
  it.live("writeSecret creates, then replaces; readSecret decodes", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster)
      assert.isTrue(Option.isNone(yield* kube.readSecret("cred")))
      yield* kube.writeSecret("cred", { token: "first-token-0123456789" })
      yield* kube.writeSecret("cred", { token: "second-token-0123456789" })
      assert.deepStrictEqual(yield* kube.readSecret("cred"), Option.some({ token: "second-token-0123456789" }))
      const stored = cluster.server.get("secrets", NAMESPACE, "cred")!
      assert.strictEqual(Buffer.from(stored.data.token, "base64").toString(), "second-token-0123456789")
    }))

  it.live("capacity falls back to MAX_SESSIONS x defaults when no quota is readable", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const kube = yield* kubeFor(cluster, { MAX_SESSIONS: "10", SESSION_DEFAULT_CPU: "500m", SESSION_DEFAULT_MEMORY: "1Gi" })
      assert.deepStrictEqual(yield* kube.capacity, { cpu: "5000m", memory: "10Gi", max_sessions: 10 })
    }))
})
