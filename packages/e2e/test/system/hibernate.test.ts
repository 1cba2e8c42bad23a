// Hibernate and resume end to end: the real control plane and a real agent against kube-testserver. Hibernating
// deletes the pod and service and keeps the home PVC (the same object, by uid), frees the agent's capacity for
// placement, and resuming starts a new pod on that same PVC that serves VNC again. Bad transitions are 409s that
// name the state. (kube-testserver runs no containers, so files in the home are checked on a real cluster only:
// see test/real-cluster/hibernate.test.ts.)
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"

const podsOf = (cluster: S.Cluster, id: string) => S.sessionPods(cluster).filter((p: any) => p.metadata.name === id)

describe("hibernate and resume", () => {
  it.live("the pod goes and the home stays; capacity is freed; resume brings a new pod on the same home that serves VNC", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane()
      // One session slot: the hibernated session must give it back.
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-h", { MAX_SESSIONS: "1" }))
      const token = S.userToken("ann")
      const ann = S.api(cp.url, token)
      const template = yield* cp.admin.post("/templates", { name: "desk", image: "streamspace/demo-desktop:latest", persistent_home: true })
      assert.strictEqual(template.status, 201)

      const created = (yield* ann.post("/sessions", { template: "desk" })).body
      yield* S.waitForSession(ann, created.id, ["running"])
      const pvc = cluster.kube.get("persistentvolumeclaims", S.NAMESPACE, "home-ann")
      assert.isDefined(pvc)
      const firstPod = podsOf(cluster, created.id)[0]
      assert.isDefined(firstPod)

      // Only a running session with a persistent home hibernates; only a hibernated one resumes.
      const early = yield* ann.post(`/sessions/${created.id}/resume`)
      assert.strictEqual(early.status, 409)
      assert.include(early.body.error.message, "is running")

      const hib = yield* ann.post(`/sessions/${created.id}/hibernate`)
      assert.strictEqual(hib.status, 202)
      assert.strictEqual(hib.body.state, "hibernating")
      assert.isString(hib.body.hibernate_command_id)
      const hibernated = yield* S.waitForSession(ann, created.id, ["hibernated"])
      assert.strictEqual(hibernated.reason, "requested")
      assert.strictEqual(podsOf(cluster, created.id).length, 0)
      assert.isUndefined(cluster.kube.get("services", S.NAMESPACE, created.id))
      const kept = cluster.kube.get("persistentvolumeclaims", S.NAMESPACE, "home-ann")
      assert.strictEqual(kept?.metadata.uid, pvc.metadata.uid, "the same home PVC is kept")
      assert.isUndefined(kept?.metadata.deletionTimestamp)
      // The pod's deletion report can make the session hibernated before the command's own completion arrives.
      const command = yield* S.waitFor(
        "the hibernate command completed",
        Effect.map(ann.get(`/commands/${hib.body.hibernate_command_id}`), (r) => (r.body.state === "completed" ? r : undefined))
      )
      assert.strictEqual(command.body.result.home_claim, "home-ann")

      const again = yield* ann.post(`/sessions/${created.id}/hibernate`)
      assert.strictEqual(again.status, 409)
      assert.include(again.body.error.message, "is hibernated")

      // The slot is free: the agent's own count drops, and a new session is placed on it.
      yield* S.waitForAgent(cp, "agent-h", "with no active sessions", (a) => a.active_sessions === 0)
      const other = yield* ann.post("/sessions", { template: "demo" })
      assert.strictEqual(other.status, 201)
      assert.strictEqual(other.body.agent_id, "agent-h")
      yield* S.waitForSession(ann, other.body.id, ["running"])
      // ... and then the hibernated session cannot come back until it is gone again.
      const full = yield* ann.post(`/sessions/${created.id}/resume`)
      assert.strictEqual(full.status, 503)
      assert.include(full.body.error.message, "max_sessions")
      assert.strictEqual((yield* ann.get(`/sessions/${created.id}`)).body.state, "hibernated")
      const noHome = yield* ann.post(`/sessions/${other.body.id}/hibernate`)
      assert.strictEqual(noHome.status, 409)
      assert.include(noHome.body.error.message, "no persistent home")
      yield* ann.del(`/sessions/${other.body.id}`)
      yield* S.waitForSession(ann, other.body.id, ["terminated"])
      yield* S.waitForAgent(cp, "agent-h", "with no active sessions", (a) => a.active_sessions === 0)

      const res = yield* ann.post(`/sessions/${created.id}/resume`)
      assert.strictEqual(res.status, 202)
      assert.strictEqual(res.body.state, "creating")
      yield* S.waitForSession(ann, created.id, ["running"])
      const newPod = podsOf(cluster, created.id)[0]
      assert.isDefined(newPod)
      assert.notStrictEqual(newPod.metadata.uid, firstPod.metadata.uid, "a new pod")
      const claims = (newPod.spec.volumes ?? []).map((v: any) => v.persistentVolumeClaim?.claimName).filter(Boolean)
      assert.deepStrictEqual(claims, ["home-ann"])
      assert.strictEqual(cluster.kube.get("persistentvolumeclaims", S.NAMESPACE, "home-ann")?.metadata.uid, pvc.metadata.uid)
      assert.isDefined(cluster.kube.get("services", S.NAMESPACE, created.id))

      // The viewer reaches the resumed desktop.
      const viewer = yield* S.openViewer(cp.wsUrl, created.id, token)
      assert.strictEqual(viewer.client.name, "system desktop")

      // Deleting a hibernated session ends it.
      yield* ann.post(`/sessions/${created.id}/hibernate`)
      yield* S.waitForSession(ann, created.id, ["hibernated"])
      const del = yield* ann.del(`/sessions/${created.id}`)
      assert.oneOf(del.status, [200, 202])
      yield* S.waitForSession(ann, created.id, ["terminated"])
    }), { timeout: 120_000 })
})
