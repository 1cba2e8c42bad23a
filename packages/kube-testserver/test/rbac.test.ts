import * as k8s from "@kubernetes/client-node"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { apiError, clientFor, pod, setup } from "./helpers.ts"

const agentRole = `
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: agent
  namespace: streamspace
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "create", "delete"]
  - apiGroups: [""]
    resources: ["configmaps"]
    resourceNames: ["agent-state"]
    verbs: ["get", "update"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: agent
  namespace: streamspace
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: agent
subjects:
  - kind: ServiceAccount
    name: agent
    namespace: streamspace
`

describe("authentication", () => {
  it("a missing or unknown token is 401 (client-node drops the body)", async () => {
    const { server } = await setup()
    const { api } = clientFor(server.kubeconfigFor("wrong"))
    const e = await apiError(api.listNamespacedPod({ namespace: "default" }))
    expect(e.code).toBe(401)
    expect(e.status).toBeUndefined()
    const raw = await fetch(`${server.url}/api/v1/namespaces/default/pods`)
    expect(raw.status).toBe(401)
    expect(await raw.json()).toEqual({ kind: "Status", apiVersion: "v1", metadata: {}, status: "Failure", message: "Unauthorized", reason: "Unauthorized", code: 401 })
  })

  it("the kubeconfig loads with KubeConfig.loadFromString and carries the context namespace", async () => {
    const { server } = await setup()
    const kc = new k8s.KubeConfig()
    kc.loadFromString(server.kubeconfigFor("t", { namespace: "streamspace" }))
    expect(kc.getCurrentCluster()?.server).toBe(server.url)
    expect(kc.getCurrentCluster()?.skipTLSVerify).toBe(true)
    expect(kc.getCurrentUser()?.token).toBe("t")
    expect(kc.getContextObject(kc.getCurrentContext())?.namespace).toBe("streamspace")
  })
})

