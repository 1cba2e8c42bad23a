// The session objects as built (no cluster): labels, restricted security, resource defaults, env,
// pod template merge, home claim names, and the phase a pod is in.
import type { UserId } from "@streamspace/protocol"
import { assert, describe, it } from "vitest"
import { capacityFromConfig, capacityFromQuotas } from "../src/Kubernetes.ts"
import {
  buildHomeClaim,
  buildPod,
  buildService,
  derivePhase,
  homeClaimName,
  type Json,
  type SessionDefaults,
  statusOfPod
} from "../src/internal/kubeObjects.ts"
import { sessionSpec, sid } from "./support/cluster.ts"

const defaults: SessionDefaults = {
  agentId: "agent-a",
  namespace: "streamspace",
  imagePullPolicy: "IfNotPresent",
  cpu: "1000m",
  memory: "2Gi",
  storage: "10Gi",
  ephemeralStorage: "10Gi",
  storageClass: undefined,
  serviceType: "ClusterIP"
}

const main = (pod: Json) => ((pod.spec as Json).containers as Array<Json>)[0]!

describe("buildPod", () => {
  it("labels, restricted security, default resources, env and the VNC port", () => {
    const pod = buildPod({ id: sid("s-1"), spec: sessionSpec({ env: { GREETING: "hi", STREAMSPACE_USER: "override" } }), defaults, template: undefined })
    const meta = pod.metadata as Json
    assert.strictEqual(meta.name, "s-1")
    assert.deepStrictEqual(meta.labels, {
      app: "session",
      agent: "agent-a",
      "streamspace.io/session-id": "s-1",
      "streamspace.io/user": "alice",
      "streamspace.io/template": "firefox",
      "app.kubernetes.io/managed-by": "streamspace-agent"
    })
    const spec = pod.spec as Json
    assert.deepStrictEqual(spec.securityContext, { runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" }, fsGroup: 1000, fsGroupChangePolicy: "OnRootMismatch" })
    assert.strictEqual(spec.automountServiceAccountToken, false)
    const c = main(pod)
    assert.strictEqual(c.image, "streamspace/firefox:1.0")
    assert.strictEqual(c.imagePullPolicy, "IfNotPresent")
    assert.deepStrictEqual(c.ports, [{ name: "vnc", containerPort: 5900, protocol: "TCP" }])
    assert.deepStrictEqual(c.resources, { requests: { cpu: "1000m", memory: "2Gi", "ephemeral-storage": "0" }, limits: { memory: "2Gi", "ephemeral-storage": "10Gi" } })
    assert.deepStrictEqual(c.securityContext, {
      allowPrivilegeEscalation: false,
      runAsNonRoot: true,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" }
    })
    const env = Object.fromEntries((c.env as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]))
    assert.deepStrictEqual(env, { STREAMSPACE_SESSION_ID: "s-1", STREAMSPACE_USER: "alice", STREAMSPACE_TEMPLATE: "firefox", VNC_PORT: "5900", GREETING: "hi" })
    assert.isUndefined(spec.volumes)
    assert.isUndefined(c.volumeMounts)
  })

  it("a home volume is group-writable by the desktop (fsGroup 1000, OnRootMismatch), the container's ephemeral storage is limited, and the spec's env cannot replace the platform's variables", () => {
    const pod = buildPod({
      id: sid("s-9"),
      spec: sessionSpec({ persistent_home: true, env: { STREAMSPACE_SESSION_ID: "s-other", VNC_PORT: "1", VNC_GEOMETRY: "800x600" } }),
      defaults: { ...defaults, ephemeralStorage: "3Gi" },
      template: undefined
    })
    const podSecurity = (pod.spec as Json).securityContext as Json
    assert.strictEqual(podSecurity.fsGroup, 1000)
    assert.strictEqual(podSecurity.fsGroupChangePolicy, "OnRootMismatch")
    const resources = main(pod).resources as Json
    assert.strictEqual((resources.limits as Json)["ephemeral-storage"], "3Gi")
    // Limited, not reserved: without the explicit zero, Kubernetes would default the request to the limit.
    assert.strictEqual((resources.requests as Json)["ephemeral-storage"], "0")
    const env = Object.fromEntries((main(pod).env as Array<{ name: string; value: string }>).map((e) => [e.name, e.value]))
    assert.strictEqual(env.STREAMSPACE_SESSION_ID, "s-9")
    assert.strictEqual(env.VNC_PORT, "5900")
    assert.strictEqual(env.VNC_GEOMETRY, "800x600")
  })

  it("resources from the spec win over the defaults; a persistent home mounts the user's claim", () => {
    const pod = buildPod({ id: sid("s-2"), spec: sessionSpec({ resources: { cpu: "250m", memory: "512Mi" }, persistent_home: true }), defaults, template: undefined })
    const c = main(pod)
    assert.deepStrictEqual(c.resources, { requests: { cpu: "250m", memory: "512Mi", "ephemeral-storage": "0" }, limits: { memory: "512Mi", "ephemeral-storage": "10Gi" } })
    assert.deepStrictEqual(c.volumeMounts, [{ name: "home", mountPath: "/home/streamspace" }])
    assert.deepStrictEqual((pod.spec as Json).volumes, [{ name: "home", persistentVolumeClaim: { claimName: "home-alice" } }])
  })

  it("merges the pod template: tolerations, nodeSelector, securityContext, extra containers, volumes", () => {
    const template: Json = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { labels: { team: "x", app: "not-session" }, annotations: { note: "t" } },
      spec: {
        securityContext: { runAsUser: 1000, fsGroup: 1000 },
        tolerations: [{ key: "streamspace", operator: "Equal", value: "sessions", effect: "NoSchedule" }],
        nodeSelector: { workload: "streamspace" },
        containers: [
          { name: "session", image: "ignored", securityContext: { runAsUser: 1000 }, volumeMounts: [{ name: "shm", mountPath: "/dev/shm" }] },
          { name: "audio", image: "pulse:1", securityContext: { readOnlyRootFilesystem: true } }
        ],
        volumes: [{ name: "shm", emptyDir: { medium: "Memory" } }]
      }
    }
    const pod = buildPod({ id: sid("s-3"), spec: sessionSpec(), defaults, template })
    const spec = pod.spec as Json
    const meta = pod.metadata as Json
    assert.strictEqual((meta.labels as Json).team, "x")
    assert.strictEqual((meta.labels as Json).app, "session", "our labels win")
    assert.strictEqual((meta.annotations as Json).note, "t")
    assert.deepStrictEqual(spec.tolerations, (template.spec as Json).tolerations)
    assert.deepStrictEqual(spec.nodeSelector, { workload: "streamspace" })
    assert.deepStrictEqual(spec.securityContext, { runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" }, fsGroup: 1000, fsGroupChangePolicy: "OnRootMismatch", runAsUser: 1000 })
    const [c, audio] = spec.containers as Array<Json>
    assert.strictEqual(c!.image, "streamspace/firefox:1.0", "the session image always wins")
    assert.deepStrictEqual((c!.securityContext as Json).runAsUser, 1000)
    assert.deepStrictEqual((c!.securityContext as Json).capabilities, { drop: ["ALL"] })
    assert.deepStrictEqual(c!.volumeMounts, [{ name: "shm", mountPath: "/dev/shm" }])
    assert.strictEqual(audio!.name, "audio")
    assert.deepStrictEqual(audio!.securityContext, {
      allowPrivilegeEscalation: false,
      runAsNonRoot: true,
      capabilities: { drop: ["ALL"] },
      seccompProfile: { type: "RuntimeDefault" },
      readOnlyRootFilesystem: true
    })
    assert.deepStrictEqual(spec.volumes, [{ name: "shm", emptyDir: { medium: "Memory" } }])
  })
})

describe("service and home claim", () => {
  it("a Service of SESSION_SERVICE_TYPE selecting the session pod on the VNC port", () => {
    const svc = buildService({ ...defaults, serviceType: "NodePort" }, sid("s-1"), sessionSpec({ vnc_port: 5901 }))
    assert.deepStrictEqual(svc.spec, {
      type: "NodePort",
      selector: { agent: "agent-a", "streamspace.io/session-id": "s-1" },
      ports: [{ name: "vnc", port: 5901, targetPort: 5901, protocol: "TCP" }]
    })
  })

  it("a per-user claim: size, class, RWO or RWX", () => {
    const rwo = buildHomeClaim({ ...defaults, storageClass: "nfs" }, "alice" as UserId, false)
    assert.deepStrictEqual(rwo.spec, { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "10Gi" } }, storageClassName: "nfs" })
    const rwx = buildHomeClaim(defaults, "alice" as UserId, true)
    assert.deepStrictEqual(rwx.spec, { accessModes: ["ReadWriteMany"], resources: { requests: { storage: "10Gi" } } })
  })

  it("claim names are DNS names and distinct users never share one", () => {
    assert.strictEqual(homeClaimName("alice" as UserId), "home-alice")
    const a = homeClaimName("Alice_B" as UserId)
    const b = homeClaimName("alice-b" as UserId)
    assert.match(a, /^home-alice-b-[0-9a-f]{8}$/)
    assert.notStrictEqual(a, b)
  })
})

