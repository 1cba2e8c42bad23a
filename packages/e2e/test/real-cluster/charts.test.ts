// `helm install` of the control-plane chart into a real API server (a namespace enforcing Pod Security
// "restricted", its PVC provisioned and bound), the control plane run with the environment its Deployment
// gives the container, an agent installed with its own chart enrolling there; and options that need an API
// the cluster may not serve (the Prometheus Operator's ServiceMonitor).
import { mkdirSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let namespace: string
let cp: R.ControlPlane | undefined
let agent: R.DeployedAgent | undefined

beforeAll(async () => {
  namespace = await R.createNamespace("cp")
  const installed = await R.helm([
    "install", "streamspace", path.join(R.repoRoot, "helm/streamspace-control-plane"), "--namespace", namespace, "--wait", "--timeout", "120s",
    "--set", `jwt.secret=${R.JWT_SECRET}`,
    "--set", `bootstrapToken.value=${R.BOOTSTRAP_TOKEN}`
  ])
  expect(installed.code, installed.stderr).toBe(0)
})

afterAll(async () => {
  await agent?.stop()
  await cp?.stop()
})

describe("the control-plane chart on a real API server", () => {
  it("installs under Pod Security restricted: its pod runs, its data PVC is bound", async () => {
    const pods = await R.getJson(["-n", namespace, "pods", "-l", "app.kubernetes.io/instance=streamspace"])
    expect(pods.items.map((p: any) => p.status.phase)).toEqual(["Running"])
    const pvcs = await R.getJson(["-n", namespace, "pvc"])
    expect(pvcs.items.map((p: any) => p.status.phase)).toEqual(["Bound"])
    expect((await R.getJson(["-n", namespace, "service", "streamspace"])).spec.ports[0].port).toBe(80)
  })

  it("runs with its Deployment's environment, and an agent installed with the agent chart enrols and runs a session", async () => {
    const env = await R.deployedEnv(namespace, "streamspace")
    expect(env.JWT_SECRET).toBe(R.JWT_SECRET)
    const dataDir = path.join(R.tempDir("cp-data-"), "data")
    mkdirSync(dataDir)
    cp = await R.startControlPlane("chart-deployed", { ...env, DATA_DIR: dataDir, DATABASE_IN_MEMORY: "false" })
    agent = await R.deployAgentWithChart(cp, "from-chart")
    const t = await cp.admin.post("/templates", { name: "desktop", image: "streamspace/desktop:1", vnc_port: 5900 })
    expect(t.status).toBe(201)
    const alice = cp.as("alice")
    const s = await alice.post("/sessions", { template: "desktop" })
    await R.waitSession(alice, s.body.id, ["running"])
  })

  it("serviceMonitor.enabled says what to install on a cluster without the Prometheus Operator, and installs once its CRD is there", async () => {
    const ns = await R.createNamespace("monitored")
    const args = (release: string) => [
      "install", release, path.join(R.repoRoot, "helm/streamspace-agent"), "--namespace", ns,
      "--set", "agent.id=monitored", "--set", "agent.controlPlaneUrl=wss://cp.example.com", "--set", "token.value=t",
      "--set", `agent.namespace=${ns}`, "--set", "serviceMonitor.enabled=true"
    ]
    const refused = await R.helm(args("without-crd"))
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/needs the Prometheus Operator's ServiceMonitor CRD \(monitoring\.coreos\.com\/v1\)/)

    await R.kubectlOk(["apply", "-f", "-"], { input: JSON.stringify(serviceMonitorCrd) })
    await R.kubectlOk(["wait", "--for=condition=Established", "crd/servicemonitors.monitoring.coreos.com"])
    const installed = await R.helm(args("with-crd"))
    expect(installed.code, installed.stderr).toBe(0)
    const monitor = await R.getJson(["-n", ns, "servicemonitor", "with-crd"])
    expect(monitor.spec.endpoints[0].port).toBe("metrics")
  })
})

/** The smallest CRD that serves monitoring.coreos.com/v1 ServiceMonitor (the operator's own is much larger). */
const serviceMonitorCrd = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: "servicemonitors.monitoring.coreos.com" },
  spec: {
    group: "monitoring.coreos.com",
    scope: "Namespaced",
    names: { plural: "servicemonitors", singular: "servicemonitor", kind: "ServiceMonitor", listKind: "ServiceMonitorList" },
    versions: [{
      name: "v1",
      served: true,
      storage: true,
      schema: { openAPIV3Schema: { type: "object", "x-kubernetes-preserve-unknown-fields": true } }
    }]
  }
}
