// `as any` here sends objects the typed client would refuse (that is the test) and reads raw Status JSON.
import { describe, expect, it } from "vitest"
import { apiError, setup } from "./helpers.ts"

const c = (extra: Record<string, unknown> = {}) => ({ name: "c", image: "img:1", ...extra })

describe("validation (422/400 as the real apiserver answers)", () => {
  it("a missing image is 422 Invalid with a FieldValueRequired cause", async () => {
    const { api } = await setup()
    const e = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "vnc-1" }, spec: { containers: [{ name: "c" } as any] } } }))
    expect(e.code).toBe(422)
    expect(e.status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "Pod \"vnc-1\" is invalid: spec.containers[0].image: Required value",
      reason: "Invalid",
      details: { name: "vnc-1", kind: "Pod", causes: [{ reason: "FieldValueRequired", message: "Required value", field: "spec.containers[0].image" }] },
      code: 422
    })
  })

  it("bad names, label values and ports give the apiserver's texts, aggregated", async () => {
    const { api } = await setup()
    const name = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "Bad_Name" }, spec: { containers: [c()] } } }))
    expect(name.status.message).toBe(
      "Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    )
    const label = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "p", labels: { app: "has space!" } }, spec: { containers: [c()] } } }))
    expect(label.status.message).toBe(
      "Pod \"p\" is invalid: metadata.labels: Invalid value: \"has space!\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    )
    const port = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "p" }, spec: { containers: [c({ ports: [{ containerPort: 70000 }] })] } } }))
    expect(port.status.message).toBe("Pod \"p\" is invalid: spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive")
    expect(port.status.details.causes).toEqual([{ reason: "FieldValueInvalid", message: "Invalid value: 70000: must be between 1 and 65535, inclusive", field: "spec.containers[0].ports[0].containerPort" }])
    const two = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "p" }, spec: { containers: [c(), { name: "c" } as any] } } }))
    expect(two.status.message).toBe("Pod \"p\" is invalid: [spec.containers[1].name: Duplicate value: \"c\", spec.containers[1].image: Required value]")
    const noName = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: {}, spec: { containers: [c()] } } }))
    expect(noName.status.message).toBe("Pod \"\" is invalid: metadata.name: Required value: name or generateName is required")
    const noContainers = await apiError(api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "p" }, spec: {} as any } }))
    expect(noContainers.status.message).toBe("Pod \"p\" is invalid: spec.containers: Required value")
  })

  it("service rules: DNS-1035 names, port ranges, names required with several ports", async () => {
    const { api } = await setup()
    const n = await apiError(api.createNamespacedService({ namespace: "default", body: { metadata: { name: "1svc" }, spec: { ports: [{ port: 80 }] } } }))
    expect(n.status.message).toBe("Service \"1svc\" is invalid: metadata.name: Invalid value: \"1svc\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
    const p = await apiError(api.createNamespacedService({ namespace: "default", body: { metadata: { name: "s" }, spec: { ports: [{ port: 70000 }] } } }))
    expect(p.status.message).toBe("Service \"s\" is invalid: spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive")
    const names = await apiError(api.createNamespacedService({ namespace: "default", body: { metadata: { name: "s" }, spec: { ports: [{ port: 1, name: "a" }, { port: 2 }] } } }))
    expect(names.status.message).toBe("Service \"s\" is invalid: spec.ports[1].name: Required value")
    const none = await apiError(api.createNamespacedService({ namespace: "default", body: { metadata: { name: "s" }, spec: {} } }))
    expect(none.status.message).toBe("Service \"s\" is invalid: spec.ports: Required value")
  })

  it("PVC rules: access modes and storage request", async () => {
    const { api } = await setup()
    const e = await apiError(api.createNamespacedPersistentVolumeClaim({ namespace: "default", body: { metadata: { name: "p" }, spec: {} } }))
    expect(e.status.message).toBe("PersistentVolumeClaim \"p\" is invalid: [spec.accessModes: Required value: at least 1 access mode is required, spec.resources[storage]: Required value]")
    const m = await apiError(api.createNamespacedPersistentVolumeClaim({ namespace: "default", body: { metadata: { name: "p" }, spec: { accessModes: ["Bogus"], resources: { requests: { storage: "1Gi" } } } } }))
    expect(m.code).toBe(422)
    expect(m.status.message).toContain("spec.accessModes: Unsupported value: \"Bogus\": supported values: ")
  })

  it("type errors and bad quantities are 400 decode errors", async () => {
    const { server } = await setup()
    const post = (path: string, body: unknown) =>
      fetch(`${server.url}${path}`, { method: "POST", headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    const r = await post("/api/v1/namespaces/default/pods", { metadata: { name: "p" }, spec: { containers: [{ name: "c", image: "i", ports: [{ containerPort: "5900" }] }] } })
    expect(r.status).toBe(400)
    const st = await r.json() as any
    expect(st.reason).toBe("BadRequest")
    expect(st.message).toMatch(/^Pod in version "v1" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field .*containerPort of type int32$/)
    const q = await post("/api/v1/namespaces/default/persistentvolumeclaims", { metadata: { name: "p" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "lots" } } } })
    expect(q.status).toBe(400)
    expect(((await q.json()) as any).message).toContain("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    const enumBad = await post("/api/v1/namespaces/default/pods", { metadata: { name: "p" }, spec: { restartPolicy: "Sometimes", containers: [{ name: "c", image: "i" }] } })
    expect(enumBad.status).toBe(422)
    expect(((await enumBad.json()) as any).message).toBe("Pod \"p\" is invalid: spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\", \"OnFailure\"")
  })

  it("unsupported body media types are 415", async () => {
    const { server } = await setup()
    const r = await fetch(`${server.url}/api/v1/namespaces/default/configmaps`, { method: "POST", headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "text/plain" }, body: "x" })
    expect(r.status).toBe(415)
    expect(((await r.json()) as any).reason).toBe("UnsupportedMediaType")
  })

  it("unknown fields are dropped with a Warning header; fieldValidation=Strict makes them a 400", async () => {
    const { api, server } = await setup({ kubelet: { paused: true } })
    const body = { metadata: { name: "p" }, spec: { foo: 1, containers: [{ name: "c", image: "i:1", bogus: true }] } }
    const r = await fetch(`${server.url}/api/v1/namespaces/default/pods`, { method: "POST", headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    expect(r.status).toBe(201)
    // In document order, one Warning per field.
    expect(r.headers.get("warning")).toBe("299 - \"unknown field \\\"spec.foo\\\"\", 299 - \"unknown field \\\"spec.containers[0].bogus\\\"\"")
    const stored = server.get("pods", "default", "p")!
    expect(stored.spec.foo).toBeUndefined()
    expect(stored.spec.containers[0].bogus).toBeUndefined()
    const strict = await fetch(`${server.url}/api/v1/namespaces/default/pods?fieldValidation=Strict`, { method: "POST", headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" }, body: JSON.stringify({ ...body, metadata: { name: "q" } }) })
    expect(strict.status).toBe(400)
    expect(((await strict.json()) as any).message).toBe("Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: unknown field \"spec.foo\", unknown field \"spec.containers[0].bogus\"")
    // Through the client the unknown field simply disappears.
    const viaClient = await api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "c" }, data: { a: "1" } } })
    expect(viaClient.data).toEqual({ a: "1" })
  })
})
