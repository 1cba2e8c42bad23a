// The simulated cluster behind the API: scheduler + kubelet for pods (Pending -> Running, image pull
// failures, crash loops, graceful termination), the PV binder and pvc-protection controller for claims,
// and the namespace controller. Every step is one write, so watchers see each transition.
import { randomUUID } from "node:crypto"
import { generateSuffix, nowRfc3339, type Registry } from "./registry.ts"
import { byResource } from "./resources.ts"
import type { Obj, StoreEvent } from "./store.ts"
import type { Timers } from "./timers.ts"

export interface KubeletOptions {
  /** Time from pod creation to Running (or to its failure state). Default 100 ms. */
  readonly startDelayMs?: number
  /** Images that fail to pull: the pod stays Pending with ImagePullBackOff. */
  readonly cannotPull?: ReadonlyArray<string>
  /** Images whose containers crash: the pod runs with CrashLoopBackOff and Ready=False. */
  readonly crashImages?: ReadonlyArray<string>
  /** Pod names whose containers crash. */
  readonly crashPods?: ReadonlyArray<string>
  /** Time from a graceful delete to the pod being gone (capped by the grace period). Default: startDelayMs. */
  readonly terminationDelayMs?: number
  /** Time from PVC creation to Bound. Default: startDelayMs. */
  readonly pvcBindDelayMs?: number
  readonly nodeName?: string
  /** Pause the scheduler, kubelet and binder: new pods stay Pending and unscheduled, PVCs Pending.
   *  Unpausing picks up everything that waited. */
  readonly paused?: boolean
}

const pods = byResource.get("/pods")!
const pvcs = byResource.get("/persistentvolumeclaims")!
const events = byResource.get("/events")!
const namespaces = byResource.get("/namespaces")!
const serviceAccounts = byResource.get("/serviceaccounts")!
const protection = "kubernetes.io/pvc-protection"

export class Kubelet {
  private readonly registry: Registry
  private options: KubeletOptions
  private readonly timers: Timers
  /** Cancels of the steps not yet run. */
  private readonly pending = new Set<() => void>()
  private nextIp = 10
  private readonly unsubscribe: () => void
  private closed = false

  constructor(registry: Registry, options: KubeletOptions, timers: Timers) {
    this.registry = registry
    this.options = options
    this.timers = timers
    this.unsubscribe = registry.store.subscribe((ev) => this.onEvent(ev))
  }

  configure(options: KubeletOptions) {
    const wasPaused = this.options.paused === true
    this.options = { ...this.options, ...options }
    if (wasPaused && this.options.paused !== true) this.resume()
  }

  /** Re-drives the objects that arrived or stalled while paused. */
  private resume() {
    for (const p of this.registry.store.list(pods)) {
      const { namespace: ns, name, uid } = p.metadata
      if (p.metadata.deletionTimestamp !== undefined) {
        this.later(0, () => {
          const cur = this.registry.store.get(pods, ns, name)
          if (cur !== undefined && cur.metadata.uid === uid) this.registry.removeNow(pods, cur)
        })
      } else if (!p.spec?.nodeName) this.later(0, () => this.schedule(ns, name, uid))
      else if (p.status?.containerStatuses === undefined) this.later(0, () => this.startSandbox(ns, name, uid))
      else if (p.status.containerStatuses.some((c: Obj) => c.state?.waiting?.reason === "ContainerCreating")) this.later(0, () => this.run(ns, name, uid))
    }
    for (const c of this.registry.store.list(pvcs)) {
      if (c.status?.phase !== "Bound") this.later(this.options.pvcBindDelayMs ?? this.startDelay, () => this.bind(c.metadata.namespace, c.metadata.name, c.metadata.uid))
    }
    for (const ns of this.registry.store.list(namespaces)) this.later(0, () => this.releaseClaims(ns.metadata.name))
  }

  get settings(): KubeletOptions {
    return this.options
  }

  close() {
    this.closed = true
    this.unsubscribe()
    for (const cancel of this.pending) cancel()
    this.pending.clear()
  }

  private get startDelay() {
    return this.options.startDelayMs ?? 100
  }

  private later(ms: number, f: () => void, evenIfPaused = false) {
    const cancel = this.timers.after(ms, () => {
      this.pending.delete(cancel)
      if (this.closed || (this.options.paused === true && !evenIfPaused)) return
      try {
        f()
      } catch (e) {
        // The object changed under us (deleted, conflict); the next event re-drives it.
        if (!(e instanceof Error && "status" in e)) console.error("kube-testserver kubelet:", e)
      }
    })
    this.pending.add(cancel)
  }

