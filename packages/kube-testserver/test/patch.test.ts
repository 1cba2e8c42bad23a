// `as any` here reads raw Status JSON from fetch, which has no type: the point is the exact wire shape.
import * as k8s from "@kubernetes/client-node"
import { describe, expect, it } from "vitest"
import { apiError, pod, setup } from "./helpers.ts"

const ct = (t: string) => k8s.setHeaderOptions("Content-Type", t)

describe("PATCH", () => {
  it("defaults to JSON patch (RFC 6902); a failing op is 422, a malformed document 400", async () => {
    const { api } = await setup({ kubelet: { paused: true } })
    await api.createNamespacedPod({ namespace: "default", body: pod("p") })
    const p = await api.patchNamespacedPod({ name: "p", namespace: "default", body: [{ op: "add", path: "/metadata/labels/x", value: "1" }, { op: "replace", path: "/metadata/labels/app", value: "web" }] })
    expect(p.metadata?.labels).toEqual({ app: "web", x: "1" })
    const failed = await apiError(api.patchNamespacedPod({ name: "p", namespace: "default", body: [{ op: "test", path: "/metadata/labels/x", value: "2" }] }))
    expect(failed.code).toBe(422)
    expect(failed.status.reason).toBe("Invalid")
    expect(failed.status.message).toBe("the server rejected our request due to an error in our request")
    const missing = await apiError(api.patchNamespacedPod({ name: "p", namespace: "default", body: [{ op: "remove", path: "/metadata/annotations/nope" }] }))
    expect(missing.code).toBe(422)
    const malformed = await apiError(api.patchNamespacedPod({ name: "p", namespace: "default", body: { not: "a list" } }))
    expect(malformed.code).toBe(400)
  })

  it("merge patch: null deletes, lists are replaced", async () => {
    const { api } = await setup()
    await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "c", labels: { a: "1", b: "2" }, finalizers: ["x/y", "x/z"] }, data: { k: "v" } } })
    const p = await api.patchNamespacedConfigMap({ name: "c", namespace: "default", body: { metadata: { labels: { a: null, c: "3" }, finalizers: ["x/q"] } } }, ct(k8s.PatchStrategy.MergePatch))
    expect(p.metadata?.labels).toEqual({ b: "2", c: "3" })
    expect(p.metadata?.finalizers).toEqual(["x/q"])
  })

  it("strategic merge patch merges containers by name and conditions by type", async () => {
    const { api } = await setup({ kubelet: { paused: true } })
    await api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "p" }, spec: { containers: [{ name: "a", image: "a:1", env: [{ name: "X", value: "1" }] }, { name: "b", image: "b:1" }] } } })
    const p = await api.patchNamespacedPod({ name: "p", namespace: "default", body: { spec: { containers: [{ name: "b", image: "b:2" }] } } }, ct(k8s.PatchStrategy.StrategicMergePatch))
    expect(p.spec?.containers.map((c) => `${c.name}=${c.image}`)).toEqual(["a=a:1", "b=b:2"])
    expect(p.spec?.containers[0]?.env).toEqual([{ name: "X", value: "1" }])
    const s1 = await api.patchNamespacedPodStatus({ name: "p", namespace: "default", body: { status: { conditions: [{ type: "Ready", status: "False" }, { type: "X", status: "True" }] } } }, ct(k8s.PatchStrategy.StrategicMergePatch))
    const s2 = await api.patchNamespacedPodStatus({ name: "p", namespace: "default", body: { status: { conditions: [{ type: "Ready", status: "True" }] } } }, ct(k8s.PatchStrategy.StrategicMergePatch))
    expect(s1.status?.conditions?.length).toBe(2)
    expect(s2.status?.conditions?.map((c) => `${c.type}=${c.status}`)).toEqual(["Ready=True", "X=True"])
  })

  it("server-side apply creates a missing object (201) and needs fieldManager", async () => {
    const { api, server } = await setup()
    const body = { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "applied", namespace: "default" }, data: { a: "1" } }
    const noManager = await apiError(api.patchNamespacedConfigMap({ name: "applied", namespace: "default", body }, ct(k8s.PatchStrategy.ServerSideApply)))
    expect(noManager.code).toBe(422)
    const created = await api.patchNamespacedConfigMap({ name: "applied", namespace: "default", body, fieldManager: "agent", force: true }, ct(k8s.PatchStrategy.ServerSideApply))
    expect(created.data).toEqual({ a: "1" })
    expect(server.get("configmaps", "default", "applied")?.data).toEqual({ a: "1" })
    const updated = await api.patchNamespacedConfigMap({ name: "applied", namespace: "default", body: { ...body, data: { a: "2" } }, fieldManager: "agent", force: true }, ct(k8s.PatchStrategy.ServerSideApply))
    expect(updated.data).toEqual({ a: "2" })
    const raw = await fetch(`${server.url}/api/v1/namespaces/default/configmaps/fresh?fieldManager=x`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/apply-patch+yaml" },
      body: "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fresh\ndata:\n  k: v\n"
    })
    expect(raw.status).toBe(201)
  })

  it("an unknown patch Content-Type is 415; a stale resourceVersion in the patch is 409", async () => {
    const { api, server } = await setup()
    const cm = await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "c" } } })
    const r = await fetch(`${server.url}/api/v1/namespaces/default/configmaps/c`, { method: "PATCH", headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" }, body: "{}" })
    expect(r.status).toBe(415)
    const st = await r.json() as any
    expect(st.reason).toBe("UnsupportedMediaType")
    await api.patchNamespacedConfigMap({ name: "c", namespace: "default", body: { data: { a: "1" } } }, ct(k8s.PatchStrategy.MergePatch))
    const stale = await apiError(api.patchNamespacedConfigMap({ name: "c", namespace: "default", body: { metadata: { resourceVersion: cm.metadata!.resourceVersion }, data: { a: "2" } } }, ct(k8s.PatchStrategy.MergePatch)))
    expect(stale.code).toBe(409)
    expect(stale.status.reason).toBe("Conflict")
    const nf = await apiError(api.patchNamespacedConfigMap({ name: "nope", namespace: "default", body: { data: {} } }, ct(k8s.PatchStrategy.MergePatch)))
    expect(nf.code).toBe(404)
  })
})
