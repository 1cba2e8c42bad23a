// Transport and workload security: ws:// to a non-loopback host is refused unless explicitly allowed; the agent
// link and a viewer work over TLS with a private CA made at test time (and an agent without that CA never gets
// in); the session pods the agent creates meet the Kubernetes "restricted" Pod Security Standard.
import { readAgentConfig } from "@streamspace/agent"
import { RfbClient } from "@streamspace/vnc-testserver"
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect } from "effect"
import { createWebSocketStream, WebSocket } from "ws"
import { httpsApi, makePki } from "../support/securityTls.ts"
import * as S from "../support/stack.ts"

/** Violations of the "restricted" Pod Security Standard (Kubernetes v1.30 policy) in one pod. */
const restrictedViolations = (pod: any): Array<string> => {
  const v: Array<string> = []
  const spec = pod.spec ?? {}
  const podSc = spec.securityContext ?? {}
  for (const k of ["hostNetwork", "hostPID", "hostIPC"]) if (spec[k] === true) v.push(`spec.${k}`)
  const allowedVolumes = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"]
  for (const vol of spec.volumes ?? []) {
    const kinds = Object.keys(vol).filter((k) => k !== "name")
    if (!kinds.every((k) => allowedVolumes.includes(k))) v.push(`volume ${vol.name}: ${kinds.join(",")}`)
  }
  if (podSc.runAsUser === 0) v.push("pod runAsUser 0")
  const seccompOk = (t: unknown) => t === "RuntimeDefault" || t === "Localhost"
  for (const c of [...(spec.initContainers ?? []), ...(spec.containers ?? [])]) {
    const sc = c.securityContext ?? {}
    if (sc.privileged === true) v.push(`${c.name}: privileged`)
    if (sc.allowPrivilegeEscalation !== false) v.push(`${c.name}: allowPrivilegeEscalation not false`)
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) v.push(`${c.name}: capabilities not dropping ALL`)
    for (const add of sc.capabilities?.add ?? []) if (add !== "NET_BIND_SERVICE") v.push(`${c.name}: adds ${add}`)
    if (sc.runAsNonRoot !== true && podSc.runAsNonRoot !== true) v.push(`${c.name}: runAsNonRoot not set`)
    if (sc.runAsUser === 0) v.push(`${c.name}: runAsUser 0`)
    if (!seccompOk(sc.seccompProfile?.type) && !seccompOk(podSc.seccompProfile?.type)) v.push(`${c.name}: no seccomp profile`)
    for (const p of c.ports ?? []) if (p.hostPort !== undefined && p.hostPort !== 0) v.push(`${c.name}: hostPort ${p.hostPort}`)
  }
  return v
}

describe("transport security", () => {
  it.live("ws:// to a non-loopback host: main.ts exits naming CONTROL_PLANE_URL; ALLOW_INSECURE_TRANSPORT=true is the only way round it", () =>
    Effect.gen(function*() {
      const proc = yield* S.spawnNode("packages/agent/src/main.ts", { AGENT_ID: "a1", CONTROL_PLANE_URL: "ws://203.0.113.10:8000", AGENT_TOKEN: "x".repeat(20) })
      const code = yield* Effect.promise(() => proc.exited)
      assert.notStrictEqual(code, 0)
      assert.match(proc.output(), /CONTROL_PLANE_URL.*ws:\/\/.*ALLOW_INSECURE_TRANSPORT/s)
      const read = (env: Record<string, string>) => Effect.exit(readAgentConfig.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env })))))
      assert.strictEqual((yield* read({ AGENT_ID: "a1", CONTROL_PLANE_URL: "ws://203.0.113.10:8000", ALLOW_INSECURE_TRANSPORT: "true" }))._tag, "Success")
      assert.strictEqual((yield* read({ AGENT_ID: "a1", CONTROL_PLANE_URL: "ws://streamspace.example.com" }))._tag, "Failure")
      assert.strictEqual((yield* read({ AGENT_ID: "a1", CONTROL_PLANE_URL: "wss://streamspace.example.com" }))._tag, "Success")
    }), 60_000)

  it.live("TLS with a private CA: the agent connects with CONTROL_PLANE_CA_FILE, a viewer works over wss, a client without the CA is refused; session pods are Pod-Security restricted", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const pki = makePki(cluster.dir)
      const cp = yield* S.startControlPlane({ TLS_CERT_FILE: pki.certFile, TLS_KEY_FILE: pki.keyFile })
      const httpsBase = `https://127.0.0.1:${cp.port}`
      const wssBase = `wss://127.0.0.1:${cp.port}`
      const admin = httpsApi(httpsBase, S.adminToken(), pki.ca)
      const tlsCp = { admin }

      // without the CA the TLS handshake fails before any token is sent
      const untrusted = yield* Effect.promise(() =>
        new Promise<string>((resolve) => {
          const ws = new WebSocket(`${wssBase}/api/v1/agent/connect`, ["streamspace.v1"], { headers: { authorization: `Bearer ${S.BOOTSTRAP_TOKEN}` } })
          ws.on("open", () => resolve("open"))
          ws.on("error", (e) => resolve(e.message))
        })
      )
      assert.match(untrusted, /certificate/i)

      yield* S.startAgent(S.agentEnv(cluster, wssBase, "agent-tls", { CONTROL_PLANE_CA_FILE: pki.caFile }))
      yield* S.approveAgent(tlsCp, "agent-tls")
      const token = S.userToken("alice")
      const alice = httpsApi(httpsBase, token, pki.ca)
      const created = yield* alice.post("/sessions", { template: "demo" })
      assert.strictEqual(created.status, 201, created.text)
      yield* S.waitForSession(alice, created.body.id, ["running"])
      const viewer = yield* Effect.acquireRelease(
        Effect.promise(() => RfbClient.connect(createWebSocketStream(new WebSocket(`${wssBase}/api/v1/sessions/${created.body.id}/vnc`, ["binary"], { headers: { authorization: `Bearer ${token}` }, ca: pki.ca })), { timeout: 10_000 })),
        (c) => Effect.sync(() => c.close())
      )
      yield* Effect.promise(() => viewer.update(false))
      assert.strictEqual(viewer.width, 64)

      // the objects the agent created, as the API server stored them
      const pods = S.sessionPods(cluster)
      assert.strictEqual(pods.length, 1)
      assert.deepStrictEqual(restrictedViolations(pods[0]), [])
      assert.strictEqual(pods[0].spec.automountServiceAccountToken, false, "no API credentials inside a desktop")
    }), 90_000)
})
