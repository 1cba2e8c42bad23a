// The plain manifests (helm/manifests/) applied with kubectl exactly as helm/README.md §3 says, the agent run
// as their Deployment configures it, and the guide's verification and troubleshooting commands (§6, §7)
// giving what the guide says they give. This file owns the guide's namespace, `streamspace`.
import { waitForPromise } from "@streamspace/testbed"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

const NS = "streamspace"
const AGENT_ID = "k8s-prod-us-east-1"
const SA = `system:serviceaccount:${NS}:streamspace-k8s-agent`
const manifest = (f: string) => path.join(R.repoRoot, "helm/manifests", f)

let cp: R.ControlPlane
let agent: R.AgentProcess

beforeAll(async () => {
  cp = await R.startControlPlane("manifests")
  await R.kubectlOk(["apply", "-f", manifest("namespace.yaml")])
  await R.kubectlOk(["create", "secret", "generic", "streamspace-k8s-agent-token", "-n", NS, `--from-literal=token=${R.BOOTSTRAP_TOKEN}`])
  await R.kubectlOk(["apply", "-f", manifest("rbac.yaml")])
  await R.kubectlOk(["apply", "-f", manifest("deployment.yaml")])
  await R.kubectlOk(["rollout", "status", "deployment/streamspace-k8s-agent", "-n", NS, "--timeout=120s"])
  const env = await R.deployedEnv(NS, "streamspace-k8s-agent")
  const saDir = R.serviceAccountDir(R.tempDir("manifests-sa-"), await R.serviceAccountToken(NS, "streamspace-k8s-agent"), NS)
  // The manifests point at the guide's example control plane; this one is ours.
  agent = await R.startAgentProcess(AGENT_ID, { ...env, ...R.inClusterEnv(saDir), CONTROL_PLANE_URL: cp.wsUrl })
  await R.approveAndWait(cp, AGENT_ID)
  const t = await cp.admin.post("/templates", { name: "desktop", image: "streamspace/desktop:1", vnc_port: 5900 })
  expect(t.status).toBe(201)
})

afterAll(async () => {
  await agent?.stop()
  await cp?.stop()
})

describe("the plain manifests and the guide's commands", () => {
  it("§6: the agent pod runs; /health and /ready answer as documented", async () => {
    const pods = await R.getJson(["pods", "-n", NS, "-l", "app=streamspace,component=k8s-agent"])
    expect(pods.items.map((p: any) => p.status.phase)).toEqual(["Running"])
    const health = await (await fetch(`${agent.healthUrl}/health`)).json()
    expect(health).toMatchObject({ status: "healthy", agent_id: AGENT_ID })
    expect(typeof health.uptime).toBe("string")
    const ready = await (await fetch(`${agent.healthUrl}/ready`)).json()
    expect(ready).toMatchObject({ status: "ready", control_plane_connected: true })
  })

  it("§6: kubectl auth can-i says yes to port-forward and no to listing secrets", async () => {
    const canI = (verb: string, resource: string) => R.kubectl(["auth", "can-i", verb, resource, "-n", NS, `--as=${SA}`])
    const pf = await canI("create", "pods/portforward")
    expect(pf.stdout.trim()).toBe("yes")
    const secrets = await canI("list", "secrets")
    expect(secrets.stdout.trim()).toBe("no")
    expect(secrets.code).toBe(1)
  })

  it("§5 and §7: sessions are found by the labels app=session and agent=<id>", async () => {
    const alice = cp.as("alice")
    const s = await alice.post("/sessions", { template: "desktop" })
    await R.waitSession(alice, s.body.id, ["running"])
    const byApp = await R.getJson(["pods", "-n", NS, "-l", "app=session"])
    const byAgent = await R.getJson(["pods", "-n", NS, "-l", `agent=${AGENT_ID}`])
    expect(byApp.items.map((p: any) => p.metadata.name)).toEqual([s.body.id])
    expect(byAgent.items.map((p: any) => p.metadata.name)).toEqual([s.body.id])
    // §5 force drain: delete the agent's sessions by label; the control plane hears of it from the agent.
    await R.kubectlOk(["delete", "pods,services", "-n", NS, "-l", `agent=${AGENT_ID}`, "--wait=false"])
    await waitForPromise("the session ended", async () => (await alice.get(`/sessions/${s.body.id}`)).body.state === "terminated", { timeout: 60_000 })
  })

  it("§7: a session image that cannot be pulled shows in the session and in its pod's status", async () => {
    const t = await cp.admin.post("/templates", { name: "typo", image: "registry.invalid/desktop:1", vnc_port: 5900 })
    expect(t.status).toBe(201)
    const bob = cp.as("bob")
    const s = await bob.post("/sessions", { template: "typo" })
    const failed = await R.waitSession(bob, s.body.id, ["failed"])
    expect(failed.reason).toBe("ErrImagePull")
    const pod = await R.getJson(["pod", "-n", NS, s.body.id])
    expect(pod.status.containerStatuses[0].state.waiting.reason).toBe("ErrImagePull")
  })
})
