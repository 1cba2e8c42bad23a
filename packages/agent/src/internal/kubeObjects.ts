// Pure builders and readers for the Kubernetes objects of a session: labels, Pod, Service, home PVC,
// pod-template merge, and the phase a pod is in. Plain JSON shapes, so this file needs no client library
// (only Kubernetes.ts imports @kubernetes/client-node) and is unit-tested without a cluster.
import type { SessionId, SessionPhase, SessionSpec, SessionStatus, TemplateName, UserId } from "@streamspace/protocol"
import { createHash } from "node:crypto"

/** Any Kubernetes object as JSON. */
export type Json = { [k: string]: unknown }

export interface ObjectMeta {
  readonly name?: string
  readonly namespace?: string
  readonly labels?: Readonly<Record<string, string>>
  readonly annotations?: Readonly<Record<string, string>>
  readonly resourceVersion?: string
  readonly deletionTimestamp?: unknown
  readonly uid?: string
}

/** The parts of a Pod the agent reads (typed list items and raw watch JSON both fit). */
export interface PodView {
  readonly metadata?: ObjectMeta
  readonly spec?: {
    readonly nodeName?: string
    readonly volumes?: ReadonlyArray<{ readonly name?: string; readonly persistentVolumeClaim?: { readonly claimName?: string } }>
  }
  readonly status?: {
    readonly phase?: string
    readonly reason?: string
    readonly message?: string
    readonly podIP?: string
    readonly conditions?: ReadonlyArray<{ readonly type?: string; readonly status?: string; readonly reason?: string; readonly message?: string }>
    readonly containerStatuses?: ReadonlyArray<ContainerStatusView>
    readonly initContainerStatuses?: ReadonlyArray<ContainerStatusView>
  }
}
interface ContainerStatusView {
  readonly name?: string
  readonly ready?: boolean
  readonly restartCount?: number
  readonly state?: {
    readonly waiting?: { readonly reason?: string; readonly message?: string }
    readonly terminated?: { readonly reason?: string; readonly message?: string; readonly exitCode?: number }
  }
}

export const MANAGED_BY = "streamspace-agent"
export const LABEL_APP = "app"
export const LABEL_AGENT = "agent"
export const LABEL_SESSION = "streamspace.io/session-id"
export const LABEL_USER = "streamspace.io/user"
export const LABEL_TEMPLATE = "streamspace.io/template"
export const LABEL_HOME = "streamspace.io/home"
export const LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
/** The VNC port of the session, so a restarted agent forwards to the right port. */
export const ANNOTATION_VNC_PORT = "streamspace.io/vnc-port"
export const SESSION_CONTAINER = "session"
export const HOME_VOLUME = "home"
export const HOME_MOUNT_PATH = "/home/streamspace"

/** What the builders need from AgentConfig. */
export interface SessionDefaults {
  readonly agentId: string
  readonly namespace: string
  readonly imagePullPolicy: "Always" | "IfNotPresent" | "Never"
  readonly cpu: string
  readonly memory: string
  readonly storage: string
  /** Ephemeral-storage limit of the session container. */
  readonly ephemeralStorage: string
  readonly storageClass: string | undefined
  readonly serviceType: "ClusterIP" | "NodePort" | "LoadBalancer"
}

/** Selects every pod this agent manages. */
export const agentSelector = (agentId: string): string => `${LABEL_AGENT}=${agentId},${LABEL_MANAGED_BY}=${MANAGED_BY}`

export const sessionLabels = (agentId: string, id: SessionId, spec: SessionSpec): Record<string, string> => ({
  [LABEL_APP]: "session",
  [LABEL_AGENT]: agentId,
  [LABEL_SESSION]: id,
  [LABEL_USER]: spec.user_id,
  [LABEL_TEMPLATE]: spec.template,
  [LABEL_MANAGED_BY]: MANAGED_BY
})

/** True when an existing object was made by this agent for this session (so a 409 on create means "adopt"). */
export const isOurs = (meta: ObjectMeta | undefined, agentId: string, id: SessionId): boolean =>
  meta?.labels?.[LABEL_AGENT] === agentId && meta.labels[LABEL_SESSION] === id && meta.labels[LABEL_MANAGED_BY] === MANAGED_BY