describe("derivePhase", () => {
  const waiting = (reason: string, message = "") => ({
    status: { phase: "Pending", containerStatuses: [{ name: "session", state: { waiting: { reason, message } } }] }
  })
  it("maps pod states to session phases", () => {
    assert.deepStrictEqual(derivePhase({ status: { phase: "Pending" } }), { phase: "creating", reason: "ContainerCreating" })
    assert.deepStrictEqual(derivePhase({
      status: { phase: "Pending", conditions: [{ type: "PodScheduled", status: "False", reason: "Unschedulable", message: "0/1 nodes" }] }
    }), { phase: "pending", reason: "Unschedulable", message: "0/1 nodes" })
    assert.deepStrictEqual(derivePhase({ status: { phase: "Running", conditions: [{ type: "Ready", status: "True" }] } }), { phase: "running" })
    assert.deepStrictEqual(derivePhase({ status: { phase: "Running", conditions: [{ type: "Ready", status: "False" }] } }), {
      phase: "creating",
      reason: "ContainersNotReady"
    })
    assert.deepStrictEqual(derivePhase(waiting("ImagePullBackOff", "Back-off pulling image")), {
      phase: "failed",
      reason: "ImagePullBackOff",
      message: "Back-off pulling image"
    })
    assert.strictEqual(derivePhase(waiting("CrashLoopBackOff")).reason, "CrashLoopBackOff")
    assert.deepStrictEqual(derivePhase({ status: { phase: "Failed", reason: "Evicted", message: "low memory" } }), {
      phase: "failed",
      reason: "Evicted",
      message: "low memory"
    })
    assert.strictEqual(derivePhase({ metadata: { deletionTimestamp: "2026-01-01T00:00:00Z" }, status: { phase: "Running" } }).phase, "terminating")
    const gone = statusOfPod({ metadata: { name: "s-1", labels: { "streamspace.io/user": "bob" } } }, sid("s-1"), "2026-01-01T00:00:00.000Z", true)
    assert.deepStrictEqual(gone, { session_id: sid("s-1"), phase: "terminated", reason: "PodDeleted", user_id: "bob" as UserId, observed_at: "2026-01-01T00:00:00.000Z" })
  })
})

describe("capacity", () => {
  it("from the tightest quota, else MAX_SESSIONS x defaults", () => {
    assert.deepStrictEqual(
      capacityFromQuotas([{ hard: { "requests.cpu": "50", "requests.memory": "100Gi", pods: "40" } }, { hard: { cpu: "20" } }], 100),
      { cpu: "20000m", memory: "100Gi", max_sessions: 40 }
    )
    assert.isUndefined(capacityFromQuotas([{ hard: { pods: "10" } }], 100))
    assert.deepStrictEqual(capacityFromConfig({ maxSessions: 100, sessionDefaultCpu: "1000m", sessionDefaultMemory: "2Gi" }), {
      cpu: "100000m",
      memory: "200Gi",
      max_sessions: 100
    })
  })
})