  private onEvent(ev: StoreEvent) {
    const kind = ev.info.kind
    if (kind === "Pod") this.onPod(ev)
    else if (kind === "PersistentVolumeClaim") this.onPvc(ev)
    else if (kind === "Namespace") this.onNamespace(ev)
  }

  /** Re-reads the pod and applies `f` if it is still the same, live object. */
  private withPod(ns: string, name: string, uid: string, f: (pod: Obj) => Obj | undefined) {
    const cur = this.registry.store.get(pods, ns, name)
    if (cur === undefined || cur.metadata.uid !== uid || cur.metadata.deletionTimestamp !== undefined) return
    const copy = structuredClone(cur)
    copy.status ??= {}
    copy.status.conditions ??= []
    const next = f(copy)
    if (next !== undefined) this.registry.update(pods, ns, name, next, "", { internal: true })
  }

  private recordEvent(obj: Obj, type: "Normal" | "Warning", reason: string, message: string, component = "kubelet") {
    const ns = obj.metadata.namespace
    const now = nowRfc3339()
    this.registry.create(events, ns, {
      metadata: { name: `${obj.metadata.name}.${generateSuffix(8)}`, namespace: ns },
      involvedObject: { kind: obj.kind, namespace: ns, name: obj.metadata.name, uid: obj.metadata.uid, apiVersion: "v1", resourceVersion: obj.metadata.resourceVersion },
      reason,
      message,
      source: { component, host: component === "kubelet" ? this.nodeName : undefined },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      type,
      reportingComponent: component,
      reportingInstance: component === "kubelet" ? this.nodeName : ""
    }, { internal: true })
  }

  private get nodeName() {
    return this.options.nodeName ?? "node-1"
  }

  private onPod(ev: StoreEvent) {
    const pod = ev.obj
    const { namespace: ns, name, uid } = pod.metadata
    if (ev.type === "ADDED" && !pod.spec?.nodeName) {
      this.later(0, () => this.schedule(ns, name, uid))
    } else if (ev.type === "ADDED" && pod.status?.containerStatuses === undefined) {
      // Created with spec.nodeName set: the scheduler is bypassed, the kubelet starts it.
      this.later(this.startDelay / 2, () => this.startSandbox(ns, name, uid))
    } else if (ev.type === "MODIFIED" && pod.metadata.deletionTimestamp !== undefined &&
      (ev.prev?.metadata.deletionTimestamp === undefined || ev.prev.metadata.deletionGracePeriodSeconds !== pod.metadata.deletionGracePeriodSeconds)) {
      const graceMs = (pod.metadata.deletionGracePeriodSeconds ?? 0) * 1000
      const delay = Math.min(graceMs, this.options.terminationDelayMs ?? this.startDelay)
      this.later(delay, () => {
        const cur = this.registry.store.get(pods, ns, name)
        if (cur !== undefined && cur.metadata.uid === uid) this.registry.removeNow(pods, cur)
      })
    } else if (ev.type === "DELETED") {
      this.releaseClaims(ns)
    }
  }

  private claimsOf(pod: Obj): Array<string> {
    return (pod.spec?.volumes ?? []).flatMap((v: Obj) => (v.persistentVolumeClaim?.claimName ? [v.persistentVolumeClaim.claimName as string] : []))
  }

  private schedule(ns: string, name: string, uid: string) {
    const cur = this.registry.store.get(pods, ns, name)
    if (cur === undefined || cur.metadata.uid !== uid || cur.spec.nodeName) return
    const missing = this.claimsOf(cur).find((c) => {
      const pvc = this.registry.store.get(pvcs, ns, c)
      return pvc === undefined || pvc.metadata.deletionTimestamp !== undefined
    })
    const now = nowRfc3339()
    if (missing !== undefined) {
      this.withPod(ns, name, uid, (p) => {
        p.status.conditions = [{ type: "PodScheduled", status: "False", lastProbeTime: null, lastTransitionTime: now, reason: "Unschedulable", message: `persistentvolumeclaim "${missing}" not found` }]
        return p
      })
      return
    }
    this.withPod(ns, name, uid, (p) => {
      p.spec.nodeName = this.nodeName
      p.status.conditions = [{ type: "PodScheduled", status: "True", lastProbeTime: null, lastTransitionTime: now }]
      return p
    })
    const scheduled = this.registry.store.get(pods, ns, name)
    if (scheduled !== undefined) this.recordEvent(scheduled, "Normal", "Scheduled", `Successfully assigned ${ns}/${name} to ${this.nodeName}`, "default-scheduler")
    this.later(this.startDelay / 2, () => this.startSandbox(ns, name, uid))
  }

