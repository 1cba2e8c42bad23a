// Session states only a real control plane produces: the scheduler placing pods by node selectors and
// tolerations (from SESSION_POD_TEMPLATE) or saying why it cannot, Pod Security admission refusing a pod,
// ResourceQuota capping capacity and refusing a create, and kubelet failures (image pull, crash loop) from
// kwok's stages. One control plane; one agent per configuration, each in a region of its own.
import { waitForPromise } from "@streamspace/testbed"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let cp: R.ControlPlane
const agents: Array<R.DeployedAgent> = []
let gpu: R.DeployedAgent
let nowhere: R.DeployedAgent
let privileged: R.DeployedAgent
let quota: R.DeployedAgent

const podTemplate = (spec: object) => ({ apiVersion: "v1", kind: "Pod", spec })

beforeAll(async () => {
  cp = await R.startControlPlane("sessions")
  const deploy = async (id: string, valuesFile: object = {}) => {
    const a = await R.deployAgentWithChart(cp, id, { values: [`agent.region=${id}`], valuesFile })
    agents.push(a)
    return a
  }
  ;[gpu, nowhere, privileged] = await Promise.all([
    deploy("gpu", {
      agent: {
        session: {
          podTemplate: podTemplate({
            nodeSelector: { "streamspace.test/gpu": "true" },
            tolerations: [{ key: "streamspace.test/gpu", operator: "Equal", value: "true", effect: "NoSchedule" }]
          })
        }
      }
    }),
    deploy("nowhere", { agent: { session: { podTemplate: podTemplate({ nodeSelector: { "topology.kubernetes.io/zone": "zone-z" } }) } } }),
    deploy("privileged", { agent: { session: { podTemplate: podTemplate({ hostNetwork: true }) } } })
  ])
  quota = await R.deployAgentWithChart(cp, "quota", { values: ["agent.region=quota", "agent.heartbeatInterval=3s"] })
  agents.push(quota)
  for (const [name, image] of [["desktop", "streamspace/desktop:1"], ["typo", "registry.invalid/streamspace/desktop:1"], ["crashing", "crashloop.invalid/desktop:1"]]) {
    const t = await cp.admin.post("/templates", { name, image, vnc_port: 5900, resources: { cpu: "1", memory: "1Gi" } })
    expect(t.status, JSON.stringify(t.body)).toBe(201)
  }
})

afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop()))
  await cp?.stop()
})

const create = async (user: string, region: string, template = "desktop") => {
  const client = cp.as(user)
  const r = await client.post("/sessions", { template, region })
  expect(r.status, JSON.stringify(r.body)).toBe(201)
  expect(r.body.agent_id).toBe(region)
  return { client, id: r.body.id as string }
}

describe("sessions on a real control plane", () => {
  it("a pod template's node selector and toleration put the session on the tainted GPU node", async () => {
    const { client, id } = await create("gpu-user", "gpu")
    await R.waitSession(client, id, ["running"])
    expect((await R.getJson(["-n", gpu.namespace, "pod", id])).spec.nodeName).toBe("node-gpu")
  })

  it("a session pod as the real API server stores it: fsGroup 1000 with OnRootMismatch (a fresh home volume is writable by uid 1000) and an ephemeral-storage limit, admitted under Pod Security restricted", async () => {
    const { client, id } = await create("fsgroup-user", "gpu")
    await R.waitSession(client, id, ["running"])
    const ns = await R.getJson(["namespace", gpu.namespace])
    expect(ns.metadata.labels["pod-security.kubernetes.io/enforce"]).toBe("restricted")
    const pod = await R.getJson(["-n", gpu.namespace, "pod", id])
    expect(pod.spec.securityContext).toMatchObject({ fsGroup: 1000, fsGroupChangePolicy: "OnRootMismatch", runAsNonRoot: true })
    const session = pod.spec.containers.find((c: { name: string }) => c.name === "session")
    expect(session.resources.limits["ephemeral-storage"]).toBe("10Gi")
    expect(session.resources.requests["ephemeral-storage"]).toBe("0")
  })

  it("an unschedulable pod is reported with reason Unschedulable and the scheduler's message", async () => {
    const { client, id } = await create("nowhere-user", "nowhere")
    const pending = await waitForPromise("the scheduler's verdict", async () => {
      const s = (await client.get(`/sessions/${id}`)).body
      return s.reason === "Unschedulable" ? s : undefined
    }, { timeout: 60_000 })
    // Placed on its agent and being created there; the pod waits for a node.
    expect(pending.state).toBe("creating")
    expect(pending.message).toMatch(/0\/3 nodes are available/)
    expect(pending.message).toMatch(/didn't match Pod's node affinity\/selector/)
    expect((await R.getJson(["-n", nowhere.namespace, "pod", id])).status.phase).toBe("Pending")
  })

  it("a pod that violates the namespace's Pod Security level fails the session with the API server's refusal", async () => {
    const { client, id } = await create("privileged-user", "privileged")
    const failed = await R.waitSession(client, id, ["failed"])
    expect(failed.message).toMatch(/violates PodSecurity "restricted:latest": host namespaces \(hostNetwork=true\)/)
    const left = await R.kubectl(["-n", privileged.namespace, "get", "pod,service", "-l", `streamspace.io/session-id=${id}`, "-o", "name"])
    expect(left.stdout.trim()).toBe("")
  })

  it("an image that cannot be pulled fails the session with ErrImagePull", async () => {
    const { client, id } = await create("typo-user", "gpu", "typo")
    const failed = await R.waitSession(client, id, ["failed"])
    expect(failed.reason).toBe("ErrImagePull")
    expect(failed.message).toMatch(/registry\.invalid/)
  })

  it("a container that keeps crashing fails the session with CrashLoopBackOff", async () => {
    const { client, id } = await create("crash-user", "gpu", "crashing")
    const failed = await R.waitSession(client, id, ["failed"])
    expect(failed.reason).toBe("CrashLoopBackOff")
  })

  it("capacity comes from the namespace's ResourceQuota, and a create the quota refuses is capacity_exceeded", async () => {
    await R.kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "ResourceQuota",
        metadata: { name: "sessions", namespace: quota.namespace },
        spec: { hard: { "requests.cpu": "2", "requests.memory": "4Gi", "limits.memory": "4Gi", pods: "5" } }
      })
    })
    const capacity = await waitForPromise("the quota in the heartbeat", async () => {
      const a = (await cp.admin.get(`/agents/${quota.id}`)).body
      return a.capacity?.cpu === "2000m" ? a.capacity : undefined
    }, { timeout: 90_000 })
    expect(capacity).toMatchObject({ cpu: "2000m", memory: "4Gi", max_sessions: 5 })

    // Someone else's pod takes 1.5 of the 2 CPUs: placement (which counts only sessions) lets the create
    // through, and the API server's quota admission refuses the pod.
    await R.kubectlOk(["apply", "-f", "-"], {
      input: JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name: "someone-else", namespace: quota.namespace },
        spec: {
          securityContext: { runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } },
          containers: [{
            name: "c",
            image: "busybox",
            resources: { requests: { cpu: "1500m", memory: "1Gi" }, limits: { cpu: "1500m", memory: "1Gi" } },
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } }
          }]
        }
      })
    })
    const { client, id } = await create("quota-user", "quota")
    const failed = await R.waitSession(client, id, ["failed"])
    expect(failed.reason, failed.message).toBe("capacity_exceeded")
    expect(failed.message).toMatch(/exceeded quota: sessions/)
  })
})
