// The charts' rendered objects created in kube-testserver through the real @kubernetes/client-node:
// the API server validates them, the simulated kubelet runs the Deployments' pods, and the agent's
// rendered Role/RoleBinding are enforced for the agent's ServiceAccount token.
// kube-testserver serves the core kinds and RBAC; Deployments are exercised through the Pod their
// ReplicaSet would create. NetworkPolicy, Ingress and ServiceMonitor are not served (schema-validated
// in the chart tests instead).
import * as k8s from "@kubernetes/client-node"
import { start, type KubeTestServerHandle } from "@streamspace/kube-testserver"
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { afterEach, assert, describe, it } from "vitest"
import { agentChart, controlPlaneChart, find, type K8sObject, parseObjects, template } from "./helm.ts"

const servedKinds = new Set(["Namespace", "ServiceAccount", "Secret", "ConfigMap", "Role", "RoleBinding", "Service", "PersistentVolumeClaim", "Pod"])
const order = ["Namespace", "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "Role", "RoleBinding", "Service", "Pod"]

const open: Array<KubeTestServerHandle> = []
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

const cluster = async (namespaces: Array<string>) => {
  const server = await start({ namespaces, kubelet: { startDelayMs: 20 } })
  open.push(server)
  const kc = new k8s.KubeConfig()
  kc.loadFromString(server.kubeconfig)
  return { server, kc, objects: k8s.KubernetesObjectApi.makeApiClient(kc) }
}

/** The Pod a Deployment's ReplicaSet would create from its template. */
const podOf = (deployment: K8sObject): K8sObject => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: {
    name: `${deployment.metadata.name}-7d9f8c6b5-x2x4q`,
    namespace: deployment.metadata.namespace!,
    labels: deployment.spec.template.metadata.labels,
    annotations: deployment.spec.template.metadata.annotations ?? {}
  },
  spec: deployment.spec.template.spec
})

const waitFor = async <A>(what: string, check: () => Promise<A | undefined>, ms = 5_000): Promise<A> => {
  const deadline = Date.now() + ms
  for (;;) {
    const a = await check()
    if (a !== undefined) return a
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Creates every served object (Deployments as their Pod) and returns the kinds left out. */
const createAll = async (api: k8s.KubernetesObjectApi, rendered: ReadonlyArray<K8sObject>) => {
  const objects = rendered.flatMap((o) => (o.kind === "Deployment" ? [podOf(o)] : [o]))
  const served = objects.filter((o) => servedKinds.has(o.kind)).sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind))
  for (const o of served) {
    try {
      await api.create(o as k8s.KubernetesObject)
    } catch (err) {
      const body = (err as { body?: unknown }).body
      throw new Error(`creating ${o.kind}/${o.metadata.name} failed: ${typeof body === "string" ? body : String(err)}`)
    }
  }
  return objects.filter((o) => !servedKinds.has(o.kind)).map((o) => o.kind).sort()
}

const podPhase = (server: KubeTestServerHandle, namespace: string, name: string) =>
  waitFor(`pod ${namespace}/${name} Running`, async () => (server.get("pods", namespace, name)?.status?.phase === "Running" ? true : undefined))

