// The plain manifests (helm/manifests, for kubectl apply) are the agent chart's output: a test fails
// when they drift from `helm template`, or when a chart object is missing from them.
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import { mkdtemp, readFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { assert, describe, it } from "vitest"
import { agentChart, find, helmBinary, manifestsDir, parseObjects, template, validateAll } from "./helm.ts"

const files = ["namespace.yaml", "rbac.yaml", "deployment.yaml"] as const

const generate = async (outDir: string) => {
  const helm = await helmBinary()
  await new Promise<void>((resolve, reject) =>
    execFile("bash", [path.join(manifestsDir, "generate.sh"), outDir], {
      env: { ...process.env, PATH: `${path.dirname(helm)}${path.delimiter}${process.env.PATH ?? ""}` }
    }, (err, _stdout, stderr) => (err === null ? resolve() : reject(new Error(`generate.sh failed: ${stderr}`)))))
}

describe("helm/manifests", () => {
  it("are exactly what generate.sh renders from the chart now (regenerate with helm/manifests/generate.sh)", async () => {
    const out = await mkdtemp(path.join(tmpdir(), "manifests-"))
    await generate(out)
    for (const file of files) {
      const fresh = await readFile(path.join(out, file), "utf8")
      const committed = await readFile(path.join(manifestsDir, file), "utf8")
      assert.strictEqual(committed, fresh, `helm/manifests/${file} drifted from the chart: run helm/manifests/generate.sh`)
    }
  })

  it("hold every object of `helm template` with the manifest values, each valid", async () => {
    const fromChart = parseObjects(await template(agentChart, ["--values", path.join(manifestsDir, "values.yaml")]))
    const fromFiles = files.flatMap((f) => parseObjects(readFileSync(path.join(manifestsDir, f), "utf8")))
    const key = (o: { kind: string; metadata: { name: string } }) => `${o.kind}/${o.metadata.name}`
    assert.deepStrictEqual(fromFiles.map(key).sort(), fromChart.map(key).sort())
    for (const o of fromChart) assert.deepStrictEqual(fromFiles.find((f) => key(f) === key(o)), o)
    assert.deepStrictEqual(await validateAll(fromFiles), [])
  })

  it("follow the guide's Option 2: namespace, RBAC, Deployment in namespace streamspace", () => {
    const load = (f: string) => parseObjects(readFileSync(path.join(manifestsDir, f), "utf8"))
    const ns = load("namespace.yaml")
    assert.deepStrictEqual(ns.map((o) => o.kind), ["Namespace"])
    assert.deepInclude(ns[0]!.metadata.labels, {
      "pod-security.kubernetes.io/enforce": "baseline",
      "pod-security.kubernetes.io/audit": "restricted",
      "pod-security.kubernetes.io/warn": "restricted"
    })
    const rbac = load("rbac.yaml")
    assert.deepStrictEqual(rbac.map((o) => `${o.kind}/${o.metadata.name}`), [
      "ServiceAccount/streamspace-k8s-agent",
      "Secret/streamspace-k8s-agent-credential",
      "Role/streamspace-k8s-agent",
      "RoleBinding/streamspace-k8s-agent",
      "NetworkPolicy/streamspace-k8s-agent-sessions"
    ])
    const deployment = load("deployment.yaml")
    assert.deepStrictEqual(deployment.map((o) => o.kind), ["Service", "Deployment"])
    for (const o of [...rbac, ...deployment]) assert.strictEqual(o.metadata.namespace, "streamspace")
    const d = find(deployment, "Deployment")
    assert.deepInclude(d.metadata.labels, { app: "streamspace", component: "k8s-agent" })
    assert.strictEqual(d.spec.template.spec.serviceAccountName, "streamspace-k8s-agent")
    const env = Object.fromEntries(d.spec.template.spec.containers[0].env.map((e: any) => [e.name, e.value ?? e.valueFrom]))
    assert.include(env, { AGENT_ID: "k8s-prod-us-east-1", CONTROL_PLANE_URL: "wss://streamspace.example.com", REGION: "us-east-1", NAMESPACE: "streamspace" })
    assert.deepStrictEqual(env.AGENT_TOKEN, { secretKeyRef: { name: "streamspace-k8s-agent-token", key: "token" } })
  })
})
