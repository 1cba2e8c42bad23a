// Server-side defaulting, as a real cluster returns objects (k8s.io/kubernetes pkg/apis/core/v1/defaults.go).
import type { Obj } from "./store.ts"

const pullPolicy = (image: string) => {
  const last = image.split("/").pop() ?? image
  if (last.includes("@")) return "IfNotPresent"
  const tag = last.includes(":") ? last.slice(last.lastIndexOf(":") + 1) : ""
  return tag === "" || tag === "latest" ? "Always" : "IfNotPresent"
}

const defaultContainer = (c: Obj) => {
  if (typeof c.image === "string" && c.imagePullPolicy === undefined) c.imagePullPolicy = pullPolicy(c.image)
  c.resources ??= {}
  c.terminationMessagePath ??= "/dev/termination-log"
  c.terminationMessagePolicy ??= "File"
  if (Array.isArray(c.ports)) for (const p of c.ports) p.protocol ??= "TCP"
}

const qosClass = (spec: Obj): string => {
  const cs: Array<Obj> = spec.containers ?? []
  let anyReq = false
  let guaranteed = cs.length > 0
  for (const c of cs) {
    const req = c.resources?.requests ?? {}
    const lim = c.resources?.limits ?? {}
    if (Object.keys(req).length > 0 || Object.keys(lim).length > 0) anyReq = true
    for (const r of ["cpu", "memory"]) {
      const l = lim[r]
      const q = req[r] ?? l
      if (l === undefined || String(q) !== String(l)) guaranteed = false
    }
  }
  if (!anyReq) return "BestEffort"
  return guaranteed ? "Guaranteed" : "Burstable"
}

export const defaultPodSpec = (spec: Obj) => {
  spec.restartPolicy ??= "Always"
  spec.terminationGracePeriodSeconds ??= 30
  spec.dnsPolicy ??= "ClusterFirst"
  spec.schedulerName ??= "default-scheduler"
  spec.securityContext ??= {}
  spec.serviceAccountName ??= spec.serviceAccount ?? "default"
  spec.serviceAccount ??= spec.serviceAccountName
  spec.enableServiceLinks ??= true
  spec.priority ??= 0
  spec.preemptionPolicy ??= "PreemptLowerPriority"
  spec.tolerations ??= [
    { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
    { key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 }
  ]
  for (const c of spec.containers ?? []) defaultContainer(c)
  for (const c of spec.initContainers ?? []) defaultContainer(c)
}

const defaultServiceSpec = (spec: Obj) => {
  spec.type ??= "ClusterIP"
  spec.sessionAffinity ??= "None"
  if (spec.type !== "ExternalName") {
    spec.internalTrafficPolicy ??= "Cluster"
    spec.ipFamilies ??= ["IPv4"]
    spec.ipFamilyPolicy ??= "SingleStack"
  }
  for (const p of spec.ports ?? []) {
    p.protocol ??= "TCP"
    p.targetPort ??= p.port
  }
}

/** The apiserver folds write-only `stringData` into base64 `data`. */
const foldStringData = (obj: Obj) => {
  if (obj.stringData !== null && typeof obj.stringData === "object") {
    obj.data = { ...(obj.data ?? {}) }
    for (const [k, v] of Object.entries(obj.stringData)) obj.data[k] = Buffer.from(String(v), "utf8").toString("base64")
  }
  delete obj.stringData
}

/** Fills defaults on a newly created object (mutates). */
export const applyCreateDefaults = (kind: string, obj: Obj) => {
  switch (kind) {
    case "Pod":
      obj.spec ??= {}
      defaultPodSpec(obj.spec)
      obj.status = { phase: "Pending", qosClass: qosClass(obj.spec) }
      break
    case "Service":
      obj.spec ??= {}
      defaultServiceSpec(obj.spec)
      obj.status = { loadBalancer: {} }
      break
    case "PersistentVolumeClaim":
      obj.spec ??= {}
      obj.spec.storageClassName ??= "standard"
      obj.spec.volumeMode ??= "Filesystem"
      obj.metadata.finalizers = [...new Set([...(obj.metadata.finalizers ?? []), "kubernetes.io/pvc-protection"])]
      obj.status = { phase: "Pending" }
      break
    case "Namespace":
      obj.spec = { finalizers: ["kubernetes"] }
      obj.status = { phase: "Active" }
      obj.metadata.labels = { ...(obj.metadata.labels ?? {}), "kubernetes.io/metadata.name": obj.metadata.name }
      break
    case "Secret":
      obj.type ??= "Opaque"
      foldStringData(obj)
      break
  }
}

/** Defaults that also apply to updated specs, so a PUT of a partial object is compared fairly. */
export const applyUpdateDefaults = (kind: string, obj: Obj) => {
  if (kind === "Pod" && obj.spec !== undefined) defaultPodSpec(obj.spec)
  if (kind === "Service" && obj.spec !== undefined) defaultServiceSpec(obj.spec)
  if (kind === "Secret") {
    obj.type ??= "Opaque"
    foldStringData(obj)
  }
}
