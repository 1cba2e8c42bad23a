// Hibernate and resume against the real API server: the agent (deployed with its chart, so with the chart's RBAC)
// deletes the session's pod and service and keeps the home PVC, which stays Bound to the same volume; resume makes
// a new pod on that same claim, and a viewer reaches the new pod's desktop. kwok runs no containers, so what is
// checked about the home is the claim's identity and binding (uid, volumeName, phase), not files in it.
import { startClusterDesktops, waitForPromise } from "@streamspace/testbed"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let cp: R.ControlPlane
let agent: R.DeployedAgent
let desktops: Awaited<ReturnType<typeof startClusterDesktops>>

beforeAll(async () => {
  cp = await R.startControlPlane("hibernate")
  agent = await R.deployAgentWithChart(cp, "hib")
  desktops = await startClusterDesktops(R.cluster().adminKubeconfig, { namespace: agent.namespace })
  const t = await cp.admin.post("/templates", { name: "home-desktop", image: "streamspace/desktop:1", vnc_port: 5900, persistent_home: true })
  expect(t.status, JSON.stringify(t.body)).toBe(201)
})

afterAll(async () => {
  await desktops?.stop()
  await agent?.stop()
  await cp?.stop()
})

const exists = async (kind: string, name: string) => (await R.kubectl(["-n", agent.namespace, "get", kind, name, "-o", "name"])).code === 0

describe("hibernate and resume on a real API server", () => {
  it("the pod and service go, the home PVC stays bound to the same volume, resume mounts it in a new pod", async () => {
    const client = cp.as("hib-user")
    const created = await client.post("/sessions", { template: "home-desktop" })
    expect(created.status, JSON.stringify(created.body)).toBe(201)
    const id = created.body.id as string
    await R.waitSession(client, id, ["running"])
    const claim = await waitForPromise("the home claim bound", async () => {
      const c = await R.getJson(["-n", agent.namespace, "pvc", "home-hib-user"])
      return c.status?.phase === "Bound" ? c : undefined
    }, { timeout: 60_000 })
    const firstPod = await R.getJson(["-n", agent.namespace, "pod", id])

    const hib = await client.post(`/sessions/${id}/hibernate`)
    expect(hib.status, JSON.stringify(hib.body)).toBe(202)
    await R.waitSession(client, id, ["hibernated"])
    expect(await exists("pod", id)).toBe(false)
    expect(await exists("service", id)).toBe(false)
    const kept = await R.getJson(["-n", agent.namespace, "pvc", "home-hib-user"])
    expect([kept.metadata.uid, kept.spec.volumeName, kept.status.phase]).toEqual([claim.metadata.uid, claim.spec.volumeName, "Bound"])
    expect(kept.metadata.deletionTimestamp).toBeUndefined()
    expect((await client.post(`/sessions/${id}/hibernate`)).status).toBe(409)

    const res = await client.post(`/sessions/${id}/resume`)
    expect(res.status, JSON.stringify(res.body)).toBe(202)
    await R.waitSession(client, id, ["running"])
    const pod = await R.getJson(["-n", agent.namespace, "pod", id])
    expect(pod.metadata.uid).not.toBe(firstPod.metadata.uid)
    expect(pod.spec.volumes.filter((v: any) => v.persistentVolumeClaim).map((v: any) => v.persistentVolumeClaim.claimName)).toEqual(["home-hib-user"])
    const after = await R.getJson(["-n", agent.namespace, "pvc", "home-hib-user"])
    expect([after.metadata.uid, after.spec.volumeName, after.status.phase]).toEqual([claim.metadata.uid, claim.spec.volumeName, "Bound"])

    // The viewer reaches the new pod's desktop.
    await waitForPromise("the resumed pod's desktop", () => desktops.get(agent.namespace, id) !== undefined)
    const viewer = await R.openViewer(cp, client, id)
    try {
      expect(viewer.rfb.name).toBe(id)
    } finally {
      viewer.ws.close()
    }
  })
})