/**
 * The home PVC name of a user. User ids are label values (upper case, `_` allowed) but PVC names are
 * DNS subdomains, so a user id that needs rewriting gets a hash suffix: two users never share a home.
 */
export const homeClaimName = (user: UserId): string => {
  const clean = user.toLowerCase().replace(/[^a-z0-9.-]/g, "-").replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, "")
  if (clean === user) return `home-${user}`
  const hash = createHash("sha256").update(user).digest("hex").slice(0, 8)
  return `home-${clean === "" ? "user" : clean}-${hash}`
}

const restrictedContainerSecurity: Json = {
  allowPrivilegeEscalation: false,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" }
}
const restrictedPodSecurity: Json = {
  runAsNonRoot: true,
  seccompProfile: { type: "RuntimeDefault" },
  // A fresh home volume on block storage is owned by root: the desktop (uid 1000) must be able to write it.
  // OnRootMismatch skips the recursive chown when the volume's root already has the group.
  fsGroup: 1000,
  fsGroupChangePolicy: "OnRootMismatch"
}

/** Variables the agent sets in every session; the session spec's env cannot replace them. */
const PLATFORM_ENV_PREFIXES = ["STREAMSPACE_", "VNC_"]

const isRecord = (u: unknown): u is Json => typeof u === "object" && u !== null && !Array.isArray(u)

/** Recursive merge of plain objects; `over` wins; arrays and scalars are replaced. */
export const deepMerge = (base: Json, over: Json): Json => {
  const out: Json = { ...base }
  for (const [k, v] of Object.entries(over)) {
    const b = out[k]
    out[k] = isRecord(b) && isRecord(v) ? deepMerge(b, v) : v
  }
  return out
}

const byName = (items: ReadonlyArray<unknown>): Map<string, Json> => {
  const m = new Map<string, Json>()
  for (const i of items) if (isRecord(i) && typeof i.name === "string") m.set(i.name, i)
  return m
}

/** Appends the items of `extra` whose name is not in `base` (ours win on a name clash). */
const unionByName = (base: ReadonlyArray<Json>, extra: ReadonlyArray<unknown>): Array<Json> => {
  const have = byName(base)
  return [...base, ...[...byName(extra).values()].filter((i) => !have.has(i.name as string))]
}

export interface PodInputs {
  readonly id: SessionId
  readonly spec: SessionSpec
  readonly defaults: SessionDefaults
  /** Parsed SESSION_POD_TEMPLATE (a Pod, or anything with a `spec`), if any. */
  readonly template: Json | undefined
}

