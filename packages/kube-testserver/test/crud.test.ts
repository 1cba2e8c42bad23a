// `as any` here reads raw Status/List JSON from fetch, which has no type: the point is the exact wire shape.
import * as k8s from "@kubernetes/client-node"
import { describe, expect, it } from "vitest"
import { apiError, pod, setup } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

describe("CRUD through CoreV1Api", () => {
  it("creates a pod with server-set metadata and defaults, reads and lists it", async () => {
    const { api, server } = await setup()
    const before = server.resourceVersion
    const created = await api.createNamespacedPod({ namespace: "default", body: pod("vnc-1") })
    expect(created.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/)
    expect(Number(created.metadata?.resourceVersion)).toBeGreaterThan(before)
    expect(created.metadata?.creationTimestamp).toBeInstanceOf(Date)
    expect(created.metadata?.creationTimestamp?.getMilliseconds()).toBe(0)
    expect(created.status?.phase).toBe("Pending")
    expect(created.status?.qosClass).toBe("BestEffort")
    expect(created.spec?.restartPolicy).toBe("Always")
    expect(created.spec?.terminationGracePeriodSeconds).toBe(30)
    expect(created.spec?.containers[0]?.imagePullPolicy).toBe("IfNotPresent")
    expect(created.spec?.containers[0]?.ports?.[0]?.protocol).toBe("TCP")
    const read = await api.readNamespacedPod({ name: "vnc-1", namespace: "default" })
    expect(read.metadata?.uid).toBe(created.metadata?.uid)
    const list = await api.listNamespacedPod({ namespace: "default" })
    expect(list.kind).toBe("PodList")
    expect(list.items.map((p) => p.metadata?.name)).toEqual(["vnc-1"])
    expect(Number(list.metadata?.resourceVersion)).toBeGreaterThanOrEqual(Number(created.metadata?.resourceVersion))
    // Items of a real list carry no kind/apiVersion.
    const raw = await fetch(`${server.url}/api/v1/namespaces/default/pods`, { headers: { authorization: `Bearer ${server.adminToken}` } })
    const body = await raw.json() as any
    expect(raw.headers.get("content-type")).toContain("application/json")
    expect(body.items[0].kind).toBeUndefined()
    expect(body.items[0].apiVersion).toBeUndefined()
    expect(body.metadata.continue).toBeUndefined()
  })

  it("uses one global resourceVersion counter across kinds", async () => {
    const { api } = await setup()
    const a = await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" }, data: { x: "1" } } })
    const b = await api.createNamespacedSecret({ namespace: "streamspace", body: { metadata: { name: "b" }, stringData: { y: "2" } } })
    const c = await api.createNamespacedService({ namespace: "default", body: { metadata: { name: "c" }, spec: { ports: [{ port: 5900 }] } } })
    const rvs = [a, b, c].map((o) => Number(o.metadata?.resourceVersion))
    expect(rvs[1]).toBeGreaterThan(rvs[0]!)
    expect(rvs[2]).toBeGreaterThan(rvs[1]!)
  })

  it("generateName produces base + 5 characters from the apiserver alphabet", async () => {
    const { api } = await setup()
    const p = await api.createNamespacedPod({ namespace: "default", body: { ...pod(""), metadata: { generateName: "vnc-" } } })
    expect(p.metadata?.name).toMatch(/^vnc-[bcdfghjklmnpqrstvwxz2456789]{5}$/)
  })

  it("answers 404, 409 AlreadyExists and 409 Conflict with the real Status bodies", async () => {
    const { api } = await setup({ kubelet: { paused: true } })
    const nf = await apiError(api.readNamespacedPod({ name: "vnc-1", namespace: "default" }))
    expect(nf.code).toBe(404)
    expect(nf.status).toEqual({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: "pods \"vnc-1\" not found", reason: "NotFound", details: { name: "vnc-1", kind: "pods" }, code: 404 })
    const p = await api.createNamespacedPod({ namespace: "default", body: pod("vnc-1") })
    const ae = await apiError(api.createNamespacedPod({ namespace: "default", body: pod("vnc-1") }))
    expect(ae.code).toBe(409)
    expect(ae.status).toEqual({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: "pods \"vnc-1\" already exists", reason: "AlreadyExists", details: { name: "vnc-1", kind: "pods" }, code: 409 })
    // Stale resourceVersion on update.
    const fresh = await api.replaceNamespacedPod({ name: "vnc-1", namespace: "default", body: { ...p, metadata: { ...p.metadata, labels: { app: "vnc", x: "1" } } } })
    expect(Number(fresh.metadata?.resourceVersion)).toBeGreaterThan(Number(p.metadata?.resourceVersion))
    const cf = await apiError(api.replaceNamespacedPod({ name: "vnc-1", namespace: "default", body: { ...p, metadata: { ...p.metadata, labels: { app: "vnc", x: "2" } } } }))
    expect(cf.code).toBe(409)
    expect(cf.status.reason).toBe("Conflict")
    expect(cf.status.message).toBe("Operation cannot be fulfilled on pods \"vnc-1\": the object has been modified; please apply your changes to the latest version and try again")
    expect(cf.status.details).toEqual({ name: "vnc-1", kind: "pods" })
  })

  it("rejects create with resourceVersion set (500), missing namespace (404) and namespace mismatch (400)", async () => {
    const { api } = await setup()
    const rv = await apiError(api.createNamespacedPod({ namespace: "default", body: { ...pod("p"), metadata: { name: "p", resourceVersion: "5" } } }))
    expect(rv.code).toBe(500)
    expect(rv.status.message).toBe("resourceVersion should not be set on objects to be created")
    const ns = await apiError(api.createNamespacedPod({ namespace: "nope", body: pod("p") }))
    expect(ns.code).toBe(404)
    expect(ns.status.message).toBe("namespaces \"nope\" not found")
    expect(ns.status.details).toEqual({ name: "nope", kind: "namespaces" })
    const mm = await apiError(api.createNamespacedPod({ namespace: "default", body: { ...pod("p"), metadata: { name: "p", namespace: "streamspace" } } }))
    expect(mm.code).toBe(400)
    expect(mm.status.reason).toBe("BadRequest")
    expect(mm.status.message).toBe("the namespace of the provided object does not match the namespace sent on the request")
  })

  it("a no-op update neither bumps the resourceVersion nor emits an event", async () => {
    const { api, server } = await setup()
    const cm = await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "a" }, data: { x: "1" } } })
    const events: Array<string> = []
    server.onChange((t, r) => events.push(`${t} ${r}`))
    const same = await api.replaceNamespacedConfigMap({ name: "a", namespace: "default", body: cm })
    expect(same.metadata?.resourceVersion).toBe(cm.metadata?.resourceVersion)
    expect(events).toEqual([])
  })

  it("delete returns the object for pods/services/PVCs and a Success Status for configmaps", async () => {
    const { api } = await setup()
    await api.createNamespacedService({ namespace: "default", body: { metadata: { name: "svc" }, spec: { ports: [{ port: 5900 }] } } })
    const svc = await api.deleteNamespacedService({ name: "svc", namespace: "default" })
    expect(svc.kind).toBe("Service")
    expect(svc.metadata?.name).toBe("svc")
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "cm" } } })
    const st = await api.deleteNamespacedConfigMap({ name: "cm", namespace: "default" })
    expect(st.status).toBe("Success")
    expect(st.details?.name).toBe("cm")
    expect(st.details?.kind).toBe("configmaps")
    expect(await apiError(api.readNamespacedConfigMap({ name: "cm", namespace: "default" }))).toMatchObject({ code: 404 })
  })

  it("an unscheduled pod is deleted at once; a scheduled one gracefully (MODIFIED with deletionTimestamp, then DELETED)", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 20, terminationDelayMs: 30 } })
    server.configureKubelet({ paused: true })
    // Not scheduled yet: grace forced to 0.
    server.put("pods", { metadata: { name: "raw", namespace: "default" }, spec: { containers: [{ name: "c", image: "i:1" }] }, status: { phase: "Pending" } })
    const gone = await api.deleteNamespacedPod({ name: "raw", namespace: "default" })
    expect(gone.metadata?.deletionTimestamp).toBeUndefined()
    expect(server.get("pods", "default", "raw")).toBeUndefined()
    server.configureKubelet({ paused: false })
    await api.createNamespacedPod({ namespace: "default", body: pod("vnc-1") })
    await waitForPromise("scheduling", () => server.get("pods", "default", "vnc-1")?.spec.nodeName, { timeout: 3000 })
    const types: Array<string> = []
    server.onChange((t, r, o) => { if (r === "pods" && o.metadata.name === "vnc-1") types.push(t) })
    const deleting = await api.deleteNamespacedPod({ name: "vnc-1", namespace: "default" })
    expect(deleting.metadata?.deletionTimestamp).toBeInstanceOf(Date)
    expect(deleting.metadata?.deletionGracePeriodSeconds).toBe(30)
    expect(server.get("pods", "default", "vnc-1")).toBeDefined()
    await waitForPromise("pod removal", () => server.get("pods", "default", "vnc-1") === undefined, { timeout: 3000 })
    expect(types[0]).toBe("MODIFIED")
    expect(types[types.length - 1]).toBe("DELETED")
  })

  it("delete with gracePeriodSeconds=0 removes at once; preconditions give Conflict", async () => {
    const { api, server } = await setup()
    const p = await api.createNamespacedPod({ namespace: "default", body: pod("vnc-1") })
    await waitForPromise("pod vnc-1 scheduled", () => server.get("pods", "default", "vnc-1")?.spec.nodeName)
    const pre = await apiError(api.deleteNamespacedPod({ name: "vnc-1", namespace: "default", body: { preconditions: { uid: "u1" } } }))
    expect(pre.code).toBe(409)
    expect(pre.status.message).toBe(`Operation cannot be fulfilled on pods "vnc-1": Precondition failed: UID in precondition: u1, UID in object meta: ${p.metadata?.uid}`)
    const gone = await api.deleteNamespacedPod({ name: "vnc-1", namespace: "default", gracePeriodSeconds: 0 })
    expect(gone.metadata?.name).toBe("vnc-1")
    expect(server.get("pods", "default", "vnc-1")).toBeUndefined()
  })

  it("deletecollection deletes what the label selector matches", async () => {
    const { api, server } = await setup()
    for (const [n, app] of [["a", "x"], ["b", "x"], ["c", "y"]] as const) {
      await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: n, labels: { app } } } })
    }
    await api.deleteCollectionNamespacedConfigMap({ namespace: "default", labelSelector: "app=x" })
    expect(server.list("configmaps", "default").map((c) => c.metadata.name)).toEqual(["c"])
  })

  it("limit/continue pages with the first page's resourceVersion; a bad token is 400", async () => {
    const { api } = await setup()
    for (const n of ["a", "b", "c", "d", "e"]) await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: n } } })
    const p1 = await api.listNamespacedConfigMap({ namespace: "default", limit: 2 })
    expect(p1.items.map((i) => i.metadata?.name)).toEqual(["a", "b"])
    expect(p1.metadata?._continue).toBeTruthy()
    expect(p1.metadata?.remainingItemCount).toBe(3)
    const p2 = await api.listNamespacedConfigMap({ namespace: "default", limit: 2, _continue: p1.metadata!._continue! })
    expect(p2.items.map((i) => i.metadata?.name)).toEqual(["c", "d"])
    expect(p2.metadata?.resourceVersion).toBe(p1.metadata?.resourceVersion)
    const p3 = await api.listNamespacedConfigMap({ namespace: "default", limit: 2, _continue: p2.metadata!._continue! })
    expect(p3.items.map((i) => i.metadata?.name)).toEqual(["e"])
    expect(p3.metadata?._continue).toBeUndefined()
    expect((await apiError(api.listNamespacedConfigMap({ namespace: "default", _continue: "garbage!" }))).code).toBe(400)
  })

  it("dryRun=All validates and returns the object without persisting", async () => {
    const { api, server } = await setup()
    const p = await api.createNamespacedPod({ namespace: "default", body: pod("dry"), dryRun: "All" })
    expect(p.metadata?.name).toBe("dry")
    expect(server.get("pods", "default", "dry")).toBeUndefined()
  })

  it("namespaces can be created, listed and deleted (with their content)", async () => {
    const { api, server } = await setup({ namespaces: ["default"] })
    await api.createNamespace({ body: { metadata: { name: "streamspace" } } })
    const list = await api.listNamespace()
    expect(list.items.map((n) => n.metadata?.name)).toEqual(["default", "streamspace"])
    expect(list.items[1]?.status?.phase).toBe("Active")
    await api.createNamespacedConfigMap({ namespace: "streamspace", body: { metadata: { name: "c" } } })
    const ns = await api.deleteNamespace({ name: "streamspace" })
    // The real server answers the Namespace (now Terminating); client-node types it as V1Status.
    expect((ns as any).status?.phase).toBe("Terminating")
    await waitForPromise("namespace streamspace gone", () => server.get("namespaces", "", "streamspace") === undefined)
    expect(server.list("configmaps", "streamspace")).toEqual([])
  })

  it("a status update changes only the status", async () => {
    const { api, server } = await setup({ kubelet: { paused: true } })
    await api.createNamespacedPod({ namespace: "default", body: pod("p") })
    const cur = await api.readNamespacedPod({ name: "p", namespace: "default" })
    const upd = await api.replaceNamespacedPodStatus({
      name: "p",
      namespace: "default",
      body: { ...cur, metadata: { ...cur.metadata, labels: { changed: "yes" } }, status: { ...cur.status, phase: "Running" } }
    })
    expect(upd.status?.phase).toBe("Running")
    expect(upd.metadata?.labels).toEqual({ app: "vnc" })
    expect(server.get("pods", "default", "p")?.status.phase).toBe("Running")
  })

  it("pod spec is immutable except the image", async () => {
    const { api } = await setup({ kubelet: { paused: true } })
    const p = await api.createNamespacedPod({ namespace: "default", body: pod("p") })
    const img = await api.replaceNamespacedPod({ name: "p", namespace: "default", body: { ...p, spec: { ...p.spec!, containers: [{ ...p.spec!.containers[0]!, image: "other:2" }] } } })
    expect(img.spec?.containers[0]?.image).toBe("other:2")
    const bad = await apiError(api.replaceNamespacedPod({ name: "p", namespace: "default", body: { ...img, spec: { ...img.spec!, restartPolicy: "Never" } } }))
    expect(bad.code).toBe(422)
    expect(bad.status.message).toMatch(/^Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other than/)
  })

  it("client-node sees ApiException with the raw Status string body", async () => {
    const { api } = await setup()
    try {
      await api.readNamespacedPod({ name: "x", namespace: "default" })
      expect.unreachable()
    } catch (e) {
      expect(e).toBeInstanceOf(k8s.ApiException)
      expect(typeof (e as k8s.ApiException<string>).body).toBe("string")
    }
  })

  it("lists across all namespaces and folds Secret stringData into data", async () => {
    const { api } = await setup({ kubelet: { paused: true } })
    await api.createNamespacedPod({ namespace: "default", body: pod("a") })
    await api.createNamespacedPod({ namespace: "streamspace", body: pod("b") })
    const all = await api.listPodForAllNamespaces({ labelSelector: "app=vnc" })
    expect(all.items.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)).toEqual(["default/a", "streamspace/b"])
    const s = await api.createNamespacedSecret({ namespace: "streamspace", body: { metadata: { name: "cred" }, stringData: { token: "s3cret" } } })
    expect(s.data).toEqual({ token: Buffer.from("s3cret").toString("base64") })
    expect(s.stringData).toBeUndefined()
    expect(s.type).toBe("Opaque")
  })

  it("an expired continue token or Exact resourceVersion is 410 Expired", async () => {
    const { api, server } = await setup()
    for (const n of ["a", "b", "c"]) await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: n } } })
    const p1 = await api.listNamespacedConfigMap({ namespace: "default", limit: 1 })
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "d" } } })
    server.compact()
    const e = await apiError(api.listNamespacedConfigMap({ namespace: "default", limit: 1, _continue: p1.metadata!._continue! }))
    expect(e.code).toBe(410)
    expect(e.status.reason).toBe("Expired")
    const x = await apiError(api.listNamespacedConfigMap({ namespace: "default", resourceVersion: p1.metadata!.resourceVersion!, resourceVersionMatch: "Exact" }))
    expect(x.code).toBe(410)
    expect(x.status.message).toBe(`too old resource version: ${p1.metadata!.resourceVersion} (${server.resourceVersion})`)
  })

  it("label selectors (set-based, '+' as space) and field selectors; bad ones are 400", async () => {
    const { api, server } = await setup()
    for (const [n, labels] of [["a", { tier: "a" }], ["b", { tier: "b", skip: "1" }], ["c", { tier: "c" }], ["d", {}]] as const) {
      await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: n, labels } } })
    }
    const names = async (labelSelector: string) => (await api.listNamespacedConfigMap({ namespace: "default", labelSelector })).items.map((i) => i.metadata?.name)
    expect(await names("tier in (a,b)")).toEqual(["a", "b"])
    expect(await names("tier notin (a,b)")).toEqual(["c", "d"])
    expect(await names("tier,!skip")).toEqual(["a", "c"])
    expect(await names("tier!=a")).toEqual(["b", "c", "d"])
    expect(await names("tier==c")).toEqual(["c"])
    const raw = await fetch(`${server.url}/api/v1/namespaces/default/configmaps?labelSelector=tier+in+%28a%2Cc%29`, { headers: { authorization: `Bearer ${server.adminToken}` } })
    expect(((await raw.json()) as any).items.map((i: any) => i.metadata.name)).toEqual(["a", "c"])
    expect((await apiError(api.listNamespacedConfigMap({ namespace: "default", labelSelector: "tier in (a" }))).code).toBe(400)
    const f = await apiError(api.listNamespacedPod({ namespace: "default", fieldSelector: "spec.foo=bar" }))
    expect(f.code).toBe(400)
    expect(f.status.message).toBe("field label not supported: spec.foo")
    expect((await api.listNamespacedConfigMap({ namespace: "default", fieldSelector: "metadata.name!=a" })).items).toHaveLength(3)
  })

  it("unknown resources and paths are 404 'the server could not find the requested resource'", async () => {
    const { server } = await setup()
    for (const path of ["/apis/apps/v1/namespaces/default/deployments", "/api/v1/namespaces/default/widgets", "/nope"]) {
      const r = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${server.adminToken}` } })
      expect(r.status).toBe(404)
      expect(await r.json()).toEqual({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: "the server could not find the requested resource", reason: "NotFound", details: {}, code: 404 })
    }
  })
})
