// The charts' rendered objects created in kube-testserver (strict field validation, over real HTTP):
// the API server validates them, the simulated kubelet runs the Deployments' pods, and the agent's
// rendered Role/RoleBinding are enforced for the agent's ServiceAccount token.
// kube-testserver serves the core kinds and RBAC; Deployments are exercised through the Pod their
// ReplicaSet would create. NetworkPolicy, Ingress and ServiceMonitor are not served (schema-validated
// in the chart tests instead).
import * as k8s from "@kubernetes/client-node"
import { start, type KubeTestServerHandle } from "@streamspace/kube-testserver"
import { waitForPromise } from "@streamspace/testbed"
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
  return { server }
}

const plural: Record<string, string> = {
  Namespace: "namespaces",
  ServiceAccount: "serviceaccounts",
  Secret: "secrets",
  ConfigMap: "configmaps",
  PersistentVolumeClaim: "persistentvolumeclaims",
  Role: "roles",
  RoleBinding: "rolebindings",
  Service: "services",
  Pod: "pods"
}

/** POSTs the object as rendered (no client-side model that would drop unknown fields), with
 *  fieldValidation=Strict so an unknown or misplaced field is a 400, like `kubectl apply --validate=strict`. */
const createStrict = async (server: KubeTestServerHandle, o: K8sObject) => {
  const prefix = o.apiVersion === "v1" ? "/api/v1" : `/apis/${o.apiVersion}`
  const ns = o.kind === "Namespace" ? "" : `/namespaces/${o.metadata.namespace}`
  const res = await fetch(`${server.url}${prefix}${ns}/${plural[o.kind]}?fieldValidation=Strict`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.adminToken}`, "content-type": "application/json" },
    body: JSON.stringify(o)
  })
  if (res.status !== 201) throw new Error(`creating ${o.kind}/${o.metadata.name} failed: ${res.status} ${await res.text()}`)
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

/** Creates every served object (Deployments as their Pod) and returns the kinds left out. */
const createAll = async (server: KubeTestServerHandle, rendered: ReadonlyArray<K8sObject>) => {
  const objects = rendered.flatMap((o) => (o.kind === "Deployment" ? [podOf(o)] : [o]))
  const served = objects.filter((o) => servedKinds.has(o.kind)).sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind))
  for (const o of served) await createStrict(server, o)
  return objects.filter((o) => !servedKinds.has(o.kind)).map((o) => o.kind).sort()
}

const podPhase = (server: KubeTestServerHandle, namespace: string, name: string) =>
  waitForPromise(`pod ${namespace}/${name} Running`, () => server.get("pods", namespace, name)?.status?.phase === "Running")

describe("rendered charts in kube-testserver", () => {
  it("creates the agent chart's objects (defaults) and runs the agent pod", async () => {
    const rendered = parseObjects(await template(agentChart, ["--values", path.join(agentChart, "ci/required-values.yaml"), "--set", "networkPolicy.enabled=true", "--set-string", "token.existingSecret=", "--set", "token.value=bootstrap-token"]))
    const { server } = await cluster(["default", "streamspace"])
    assert.deepStrictEqual(await createAll(server, rendered), ["NetworkPolicy", "NetworkPolicy"])
    const pod = podOf(find(rendered, "Deployment"))
    await podPhase(server, "streamspace", pod.metadata.name)
    assert.isDefined(server.get("services", "streamspace", "streamspace-k8s-agent")?.spec?.clusterIP)
    assert.isDefined(server.get("secrets", "streamspace", "streamspace-k8s-agent-token"))
  })

  it("creates the agent chart's objects with every value set, across the release and sessions namespaces", async () => {
    const rendered = parseObjects(await template(agentChart, [
      "--values", path.join(agentChart, "ci/required-values.yaml"),
      "--set", "agent.namespace=tenant-a", "--set", "namespace.create=true",
      "--set", "serviceMonitor.enabled=true", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--set", "networkPolicy.enabled=true",
      "--set", "agent.session.podTemplate.spec.nodeSelector.workload=streamspace",
      "--set", "agent.controlPlaneCA.configMap=corp-ca"
    ], "eu", "agents"))
    const { server } = await cluster(["default", "agents"])
    assert.deepStrictEqual(await createAll(server, rendered), ["NetworkPolicy", "NetworkPolicy", "ServiceMonitor"])
    assert.strictEqual(server.get("namespaces", "", "tenant-a")?.metadata.labels["pod-security.kubernetes.io/enforce"], "baseline")
    assert.isDefined(server.get("roles", "tenant-a", "eu"))
    assert.isDefined(server.get("configmaps", "agents", "eu-session-template"))
    await podPhase(server, "agents", podOf(find(rendered, "Deployment")).metadata.name)
  })

  it("enforces the rendered Role for the agent's ServiceAccount: exactly what files/role-rules.yaml grants", async () => {
    const rendered = parseObjects(await template(agentChart, ["--values", path.join(agentChart, "ci/required-values.yaml")]))
    const { server } = await cluster(["default", "streamspace"])
    await createAll(server, rendered.filter((o) => o.kind !== "Deployment"))
    const role = find(rendered, "Role")
    const granted = (resource: string, verb: string) =>
      role.rules.some((r: any) => r.apiGroups.includes("") && r.resources.includes(resource) && r.verbs.includes(verb))

    const namespace = "streamspace"
    const clientOf = (token: string) => {
      const kc = new k8s.KubeConfig()
      kc.loadFromString(server.kubeconfigFor(token, { namespace }))
      return kc.makeApiClient(k8s.CoreV1Api)
    }
    const admin = clientOf(server.adminToken)
    const agent = clientOf(server.addServiceAccount(namespace, "streamspace-k8s-agent"))
    const pod = (name: string) => ({ metadata: { name, labels: { app: "session" } }, spec: { containers: [{ name: "desktop", image: "streamspace/session-desktop:0.1.0" }] } })
    const service = (name: string) => ({ metadata: { name }, spec: { selector: { app: "session" }, ports: [{ port: 5900 }] } })
    const pvc = (name: string) => ({ metadata: { name }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "10Gi" } } } })
    const secretName = "streamspace-k8s-agent-credential"
    // Objects the agent's calls act on, made by the admin so that a denial is a 403, not a 404.
    await admin.createNamespacedPod({ namespace, body: pod("existing") })
    await admin.createNamespacedService({ namespace, body: service("existing") })
    await admin.createNamespacedPersistentVolumeClaim({ namespace, body: pvc("existing") })
    // (The credential Secret is the chart's own, created above.)
    assert.isDefined(server.get("secrets", namespace, secretName))

    const calls: Array<[string, string, () => Promise<unknown>]> = [
      ["pods", "get", () => agent.readNamespacedPod({ namespace, name: "existing" })],
      ["pods", "list", () => agent.listNamespacedPod({ namespace })],
      ["pods", "create", () => agent.createNamespacedPod({ namespace, body: pod("by-agent") })],
      ["pods", "patch", () => agent.patchNamespacedPod({ namespace, name: "existing", body: [{ op: "add", path: "/metadata/labels/x", value: "y" }] })],
      ["pods", "delete", () => agent.deleteNamespacedPod({ namespace, name: "existing" })],
      ["services", "get", () => agent.readNamespacedService({ namespace, name: "existing" })],
      ["services", "list", () => agent.listNamespacedService({ namespace })],
      ["services", "create", () => agent.createNamespacedService({ namespace, body: service("by-agent") })],
      ["services", "delete", () => agent.deleteNamespacedService({ namespace, name: "existing" })],
      ["persistentvolumeclaims", "get", () => agent.readNamespacedPersistentVolumeClaim({ namespace, name: "existing" })],
      ["persistentvolumeclaims", "list", () => agent.listNamespacedPersistentVolumeClaim({ namespace })],
      ["persistentvolumeclaims", "create", () => agent.createNamespacedPersistentVolumeClaim({ namespace, body: pvc("by-agent") })],
      ["persistentvolumeclaims", "delete", () => agent.deleteNamespacedPersistentVolumeClaim({ namespace, name: "existing" })],
      ["secrets", "get", () => agent.readNamespacedSecret({ namespace, name: secretName })],
      ["secrets", "list", () => agent.listNamespacedSecret({ namespace })],
      ["secrets", "update", () => agent.replaceNamespacedSecret({ namespace, name: secretName, body: { metadata: { name: secretName }, stringData: { token: "t2" } } })],
      ["secrets", "create", () => agent.createNamespacedSecret({ namespace, body: { metadata: { name: "by-agent" }, stringData: { a: "b" } } })],
      ["configmaps", "list", () => agent.listNamespacedConfigMap({ namespace })],
      ["events", "create", () => agent.createNamespacedEvent({ namespace, body: { metadata: { name: "existing.1" }, involvedObject: { kind: "Pod", name: "existing", namespace }, reason: "Created", message: "session created" } })]
    ]
    const outcome = async (call: () => Promise<unknown>) => call().then(() => "allowed", (e: { code?: number }) => (e.code === 403 ? "forbidden" : `error ${e.code ?? String(e)}`))
    const got: Record<string, string> = {}
    const want: Record<string, string> = {}
    for (const [resource, verb, call] of calls) {
      got[`${verb} ${resource}`] = await outcome(call)
      want[`${verb} ${resource}`] = granted(resource, verb) ? "allowed" : "forbidden"
    }
    assert.deepStrictEqual(got, want)
    // Never outside its namespace, never cluster-scoped.
    assert.strictEqual(await outcome(() => agent.createNamespacedPod({ namespace: "default", body: pod("elsewhere") })), "forbidden")
    assert.strictEqual(await outcome(() => agent.listNamespace()), "forbidden")
  })

  it("loads files/role-rules.yaml as the bare rule list the agent's tests use, equal to the rendered Role", async () => {
    const { server } = await cluster(["default", "streamspace"])
    // The Secret rule names a placeholder that the chart replaces with the credential Secret's name.
    const rules = readFileSync(path.join(agentChart, "files/role-rules.yaml"), "utf8").replace(`["AGENT_CREDENTIAL_SECRET"]`, `["streamspace-k8s-agent-credential"]`)
    const loaded = server.loadRbac(rules, {
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
    const { server } = await cluster(["default", "streamspace"])
    assert.deepStrictEqual(await createAll(server, rendered), ["Ingress"])
    await waitForPromise("PVC Bound", () => server.get("persistentvolumeclaims", "streamspace", "streamspace-data")?.status?.phase === "Bound")
    await podPhase(server, "streamspace", podOf(find(rendered, "Deployment")).metadata.name)
  })
})