  private startSandbox(ns: string, name: string, uid: string) {
    const ip = `10.244.0.${this.nextIp++ % 250 + 2}`
    const now = nowRfc3339()
    this.withPod(ns, name, uid, (p) => {
      p.status.hostIP = "172.18.0.2"
      p.status.hostIPs = [{ ip: "172.18.0.2" }]
      p.status.podIP = ip
      p.status.podIPs = [{ ip }]
      p.status.startTime = now
      p.status.conditions = [
        { type: "PodReadyToStartContainers", status: "True", lastProbeTime: null, lastTransitionTime: now },
        { type: "Initialized", status: "True", lastProbeTime: null, lastTransitionTime: now },
        { type: "Ready", status: "False", lastProbeTime: null, lastTransitionTime: now, reason: "ContainersNotReady", message: `containers with unready status: [${p.spec.containers.map((c: Obj) => c.name).join(" ")}]` },
        { type: "ContainersReady", status: "False", lastProbeTime: null, lastTransitionTime: now, reason: "ContainersNotReady", message: `containers with unready status: [${p.spec.containers.map((c: Obj) => c.name).join(" ")}]` },
        ...p.status.conditions.filter((c: Obj) => c.type === "PodScheduled")
      ]
      p.status.containerStatuses = p.spec.containers.map((c: Obj) => ({
        name: c.name,
        image: c.image,
        imageID: "",
        ready: false,
        started: false,
        restartCount: 0,
        state: { waiting: { reason: "ContainerCreating" } },
        lastState: {}
      }))
      return p
    })
    this.later(this.startDelay / 2, () => this.run(ns, name, uid))
  }

  private run(ns: string, name: string, uid: string) {
    const cannotPull = new Set(this.options.cannotPull ?? [])
    const crashImages = new Set(this.options.crashImages ?? [])
    const crashPods = new Set(this.options.crashPods ?? [])
    const now = nowRfc3339()
    const warnings: Array<[string, string]> = []
    const normal: Array<[string, string]> = []
    this.withPod(ns, name, uid, (p) => {
      const cs: Array<Obj> = p.spec.containers
      const statuses = cs.map((c: Obj) => {
        const base = { name: c.name, image: c.image, imageID: "", restartCount: 0, lastState: {} as Obj }
        if (cannotPull.has(c.image)) {
          warnings.push(["Failed", `Failed to pull image "${c.image}": rpc error: code = NotFound desc = failed to pull and unpack image "${c.image}": not found`])
          warnings.push(["Failed", "Error: ImagePullBackOff"])
          return { ...base, ready: false, started: false, state: { waiting: { reason: "ImagePullBackOff", message: `Back-off pulling image "${c.image}"` } } }
        }
        const id = `containerd://${randomUUID().replaceAll("-", "")}`
        if (crashImages.has(c.image) || crashPods.has(name)) {
          warnings.push(["BackOff", `Back-off restarting failed container ${c.name} in pod ${name}_${ns}(${uid})`])
          return {
            ...base,
            containerID: id,
            imageID: `docker.io/library/${c.image}@sha256:${"0".repeat(64)}`,
            ready: false,
            started: false,
            restartCount: 1,
            state: { waiting: { reason: "CrashLoopBackOff", message: `back-off 10s restarting failed container=${c.name} pod=${name}_${ns}(${uid})` } },
            lastState: { terminated: { exitCode: 1, reason: "Error", startedAt: now, finishedAt: now, containerID: id } }
          }
        }
        normal.push(["Started", `Started container ${c.name}`])
        return {
          ...base,
          containerID: id,
          imageID: `docker.io/library/${c.image}@sha256:${"0".repeat(64)}`,
          ready: true,
          started: true,
          state: { running: { startedAt: now } }
        }
      })
      const pulled = statuses.every((s: Obj) => s.state.waiting?.reason !== "ImagePullBackOff")
      const ready = statuses.every((s: Obj) => s.ready === true)
      const unready = statuses.filter((s: Obj) => !s.ready).map((s: Obj) => s.name).join(" ")
      p.status.phase = pulled ? "Running" : "Pending"
      p.status.containerStatuses = statuses
      p.status.conditions = p.status.conditions.map((c: Obj) => {
        if (c.type !== "Ready" && c.type !== "ContainersReady") return c
        return ready
          ? { type: c.type, status: "True", lastProbeTime: null, lastTransitionTime: now }
          : { ...c, reason: "ContainersNotReady", message: `containers with unready status: [${unready}]` }
      })
      return p
    })
    const pod = this.registry.store.get(pods, ns, name)
    if (pod === undefined || pod.metadata.uid !== uid) return
    for (const [reason, msg] of normal) this.recordEvent(pod, "Normal", reason, msg)
    for (const [reason, msg] of warnings) this.recordEvent(pod, "Warning", reason, msg)
  }

