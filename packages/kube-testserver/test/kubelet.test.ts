import { describe, expect, it } from "vitest"
import { apiError, pod, setup } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

// The securityContext an agent sets for Pod Security "restricted".
const restricted = {
  securityContext: { runAsNonRoot: true, runAsUser: 1000, fsGroup: 1000, seccompProfile: { type: "RuntimeDefault" } },
  containers: [{
    name: "vnc",
    image: "streamspace/desktop:1.0",
    ports: [{ containerPort: 5900, name: "vnc" }],
    resources: { requests: { cpu: "250m", memory: "512Mi" }, limits: { memory: "1Gi" } },
    securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] }, readOnlyRootFilesystem: false, runAsNonRoot: true }
  }]
}

describe("simulated kubelet", () => {
  it("takes a restricted pod Pending -> Running with podIP, Ready and container statuses", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 20 } })
    await api.createNamespacedPod({ namespace: "streamspace", body: { metadata: { name: "vnc-1" }, spec: restricted } })
    const phases: Array<string> = []
    server.onChange((_t, r, o) => { if (r === "pods") phases.push(o.status.phase) })
    const running = await waitForPromise("pod vnc-1 Running", async () => {
      const p = await api.readNamespacedPod({ name: "vnc-1", namespace: "streamspace" })
      return p.status?.phase === "Running" ? p : undefined
    })
    expect(running.spec?.nodeName).toBe("node-1")
    expect(running.status?.podIP).toMatch(/^10\.244\.\d+\.\d+$/)
    expect(running.status?.podIPs?.[0]?.ip).toBe(running.status?.podIP)
    expect(running.status?.startTime).toBeInstanceOf(Date)
    expect(running.status?.qosClass).toBe("Burstable")
    const ready = running.status?.conditions?.find((c) => c.type === "Ready")
    expect(ready?.status).toBe("True")
    const cs = running.status?.containerStatuses?.[0]
    expect(cs).toMatchObject({ name: "vnc", image: "streamspace/desktop:1.0", ready: true, started: true, restartCount: 0 })
    expect(cs?.state?.running?.startedAt).toBeInstanceOf(Date)
    expect(cs?.containerID).toMatch(/^containerd:\/\//)
    expect(phases).toContain("Pending")
    // The scheduler and kubelet record Events.
    const events = await api.listNamespacedEvent({ namespace: "streamspace", fieldSelector: "involvedObject.name=vnc-1" })
    expect(events.items.map((e) => e.reason)).toEqual(expect.arrayContaining(["Scheduled", "Started"]))
  })

  it("status.phase field selector finds running pods", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 0 } })
    await api.createNamespacedPod({ namespace: "default", body: pod("a") })
    await waitForPromise("pod a Running", () => server.get("pods", "default", "a")?.status.phase === "Running")
    server.configureKubelet({ paused: true })
    await api.createNamespacedPod({ namespace: "default", body: pod("b") })
    const running = await api.listNamespacedPod({ namespace: "default", fieldSelector: "status.phase=Running" })
    expect(running.items.map((p) => p.metadata?.name)).toEqual(["a"])
    const notRunning = await api.listNamespacedPod({ namespace: "default", fieldSelector: "status.phase!=Running,metadata.namespace=default" })
    expect(notRunning.items.map((p) => p.metadata?.name)).toEqual(["b"])
  })

  it("an image that cannot be pulled leaves the pod Pending with ImagePullBackOff", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10, cannotPull: ["nope/missing:1"] } })
    await api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "p" }, spec: { containers: [{ name: "c", image: "nope/missing:1" }] } } })
    const p = await waitForPromise("pod p in ImagePullBackOff", () => {
      const o = server.get("pods", "default", "p")
      return o?.status.containerStatuses?.[0]?.state?.waiting?.reason === "ImagePullBackOff" ? o : undefined
    })
    expect(p.status.phase).toBe("Pending")
    expect(p.status.conditions.find((c: any) => c.type === "Ready").status).toBe("False")
    const events = await api.listNamespacedEvent({ namespace: "default", fieldSelector: "involvedObject.name=p,type=Warning" })
    expect(events.items.some((e) => e.message?.includes("ImagePullBackOff"))).toBe(true)
  })

  it("a crashing pod shows CrashLoopBackOff and is not Ready", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10, crashPods: ["bad"] } })
    await api.createNamespacedPod({ namespace: "default", body: pod("bad") })
    const p = await waitForPromise("pod bad in CrashLoopBackOff", () => {
      const o = server.get("pods", "default", "bad")
      return o?.status.containerStatuses?.[0]?.state?.waiting?.reason === "CrashLoopBackOff" ? o : undefined
    })
    expect(p.status.phase).toBe("Running")
    expect(p.status.containerStatuses[0].restartCount).toBeGreaterThan(0)
    expect(p.status.containerStatuses[0].lastState.terminated.exitCode).toBe(1)
    expect(p.status.conditions.find((c: any) => c.type === "Ready").status).toBe("False")
  })

  it("binds PVCs (and PVC deletion waits for the pvc-protection finalizer)", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10 } })
    const pvc = await api.createNamespacedPersistentVolumeClaim({
      namespace: "default",
      body: { metadata: { name: "home" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "5Gi" } } } }
    })
    expect(pvc.status?.phase).toBe("Pending")
    expect(pvc.metadata?.finalizers).toEqual(["kubernetes.io/pvc-protection"])
    expect(pvc.spec?.storageClassName).toBe("standard")
    const bound = await waitForPromise("claim home Bound", async () => {
      const c = await api.readNamespacedPersistentVolumeClaim({ name: "home", namespace: "default" })
      return c.status?.phase === "Bound" ? c : undefined
    })
    expect(bound.spec?.volumeName).toBe(`pvc-${pvc.metadata?.uid}`)
    expect(bound.status?.capacity?.storage).toBe("5Gi")
    expect(bound.metadata?.annotations?.["pv.kubernetes.io/bind-completed"]).toBe("yes")
    // A pod uses it: deleting the claim leaves it Terminating until the pod is gone.
    await api.createNamespacedPod({ namespace: "default", body: pod("user", { spec: { volumes: [{ name: "home", persistentVolumeClaim: { claimName: "home" } }] } }) })
    await waitForPromise("pod user Running", () => server.get("pods", "default", "user")?.status.phase === "Running")
    const deleting = await api.deleteNamespacedPersistentVolumeClaim({ name: "home", namespace: "default" })
    expect(deleting.metadata?.deletionTimestamp).toBeInstanceOf(Date)
    await new Promise((r) => setTimeout(r, 30))
    expect(server.get("persistentvolumeclaims", "default", "home")).toBeDefined()
    await api.deleteNamespacedPod({ name: "user", namespace: "default", gracePeriodSeconds: 0 })
    await waitForPromise("claim home gone", () => server.get("persistentvolumeclaims", "default", "home") === undefined)
  })

  it("a pod whose claim is missing is Unschedulable until the claim exists", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10 } })
    await api.createNamespacedPod({ namespace: "default", body: pod("p", { spec: { volumes: [{ name: "home", persistentVolumeClaim: { claimName: "home" } }] } }) })
    const p = await waitForPromise("pod p Unschedulable", () => {
      const o = server.get("pods", "default", "p")
      return o?.status.conditions?.[0]?.reason === "Unschedulable" ? o : undefined
    })
    expect(p.status.conditions[0].message).toBe("persistentvolumeclaim \"home\" not found")
    await api.createNamespacedPersistentVolumeClaim({ namespace: "default", body: { metadata: { name: "home" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } } })
    await waitForPromise("pod p Running", () => server.get("pods", "default", "p")?.status.phase === "Running")
  })

  it("services get a unique clusterIP and defaults; headless stays None", async () => {
    const { api } = await setup()
    const a = await api.createNamespacedService({ namespace: "default", body: { metadata: { name: "a" }, spec: { selector: { app: "vnc" }, ports: [{ port: 5900 }] } } })
    const b = await api.createNamespacedService({ namespace: "default", body: { metadata: { name: "b" }, spec: { ports: [{ port: 5900, targetPort: 5901 }] } } })
    const h = await api.createNamespacedService({ namespace: "default", body: { metadata: { name: "h" }, spec: { clusterIP: "None", ports: [{ port: 1 }] } } })
    expect(a.spec?.clusterIP).toMatch(/^10\.(9[6-9]|10[0-9]|11[01])\.\d+\.\d+$/)
    expect(a.spec?.clusterIPs).toEqual([a.spec?.clusterIP])
    expect(a.spec?.clusterIP).not.toBe(b.spec?.clusterIP)
    expect(a.spec?.type).toBe("ClusterIP")
    expect(a.spec?.ports?.[0]).toMatchObject({ port: 5900, targetPort: 5900, protocol: "TCP" })
    expect(b.spec?.ports?.[0]?.targetPort).toBe(5901)
    expect(h.spec?.clusterIP).toBe("None")
    // clusterIP survives a PUT without it.
    const { clusterIP: _ip, clusterIPs: _ips, ...specNoIp } = a.spec!
    const replaced = await api.replaceNamespacedService({ name: "a", namespace: "default", body: { ...a, spec: { ...specNoIp } } })
    expect(replaced.spec?.clusterIP).toBe(a.spec?.clusterIP)
  })

  it("paused: pods stay Pending and unscheduled, claims Pending; unpausing picks them up", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10, paused: true } })
    await api.createNamespacedPod({ namespace: "default", body: pod("p") })
    await api.createNamespacedPersistentVolumeClaim({ namespace: "default", body: { metadata: { name: "c" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } } })
    await new Promise((r) => setTimeout(r, 40))
    expect(server.get("pods", "default", "p")?.spec.nodeName).toBeUndefined()
    expect(server.get("persistentvolumeclaims", "default", "c")?.status.phase).toBe("Pending")
    server.configureKubelet({ paused: false })
    await waitForPromise("pod p Running", () => server.get("pods", "default", "p")?.status.phase === "Running")
    await waitForPromise("claim c Bound", () => server.get("persistentvolumeclaims", "default", "c")?.status.phase === "Bound")
  })

  it("serves pod logs (text/plain), and 400 while the container is waiting to start", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10, cannotPull: ["bad:1"] } })
    await api.createNamespacedPod({ namespace: "default", body: pod("p") })
    await waitForPromise("pod p Running", () => server.get("pods", "default", "p")?.status.phase === "Running")
    server.setPodLog("default", "p", "line 1\nline 2\nline 3\n")
    expect(await api.readNamespacedPodLog({ name: "p", namespace: "default" })).toBe("line 1\nline 2\nline 3\n")
    expect(await api.readNamespacedPodLog({ name: "p", namespace: "default", container: "vnc", tailLines: 1 })).toBe("line 3\n")
    await api.createNamespacedPod({ namespace: "default", body: { metadata: { name: "q" }, spec: { containers: [{ name: "c", image: "bad:1" }] } } })
    await waitForPromise("pod q in ImagePullBackOff", () => server.get("pods", "default", "q")?.status.containerStatuses?.[0]?.state?.waiting?.reason === "ImagePullBackOff")
    const e = await apiError(api.readNamespacedPodLog({ name: "q", namespace: "default" }))
    expect(e.code).toBe(400)
    expect(e.status.message).toBe("container \"c\" in pod \"q\" is waiting to start: ImagePullBackOff")
  })

  it("a pod created with spec.nodeName skips the scheduler and still runs", async () => {
    const { api, server } = await setup({ kubelet: { startDelayMs: 10 } })
    await api.createNamespacedPod({ namespace: "default", body: pod("pinned", { spec: { nodeName: "node-1" } }) })
    await waitForPromise("pod pinned Running", () => server.get("pods", "default", "pinned")?.status.phase === "Running")
  })
})