describe("RBAC", () => {
  it("enforces Role/RoleBinding YAML for a service-account token, with the real 403 message", async () => {
    const { server, api: admin } = await setup({ kubelet: { paused: true } })
    server.loadRbac(agentRole)
    const token = server.addServiceAccount("streamspace", "agent")
    const { api } = clientFor(server.kubeconfigFor(token, { namespace: "streamspace" }))
    await api.createNamespacedPod({ namespace: "streamspace", body: pod("vnc-1") })
    expect((await api.listNamespacedPod({ namespace: "streamspace" })).items).toHaveLength(1)
    const svc = await apiError(api.listNamespacedService({ namespace: "streamspace" }))
    expect(svc.code).toBe(403)
    expect(svc.status).toEqual({
      kind: "Status",
      apiVersion: "v1",
      metadata: {},
      status: "Failure",
      message: "services is forbidden: User \"system:serviceaccount:streamspace:agent\" cannot list resource \"services\" in API group \"\" in the namespace \"streamspace\"",
      reason: "Forbidden",
      details: { kind: "services" },
      code: 403
    })
    // Another namespace: nothing bound there.
    expect((await apiError(api.listNamespacedPod({ namespace: "default" }))).code).toBe(403)
    // 403 comes before 404, with the name in message and details.
    const named = await apiError(api.replaceNamespacedPod({ name: "ghost", namespace: "streamspace", body: pod("ghost") }))
    expect(named.code).toBe(403)
    expect(named.status.message).toBe("pods \"ghost\" is forbidden: User \"system:serviceaccount:streamspace:agent\" cannot update resource \"pods\" in API group \"\" in the namespace \"streamspace\"")
    expect(named.status.details).toEqual({ name: "ghost", kind: "pods" })
    // "pods" does not grant pods/status.
    const status = await apiError(api.readNamespacedPodStatus({ name: "vnc-1", namespace: "streamspace" }))
    expect(status.status.message).toContain("cannot get resource \"pods/status\"")
    // resourceNames: only the named configmap.
    await admin.createNamespacedConfigMap({ namespace: "streamspace", body: { metadata: { name: "agent-state" } } })
    await admin.createNamespacedConfigMap({ namespace: "streamspace", body: { metadata: { name: "other" } } })
    await api.readNamespacedConfigMap({ name: "agent-state", namespace: "streamspace" })
    expect((await apiError(api.readNamespacedConfigMap({ name: "other", namespace: "streamspace" }))).code).toBe(403)
    expect((await apiError(api.listNamespacedConfigMap({ namespace: "streamspace" }))).code).toBe(403)
  })

  it("watch and list are distinct verbs: a forbidden watch fails with HTTP 403 before streaming", async () => {
    const { server } = await setup()
    server.loadRbac(agentRole)
    const token = server.addServiceAccount("streamspace", "agent")
    const { kc } = clientFor(server.kubeconfigFor(token))
    const err = await new Promise<any>((resolve) => {
      void new k8s.Watch(kc).watch("/api/v1/namespaces/streamspace/pods", {}, () => {}, resolve).catch(resolve)
    })
    expect(err.statusCode ?? err.code).toBe(403)
  })

  it("a bare PolicyRule list (the Helm chart's role-rules.yaml) can be loaded and bound to a service account", async () => {
    const { server } = await setup()
    server.loadRbac(`
- apiGroups: [""]
  resources: ["pods", "services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods/portforward"]
  verbs: ["get", "create"]
`, { namespace: "streamspace", roleName: "streamspace-agent", bindServiceAccount: { namespace: "streamspace", name: "agent" } })
    const token = server.addServiceAccount("streamspace", "agent")
    const { api, rbac } = clientFor(server.kubeconfigFor(token))
    expect((await api.listNamespacedService({ namespace: "streamspace" })).items).toEqual([])
    expect((await apiError(api.listNamespacedSecret({ namespace: "streamspace" }))).code).toBe(403)
    // Stored as real RBAC objects, readable by the admin.
    const { rbac: adminRbac } = clientFor(server.kubeconfig)
    const role = await adminRbac.readNamespacedRole({ name: "streamspace-agent", namespace: "streamspace" })
    expect(role.rules).toHaveLength(2)
    const binding = await adminRbac.readNamespacedRoleBinding({ name: "streamspace-agent-agent", namespace: "streamspace" })
    expect(binding.subjects?.[0]).toMatchObject({ kind: "ServiceAccount", name: "agent", namespace: "streamspace" })
    expect((await apiError(rbac.listNamespacedRole({ namespace: "streamspace" }))).code).toBe(403)
  })

  it("ClusterRoleBindings grant across namespaces; wildcards match", async () => {
    const { server } = await setup()
    server.loadRbac(`
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: reader }
rules: [{ apiGroups: ["*"], resources: ["*"], verbs: ["get", "list"] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: reader }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: reader }
subjects: [{ kind: User, name: alice }]
`)
    server.addUser("alice-token", { username: "alice", groups: ["system:authenticated"] })
    const { api } = clientFor(server.kubeconfigFor("alice-token"))
    await api.listNamespacedPod({ namespace: "default" })
    await api.listNamespacedSecret({ namespace: "streamspace" })
    const e = await apiError(api.createNamespacedConfigMap({ namespace: "default", body: { metadata: { name: "x" } } }))
    expect(e.status.message).toBe("configmaps is forbidden: User \"alice\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"default\"")
  })

  it("a PUT or apply that creates also needs create", async () => {
    const { server } = await setup()
    server.loadRbac(`- { apiGroups: [""], resources: ["configmaps"], verbs: ["patch"] }`, { namespace: "default", bindServiceAccount: { namespace: "default", name: "a" } })
    const token = server.addServiceAccount("default", "a")
    const { api } = clientFor(server.kubeconfigFor(token))
    const e = await apiError(api.patchNamespacedConfigMap(
      { name: "new", namespace: "default", fieldManager: "m", body: { apiVersion: "v1", kind: "ConfigMap", metadata: { name: "new" } } },
      k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.ServerSideApply)
    ))
    expect(e.code).toBe(403)
    expect(e.status.message).toContain("cannot create resource \"configmaps\"")
  })

  it("loads the agent Helm chart's role-rules.yaml (comments and all) and enforces it", async () => {
    const file = fileURLToPath(new URL("../../../helm/streamspace-agent/files/role-rules.yaml", import.meta.url))
    const { server } = await setup({ kubelet: { startDelayMs: 0 } })
    const [role] = server.loadRbac(readFileSync(file, "utf8"), { namespace: "streamspace", roleName: "streamspace-agent", bindServiceAccount: { namespace: "streamspace", name: "agent" } })
    expect(role?.kind).toBe("Role")
    expect(role?.rules.length).toBeGreaterThan(0)
    const { api } = clientFor(server.kubeconfigFor(server.addServiceAccount("streamspace", "agent")))
    await api.listNamespacedPod({ namespace: "streamspace" })
    expect((await apiError(api.listNamespacedPod({ namespace: "default" }))).code).toBe(403)
  })
})