  private onPvc(ev: StoreEvent) {
    const pvc = ev.obj
    const { namespace: ns, name, uid } = pvc.metadata
    if (ev.type === "ADDED") {
      this.later(this.options.pvcBindDelayMs ?? this.startDelay, () => this.bind(ns, name, uid))
      // Pods waiting for this claim can now be scheduled.
      for (const p of this.registry.store.list(pods, ns)) {
        if (!p.spec.nodeName && this.claimsOf(p).includes(name)) this.later(0, () => this.schedule(ns, p.metadata.name, p.metadata.uid))
      }
    } else if (ev.type === "MODIFIED" && pvc.metadata.deletionTimestamp !== undefined) {
      this.later(0, () => this.releaseClaims(ns))
    }
  }

  private bind(ns: string, name: string, uid: string) {
    const cur = this.registry.store.get(pvcs, ns, name)
    if (cur === undefined || cur.metadata.uid !== uid || cur.status?.phase === "Bound") return
    const next = structuredClone(cur)
    next.spec.volumeName = `pvc-${uid}`
    next.metadata.annotations = {
      ...(next.metadata.annotations ?? {}),
      "pv.kubernetes.io/bind-completed": "yes",
      "pv.kubernetes.io/bound-by-controller": "yes",
      "volume.beta.kubernetes.io/storage-provisioner": "rancher.io/local-path",
      "volume.kubernetes.io/storage-provisioner": "rancher.io/local-path"
    }
    next.status = {
      phase: "Bound",
      accessModes: next.spec.accessModes,
      capacity: { storage: next.spec.resources?.requests?.storage ?? "1Gi" }
    }
    this.registry.update(pvcs, ns, name, next, "", { internal: true })
  }

  /** pvc-protection: drop the finalizer of deleting claims that no pod uses any more. */
  private releaseClaims(ns: string) {
    const used = new Set(this.registry.store.list(pods, ns).flatMap((p) => this.claimsOf(p)))
    for (const pvc of this.registry.store.list(pvcs, ns)) {
      if (pvc.metadata.deletionTimestamp === undefined || used.has(pvc.metadata.name)) continue
      const fins: Array<string> = pvc.metadata.finalizers ?? []
      if (!fins.includes(protection)) continue
      const next = structuredClone(pvc)
      next.metadata.finalizers = fins.filter((f) => f !== protection)
      this.registry.update(pvcs, ns, pvc.metadata.name, next, "", { internal: true })
    }
  }

  private onNamespace(ev: StoreEvent) {
    const ns = ev.obj.metadata.name
    if (ev.type === "ADDED") {
      this.later(0, () => {
        if (this.registry.store.get(serviceAccounts, ns, "default") === undefined && this.registry.store.get(namespaces, "", ns) !== undefined) {
          this.registry.create(serviceAccounts, ns, { metadata: { name: "default" } }, { internal: true })
        }
      }, true)
    } else if (ev.type === "MODIFIED" && ev.obj.metadata.deletionTimestamp !== undefined && ev.prev?.metadata.deletionTimestamp === undefined) {
      this.later(0, () => {
        for (const info of byResource.values()) {
          if (!info.namespaced) continue
          for (const o of this.registry.store.list(info, ns)) this.registry.removeNow(info, o)
        }
        const cur = this.registry.store.get(namespaces, "", ns)
        if (cur !== undefined) this.registry.removeNow(namespaces, cur)
      }, true)
    }
  }
}
