// Real watch semantics, on a cluster of this file's own (its API server is stopped and started): the agent's
// pod watch survives API server restarts, and when etcd has been compacted past the agent's resourceVersion
// (410 Gone) it lists again and loses no transition, even one that no watch event ever carried.
import { type RealClusterShape, startRealCluster, waitForPromise } from "@streamspace/testbed"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let kube: RealClusterShape
let cp: R.ControlPlane
let agent: R.DeployedAgent

beforeAll(async () => {
  kube = await startRealCluster()
  R.useCluster(kube)
  cp = await R.startControlPlane("watch")
  agent = await R.deployAgentWithChart(cp, "watch", { values: ["agent.heartbeatInterval=2s"] })
  const t = await cp.admin.post("/templates", { name: "desktop", image: "streamspace/desktop:1", vnc_port: 5900 })
  expect(t.status).toBe(201)
})

afterAll(async () => {
  await agent?.stop()
  await cp?.stop()
  await kube?.stop()
})

const runningSession = async (user: string) => {
  const client = cp.as(user)
  const r = await client.post("/sessions", { template: "desktop" })
  expect(r.status, JSON.stringify(r.body)).toBe(201)
  await R.waitSession(client, r.body.id, ["running"])
  return { client, id: r.body.id as string }
}

describe("the agent's watch against a real API server", () => {
  it("carries on through an API server restart: later changes are seen", async () => {
    const a = await runningSession("restart-a")
    await kube.restartApiServer()
    // A change made after the restart reaches the agent through its new watch.
    await R.kubectlOk(["-n", agent.namespace, "delete", "pod", a.id, "--wait=false"])
    const gone = await R.waitSession(a.client, a.id, ["terminated", "failed"])
    expect(gone.state).toBe("terminated")
    // And the agent still takes work.
    await runningSession("restart-b")
  })

  it("relists after etcd was compacted past its resourceVersion (410 Gone), and misses nothing that changed meanwhile", async () => {
    const kept = await runningSession("kept")
    const vanished = await runningSession("vanished")
    await kube.stopApiServer()
    // While the API server is down: a pod disappears (no watch will ever carry its DELETED event), and
    // etcd forgets every revision the agent knows.
    await kube.deleteFromEtcd(`/registry/pods/${agent.namespace}/${vanished.id}`)
    await kube.compactEtcd()
    await kube.startApiServer()

    const lost = await R.waitSession(vanished.client, vanished.id, ["terminated", "failed"], 90_000)
    expect(lost.state).toBe("terminated")
    expect((await kept.client.get(`/sessions/${kept.id}`)).body.state).toBe("running")
    // The agent said it relisted because its watch had expired.
    await waitForPromise("the relist in the agent's log", () => /resourceVersion.*(expired|too old)|relist/i.test(agent.process().proc.tail(200)))
    // Sessions still come and go.
    const after = await runningSession("after-compaction")
    await after.client.del(`/sessions/${after.id}`)
    await R.waitSession(after.client, after.id, ["terminated"])
  })
})