export const buildPod = ({ defaults, id, spec, template }: PodInputs): Json => {
  const labels = sessionLabels(defaults.agentId, id, spec)
  const cpu = spec.resources?.cpu ?? defaults.cpu
  const memory = spec.resources?.memory ?? defaults.memory
  // Ours first; the session spec's env adds to them but never replaces one (the control plane refuses user env
  // named like them; a template may still set other VNC_* variables, such as VNC_GEOMETRY).
  const env = new Map<string, string>([
    ["STREAMSPACE_SESSION_ID", id],
    ["STREAMSPACE_USER", spec.user_id],
    ["STREAMSPACE_TEMPLATE", spec.template],
    ["VNC_PORT", String(spec.vnc_port)]
  ])
  for (const [k, v] of Object.entries(spec.env ?? {})) {
    if (env.has(k) && PLATFORM_ENV_PREFIXES.some((p) => k.startsWith(p))) continue
    env.set(k, v)
  }

  const tplSpec: Json = isRecord(template?.spec) ? template.spec : {}
  const tplMeta: Json = isRecord(template?.metadata) ? template.metadata : {}
  const tplContainers: Array<unknown> = Array.isArray(tplSpec.containers) ? tplSpec.containers : []
  const tplMain = tplContainers.find((c) => isRecord(c) && c.name === SESSION_CONTAINER) as Json | undefined
  const tplExtra = tplContainers.filter((c): c is Json => isRecord(c) && c.name !== SESSION_CONTAINER)

  const ours: Json = {
    name: SESSION_CONTAINER,
    image: spec.image,
    imagePullPolicy: defaults.imagePullPolicy,
    ports: [{ name: "vnc", containerPort: spec.vnc_port, protocol: "TCP" }],
    env: [...env].map(([name, value]) => ({ name, value })),
    // Memory is limited to what was asked (an over-committed node kills the greediest first);
    // CPU is only requested, so an idle desktop lends its share to busy ones. Ephemeral storage is limited
    // (one desktop filling the node's disk would evict its neighbours) but not reserved: an explicit zero
    // request keeps Kubernetes from defaulting the request to the limit.
    resources: { requests: { cpu, memory, "ephemeral-storage": "0" }, limits: { memory, "ephemeral-storage": defaults.ephemeralStorage } },
    securityContext: restrictedContainerSecurity
  }
  const ourMounts: Array<Json> = spec.persistent_home ? [{ name: HOME_VOLUME, mountPath: HOME_MOUNT_PATH }] : []
  const main: Json = tplMain === undefined ? { ...ours, volumeMounts: ourMounts } : {
    ...tplMain,
    ...ours,
    env: unionByName(ours.env as Array<Json>, Array.isArray(tplMain.env) ? tplMain.env : []),
    securityContext: deepMerge(restrictedContainerSecurity, isRecord(tplMain.securityContext) ? tplMain.securityContext : {}),
    volumeMounts: unionByName(ourMounts, Array.isArray(tplMain.volumeMounts) ? tplMain.volumeMounts : [])
  }
  if ((main.volumeMounts as Array<Json>).length === 0) delete main.volumeMounts
  const extra = tplExtra.map((c) => ({
    ...c,
    securityContext: deepMerge(restrictedContainerSecurity, isRecord(c.securityContext) ? c.securityContext : {})
  }))
  const ourVolumes: Array<Json> = spec.persistent_home
    ? [{ name: HOME_VOLUME, persistentVolumeClaim: { claimName: homeClaimName(spec.user_id) } }]
    : []
  const volumes = unionByName(ourVolumes, Array.isArray(tplSpec.volumes) ? tplSpec.volumes : [])

  const podSpec: Json = {
    ...tplSpec,
    containers: [main, ...extra],
    securityContext: deepMerge(restrictedPodSecurity, isRecord(tplSpec.securityContext) ? tplSpec.securityContext : {}),
    // The session has no business with the Kubernetes API.
    automountServiceAccountToken: tplSpec.automountServiceAccountToken ?? false,
    restartPolicy: "Always"
  }
  if (volumes.length > 0) podSpec.volumes = volumes
  else delete podSpec.volumes

  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: id,
      namespace: defaults.namespace,
      labels: { ...(isRecord(tplMeta.labels) ? tplMeta.labels : {}), ...labels },
      annotations: { ...(isRecord(tplMeta.annotations) ? tplMeta.annotations : {}), [ANNOTATION_VNC_PORT]: String(spec.vnc_port) }
    },
    spec: podSpec
  }
}

export const buildService = (defaults: SessionDefaults, id: SessionId, spec: SessionSpec): Json => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: id, namespace: defaults.namespace, labels: sessionLabels(defaults.agentId, id, spec) },
  spec: {
    type: defaults.serviceType,
    selector: { [LABEL_AGENT]: defaults.agentId, [LABEL_SESSION]: id },
    ports: [{ name: "vnc", port: spec.vnc_port, targetPort: spec.vnc_port, protocol: "TCP" }]
  }
})

export const buildHomeClaim = (defaults: SessionDefaults, user: UserId, shared: boolean): Json => ({
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  metadata: {
    name: homeClaimName(user),
    namespace: defaults.namespace,
    labels: { [LABEL_AGENT]: defaults.agentId, [LABEL_USER]: user, [LABEL_HOME]: "true", [LABEL_MANAGED_BY]: MANAGED_BY }
  },
  spec: {
    accessModes: [shared ? "ReadWriteMany" : "ReadWriteOnce"],
    resources: { requests: { storage: defaults.storage } },
    ...(defaults.storageClass !== undefined ? { storageClassName: defaults.storageClass } : {})
  }
})