describe("rendered charts in kube-testserver", () => {
  it("creates the agent chart's objects (defaults) and runs the agent pod", async () => {
    const rendered = parseObjects(await template(agentChart, ["--values", path.join(agentChart, "ci/required-values.yaml"), "--set", "networkPolicy.enabled=true", "--set-string", "token.existingSecret=", "--set", "token.value=bootstrap-token"]))
    const { server, objects } = await cluster(["default", "streamspace"])
    assert.deepStrictEqual(await createAll(objects, rendered), ["NetworkPolicy"])
    const pod = podOf(find(rendered, "Deployment"))
    await podPhase(server, "streamspace", pod.metadata.name)
    assert.isDefined(server.get("services", "streamspace", "streamspace-k8s-agent")?.spec?.clusterIP)
    assert.isDefined(server.get("secrets", "streamspace", "streamspace-k8s-agent-token"))
  })

  it("creates the agent chart's objects with every value set, across the release and sessions namespaces", async () => {
    const rendered = parseObjects(await template(agentChart, [
      "--values", path.join(agentChart, "ci/required-values.yaml"),
      "--set", "agent.namespace=tenant-a", "--set", "namespace.create=true",
      "--set", "serviceMonitor.enabled=true", "--set", "networkPolicy.enabled=true",
      "--set", "agent.session.podTemplate.spec.nodeSelector.workload=streamspace",
      "--set", "agent.controlPlaneCA.configMap=corp-ca"
    ], "eu", "agents"))
    const { server, objects } = await cluster(["default", "agents"])
    assert.deepStrictEqual(await createAll(objects, rendered), ["NetworkPolicy", "ServiceMonitor"])
    assert.strictEqual(server.get("namespaces", "", "tenant-a")?.metadata.labels["pod-security.kubernetes.io/enforce"], "baseline")
    assert.isDefined(server.get("roles", "tenant-a", "eu"))
    assert.isDefined(server.get("configmaps", "agents", "eu-session-template"))
    await podPhase(server, "agents", podOf(find(rendered, "Deployment")).metadata.name)
  })

  it("enforces the rendered Role for the agent's ServiceAccount: what the agent does is allowed, nothing else", async () => {
    const rendered = parseObjects(await template(agentChart, ["--values", path.join(agentChart, "ci/required-values.yaml")]))
    const { server, objects } = await cluster(["default", "streamspace"])
    await createAll(objects, rendered.filter((o) => o.kind !== "Deployment"))
    const token = server.addServiceAccount("streamspace", "streamspace-k8s-agent")
    const kc = new k8s.KubeConfig()
    kc.loadFromString(server.kubeconfigFor(token, { namespace: "streamspace" }))
    const core = kc.makeApiClient(k8s.CoreV1Api)
    const namespace = "streamspace"
    const status = (p: Promise<unknown>) => p.then(() => 200, (e: { code?: number }) => e.code ?? -1)

    const pod = { metadata: { name: "ss-1", labels: { app: "session" } }, spec: { containers: [{ name: "desktop", image: "streamspace/session-desktop:0.1.0" }] } }
    const allowed = {
      "create pod": await status(core.createNamespacedPod({ namespace, body: pod })),
      "list pods": await status(core.listNamespacedPod({ namespace })),
      "patch pod": await status(core.patchNamespacedPod({ namespace, name: "ss-1", body: [{ op: "add", path: "/metadata/labels/x", value: "y" }] })),
      "create service": await status(core.createNamespacedService({ namespace, body: { metadata: { name: "ss-1" }, spec: { selector: { app: "session" }, ports: [{ port: 5900 }] } } })),
      "list services": await status(core.listNamespacedService({ namespace })),
      "create pvc": await status(core.createNamespacedPersistentVolumeClaim({ namespace, body: { metadata: { name: "home-alice" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "10Gi" } } } } })),
      "create credential secret": await status(core.createNamespacedSecret({ namespace, body: { metadata: { name: "streamspace-k8s-agent-credential" }, stringData: { token: "t" } } })),
      "get credential secret": await status(core.readNamespacedSecret({ namespace, name: "streamspace-k8s-agent-credential" })),
      "create event": await status(core.createNamespacedEvent({ namespace, body: { metadata: { name: "ss-1.1" }, involvedObject: { kind: "Pod", name: "ss-1", namespace }, reason: "Created", message: "session created" } })),
      "delete service": await status(core.deleteNamespacedService({ namespace, name: "ss-1" })),
      "delete pod": await status(core.deleteNamespacedPod({ namespace, name: "ss-1" }))
    }
    assert.deepStrictEqual(Object.entries(allowed).filter(([, s]) => s !== 200 && s !== 201), [])

    const forbidden = {
      "list secrets": await status(core.listNamespacedSecret({ namespace })),
      "delete pvc": await status(core.deleteNamespacedPersistentVolumeClaim({ namespace, name: "home-alice" })),
      "read configmaps": await status(core.listNamespacedConfigMap({ namespace })),
      "create pod in another namespace": await status(core.createNamespacedPod({ namespace: "default", body: pod })),
      "list namespaces": await status(core.listNamespace())
    }
    assert.deepStrictEqual(forbidden, { "list secrets": 403, "delete pvc": 403, "read configmaps": 403, "create pod in another namespace": 403, "list namespaces": 403 })
  })

  it("loads files/role-rules.yaml as the bare rule list the agent's tests use, equal to the rendered Role", async () => {
    const { server } = await cluster(["default", "streamspace"])
    const loaded = server.loadRbac(readFileSync(path.join(agentChart, "files/role-rules.yaml"), "utf8"), {
      namespace: "streamspace",
      roleName: "streamspace-k8s-agent",
      bindServiceAccount: { namespace: "streamspace", name: "streamspace-k8s-agent" }
    })
    assert.deepStrictEqual(loaded.map((o) => o.kind), ["Role", "RoleBinding"])
    const rendered = find(parseObjects(await template(agentChart, ["--values", path.join(agentChart, "ci/required-values.yaml")])), "Role")
    assert.deepStrictEqual(loaded[0]!.rules, rendered.rules)
  })

  it("creates the control-plane chart's objects and runs its pod (embedded database on the PVC)", async () => {
    const rendered = parseObjects(await template(controlPlaneChart, ["--set", "ingress.enabled=true"], "streamspace", "streamspace"))
    const { server, objects } = await cluster(["default", "streamspace"])
    assert.deepStrictEqual(await createAll(objects, rendered), ["Ingress"])
    await waitFor("PVC Bound", async () => (server.get("persistentvolumeclaims", "streamspace", "streamspace-data")?.status?.phase === "Bound" ? true : undefined))
    await podPhase(server, "streamspace", podOf(find(rendered, "Deployment")).metadata.name)
  })
})
