// The agent as deployed, on a real API server: `helm install` of the agent chart, then the agent process with
// the environment the chart's Deployment gives its container and in-cluster credentials of the chart's
// ServiceAccount, so the chart's Role (and nothing else) authorises every call. A session's whole life
// through it: Pod Security "restricted" admission, scheduling, a home PVC provisioned and bound, delete,
// and adoption by a restarted agent.
import { repoRoot, waitForPromise } from "@streamspace/testbed"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let cp: R.ControlPlane
let agent: R.DeployedAgent

beforeAll(async () => {
  cp = await R.startControlPlane("chart")
  agent = await R.deployAgentWithChart(cp, "chart")
  const t = await cp.admin.post("/templates", { name: "desktop", image: "streamspace/desktop:1", persistent_home: true, vnc_port: 5900 })
  expect(t.status, JSON.stringify(t.body)).toBe(201)
})

afterAll(async () => {
  await agent?.stop()
  await cp?.stop()
})

describe("the agent chart on a real API server", () => {
  it("installs: the agent's pod is admitted under its namespace's Pod Security level and runs", async () => {
    const pods = await R.getJson(["-n", agent.agentNamespace, "pods", "-l", "app.kubernetes.io/name=streamspace-agent"])
    expect(pods.items.length).toBe(1)
    expect(pods.items[0].status.phase).toBe("Running")
  })

  it("runs a session's whole life with only the chart's Role", async () => {
    const alice = cp.as("alice")
    const created = await alice.post("/sessions", { template: "desktop" })
    expect(created.status, JSON.stringify(created.body)).toBe(201)
    const id = created.body.id as string
    const running = await R.waitSession(alice, id, ["running"])
    expect(running.agent_id).toBe(agent.id)

    // What the API server holds: a pod admitted under "restricted", scheduled and Running, a Service, a bound home.
    const pod = await R.getJson(["-n", agent.namespace, "pod", id])
    expect(pod.metadata.labels).toMatchObject({ app: "session", agent: agent.id, "streamspace.io/session-id": id })
    expect(pod.spec.nodeName).toMatch(/^node-/)
    expect(pod.status.phase).toBe("Running")
    expect((await R.getJson(["-n", agent.namespace, "service", id])).spec.ports[0].port).toBe(5900)
    const homes = await R.getJson(["-n", agent.namespace, "pvc", "-l", "streamspace.io/home"])
    expect(homes.items.length).toBe(1)
    await waitForPromise("the home PVC bound", async () =>
      (await R.getJson(["-n", agent.namespace, "pvc", homes.items[0].metadata.name])).status.phase === "Bound", { timeout: 30_000 })

    const deleted = await alice.del(`/sessions/${id}`)
    expect([200, 202]).toContain(deleted.status)
    await R.waitSession(alice, id, ["terminated"])
    await waitForPromise("the pod and service gone", async () => {
      const left = await R.kubectl(["-n", agent.namespace, "get", "pod,service", "-l", `streamspace.io/session-id=${id}`, "-o", "name"])
      return left.code === 0 && left.stdout.trim() === ""
    }, { timeout: 60_000 })
    // The home stays: it is the user's, for the next session.
    expect((await R.getJson(["-n", agent.namespace, "pvc", homes.items[0].metadata.name])).status.phase).toBe("Bound")
  })

  it("keeps its credential in the Secret the chart names", async () => {
    const secret = await R.getJson(["-n", agent.namespace, "secret", agent.env.AGENT_CREDENTIAL_SECRET!])
    expect(Object.keys(secret.data)).not.toHaveLength(0)
  })

  it("reads and writes that one Secret only, and a helm upgrade keeps the credential in it", async () => {
    const name = agent.env.AGENT_CREDENTIAL_SECRET!
    const before = (await R.getJson(["-n", agent.namespace, "secret", name])).data
    // The chart's ServiceAccount, asked of the real authorizer.
    const sa = `system:serviceaccount:${agent.agentNamespace}:agent`
    const canI = async (verb: string, what: string) =>
      (await R.kubectl(["auth", "can-i", verb, what, "-n", agent.namespace, "--as", sa])).stdout.trim()
    expect(await canI("get", `secret/${name}`)).toBe("yes")
    expect(await canI("update", `secret/${name}`)).toBe("yes")
    expect(await canI("get", "secret/another-agents-credential")).toBe("no")
    expect(await canI("list", "secrets")).toBe("no")
    const upgraded = await R.helm(["upgrade", "agent", path.join(repoRoot, "helm/streamspace-agent"), "--namespace", agent.agentNamespace, "--reuse-values"])
    expect(upgraded.code, upgraded.stderr).toBe(0)
    const after = await R.getJson(["-n", agent.namespace, "secret", name])
    expect(after.data).toEqual(before)
    expect(after.metadata.labels["app.kubernetes.io/managed-by"]).toBe("Helm")
  })

  it("a restarted agent adopts the session it left running", async () => {
    const bob = cp.as("bob")
    const created = await bob.post("/sessions", { template: "desktop" })
    const id = created.body.id as string
    await R.waitSession(bob, id, ["running"])
    const uid = (await R.getJson(["-n", agent.namespace, "pod", id])).metadata.uid

    await agent.stop()
    await waitForPromise("the agent offline", async () => (await cp.admin.get(`/agents/${agent.id}`)).body.connected === false)
    await agent.start()
    await R.waitOnline(cp, agent.id)
    expect((await R.waitSession(bob, id, ["running"])).agent_id).toBe(agent.id)
    // The same pod, not a new one.
    expect((await R.getJson(["-n", agent.namespace, "pod", id])).metadata.uid).toBe(uid)
    await bob.del(`/sessions/${id}`)
    await R.waitSession(bob, id, ["terminated"])
  })
})
