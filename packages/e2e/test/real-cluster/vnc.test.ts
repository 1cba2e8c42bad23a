// The whole VNC path as a cluster has it: viewer -> control plane -> agent -> the real API server's
// port-forward (SPDY/WebSocket to the kubelet) -> kwok -> the pod's desktop. Each session pod has a desktop of
// its own (ClusterDesktops), so a test can tell that frames come from, and input goes to, the right one.
import { startClusterDesktops, waitForPromise } from "@streamspace/testbed"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let cp: R.ControlPlane
let agent: R.DeployedAgent
let desktops: Awaited<ReturnType<typeof startClusterDesktops>>

beforeAll(async () => {
  cp = await R.startControlPlane("vnc")
  agent = await R.deployAgentWithChart(cp, "vnc")
  desktops = await startClusterDesktops(R.cluster().adminKubeconfig, { namespace: agent.namespace })
  const t = await cp.admin.post("/templates", { name: "desktop", image: "streamspace/desktop:1", vnc_port: 5900 })
  expect(t.status).toBe(201)
})

afterAll(async () => {
  await desktops?.stop()
  await agent?.stop()
  await cp?.stop()
})

const runningSession = async (user: string) => {
  const client = cp.as(user)
  const r = await client.post("/sessions", { template: "desktop" })
  expect(r.status, JSON.stringify(r.body)).toBe(201)
  await R.waitSession(client, r.body.id, ["running"])
  await waitForPromise("the pod's desktop", () => desktops.get(agent.namespace, r.body.id) !== undefined)
  return { client, id: r.body.id as string }
}

describe("VNC through the real API server's port-forward", () => {
  it("several viewers on several pods at once: each sees its own desktop, and input reaches only it", async () => {
    const sessions = await Promise.all(["ann", "ben", "cat"].map(runningSession))
    const viewers = await Promise.all(sessions.map(({ client, id }) => R.openViewer(cp, client, id)))
    try {
      // The desktop's name is its pod's name: ServerInit came from the right pod.
      expect(viewers.map((v) => v.rfb.name)).toEqual(sessions.map((s) => s.id))
      // Frames: a full update of the whole screen, then incremental ones as the clock ticks.
      await Promise.all(viewers.map(async (v) => {
        const full = await v.rfb.update(false)
        expect(full.rects.reduce((n, r) => n + r.w * r.h, 0)).toBeGreaterThanOrEqual(v.rfb.width * v.rfb.height)
        await v.rfb.update(true)
      }))
      // Input: each viewer types its own text, and each desktop saw only its viewer's.
      viewers.forEach((v, i) => v.rfb.type(`hello-${i}`))
      await Promise.all(sessions.map(({ id }, i) =>
        waitForPromise(`desktop ${i} to see its typing`, () => desktops.get(agent.namespace, id)!.state().typedText === `hello-${i}`)))
    } finally {
      for (const v of viewers) v.ws.close()
    }
  })

  it("a viewer that goes away releases its tunnel on the agent", async () => {
    const { client, id } = await runningSession("dan")
    const viewer = await R.openViewer(cp, client, id)
    await viewer.rfb.update(false)
    const tunnels = async () => {
      const text = await (await fetch(agent.process().metricsUrl)).text()
      return Number(/^streamspace_agent_vnc_tunnels_active(?:\{[^}]*\})? (\d+)/m.exec(text)?.[1] ?? "NaN")
    }
    expect(await tunnels()).toBeGreaterThanOrEqual(1)
    const before = await tunnels()
    viewer.ws.close()
    await waitForPromise("the tunnel closed on the agent", async () => (await tunnels()) === before - 1, { timeout: 10_000 })
  })
})