/** The home PVC a session pod mounts (its `home` volume), if any. */
export const homeClaimOf = (pod: PodView): string | undefined =>
  pod.spec?.volumes?.find((v) => v.name === HOME_VOLUME)?.persistentVolumeClaim?.claimName

/** A home claim may be reused when it is managed by a StreamSpace agent for the same user. */
export const isUsersHome = (meta: ObjectMeta | undefined, user: UserId): boolean =>
  meta?.labels?.[LABEL_MANAGED_BY] === MANAGED_BY && meta.labels[LABEL_USER] === user

// Waiting reasons after which the pod will not become ready without someone changing something.
const FAILED_WAITING = new Set([
  "ImagePullBackOff",
  "ErrImagePull",
  "InvalidImageName",
  "ErrImageNeverPull",
  "CrashLoopBackOff",
  "CreateContainerConfigError",
  "CreateContainerError",
  "RunContainerError"
])

export interface DerivedPhase {
  readonly phase: SessionPhase
  readonly reason?: string
  readonly message?: string
}

/** The session phase a (still existing) pod is in. A deleted pod is `terminated`, decided by the caller. */
export const derivePhase = (pod: PodView): DerivedPhase => {
  const status = pod.status ?? {}
  const withText = (phase: SessionPhase, reason: string | undefined, message: string | undefined): DerivedPhase => ({
    phase,
    ...(reason !== undefined && reason !== "" ? { reason } : {}),
    ...(message !== undefined && message !== "" ? { message } : {})
  })
  if (pod.metadata?.deletionTimestamp != null) return withText("terminating", "PodDeleting", undefined)
  if (status.phase === "Failed") return withText("failed", status.reason ?? "PodFailed", status.message)
  if (status.phase === "Succeeded") return withText("terminated", "Completed", status.message)
  for (const c of [...(status.initContainerStatuses ?? []), ...(status.containerStatuses ?? [])]) {
    const w = c.state?.waiting
    if (w?.reason !== undefined && FAILED_WAITING.has(w.reason)) return withText("failed", w.reason, w.message)
  }
  const cond = (type: string) => status.conditions?.find((c) => c.type === type)
  const ready = cond("Ready")?.status === "True"
  if (status.phase === "Running" && ready) return { phase: "running" }
  const scheduled = cond("PodScheduled")
  if (scheduled?.status === "False") return withText("pending", scheduled.reason ?? "Unschedulable", scheduled.message)
  const waiting = status.containerStatuses?.find((c) => c.state?.waiting?.reason !== undefined)?.state?.waiting
  return withText("creating", waiting?.reason ?? (status.phase === "Running" ? "ContainersNotReady" : "ContainerCreating"), waiting?.message)
}

/** How many times the pod's containers have restarted (a desktop that restarted dropped its viewers' connections). */
export const restartsOf = (pod: PodView): number =>
  (pod.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0)

export const sessionIdOf = (pod: PodView): SessionId | undefined => pod.metadata?.labels?.[LABEL_SESSION] as SessionId | undefined

/** The status a pod stands for, stamped with `observedAt`. */
export const statusOfPod = (pod: PodView, id: SessionId, observedAt: string, deleted = false): SessionStatus => {
  const d: DerivedPhase = deleted ? { phase: "terminated", reason: "PodDeleted" } : derivePhase(pod)
  const labels = pod.metadata?.labels ?? {}
  const user = labels[LABEL_USER]
  const template = labels[LABEL_TEMPLATE]
  const ip = pod.status?.podIP
  return {
    session_id: id,
    phase: d.phase,
    ...(d.reason !== undefined ? { reason: d.reason } : {}),
    ...(d.message !== undefined ? { message: d.message.slice(0, 1024) } : {}),
    ...(user !== undefined ? { user_id: user as UserId } : {}),
    ...(template !== undefined ? { template: template as TemplateName } : {}),
    ...(ip !== undefined && ip !== "" && !deleted ? { pod_ip: ip } : {}),
    observed_at: observedAt
  }
}

/** The VNC port recorded on the pod, else `fallback`. */
export const vncPortOf = (pod: PodView, fallback: number): number => {
  const n = Number(pod.metadata?.annotations?.[ANNOTATION_VNC_PORT])
  return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : fallback
}
