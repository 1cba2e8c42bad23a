// End to end: the real control plane (ControlPlane.layerNoDeps, embedded PGlite in memory) and real agents
// (Agent.layerKubernetes) against kube-testserver, whose session pods' port-forwards reach one vnc-testserver.
// Everything on loopback; waits are bounded polls, never fixed sleeps.
import { assert, describe, it } from "@effect/vitest"
import { Agent, AgentConfig, type AgentConfigShape, Kubernetes, type KubernetesOptions, readAgentConfig } from "@streamspace/agent"
import { KubeTestServer } from "@streamspace/kube-testserver"
import { RfbClient, VncTestServer } from "@streamspace/vnc-testserver"
import { ConfigProvider, Context, Effect, Exit, Layer, Scope } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { type AddressInfo, createServer as createNetServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createWebSocketStream, WebSocket } from "ws"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { waitFor } from "../../../control-plane/test/support/http.ts"
import { sign, TEST_JWT_SECRET } from "../../../control-plane/test/support/jwt.ts"

const NAMESPACE = "streamspace"
const BOOTSTRAP = "e2e-bootstrap-token-0123456789abcdef"
const fastKube: KubernetesOptions = { retryBase: "20 millis", retryTimes: 4, maxRetryAfter: "2 seconds", requestTimeout: "5 seconds", failingAfter: "300 millis" }

interface Client {
  readonly call: (method: string, path: string, body?: unknown) => Effect.Effect<{ readonly status: number; readonly body: any }>
}

const client = (base: string, token: string): Client => ({
  call: (method, path, body) =>
    Effect.promise(async () => {
      const res = await fetch(`${base}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
      const text = await res.text()
      return { status: res.status, body: text === "" ? undefined : JSON.parse(text) }
    })
})

const poll = <A>(what: string, check: Effect.Effect<A | undefined>, ms = 15_000) =>
  Effect.promise(async () => {
    let last: A | undefined
    await waitFor(what, async () => (last = await Effect.runPromise(check)) !== undefined, ms)
    return last as A
  })

/**
 * kube-testserver + vnc-testserver + the control plane, for the life of the test's scope. `persistent`: the
 * control plane keeps its database in a directory and listens on a fixed port, so it can be restarted.
 */
const stack = (persistent = false) => Effect.gen(function*() {
  const kube = yield* KubeTestServer.make({ kubelet: { startDelayMs: 10, terminationDelayMs: 10, pvcBindDelayMs: 10 } })
  const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 64, height: 48, frameRate: 2 })), VncTestServer)
  kube.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
  const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "cp-e2e-"))), (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true })))
  const kubeconfig = join(dir, "kubeconfig")
  writeFileSync(kubeconfig, kube.kubeconfigFor(kube.adminToken, { namespace: NAMESPACE, user: "admin" }))
  /** The control plane on its own scope; on a data directory and a fixed port it can be restarted. */
  const startControlPlane = (extra: Record<string, string>) =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromRecord({
        HOST: "127.0.0.1",
        PORT: "0",
        DATABASE_IN_MEMORY: "true",
        JWT_SECRET: TEST_JWT_SECRET,
        AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP,
        HEARTBEAT_INTERVAL: "1s",
        PING_INTERVAL: "1s",
        LOG_LEVEL: "error",
        ...extra
      }))), scope).pipe(Effect.orDie)
      const stop = Scope.close(scope, Exit.void)
      yield* Effect.addFinalizer(() => stop)
      return { cp: Context.get(ctx, ControlPlane), stop }
    })
  const port = yield* Effect.promise(() => new Promise<number>((resolve) => {
    const probe = createNetServer().listen(0, "127.0.0.1", () => {
      const p = (probe.address() as AddressInfo).port
      probe.close(() => resolve(p))
    })
  }))
  const cpEnv: Record<string, string> = persistent ? { PORT: String(port), DATABASE_IN_MEMORY: "false", DATA_DIR: join(dir, "data") } : {}
  const first = yield* startControlPlane(cpEnv)
  const cp = first.cp
  const admin = client(cp.url, yield* Effect.promise(() => sign({ sub: "root", role: "admin" })))
  const ann = client(cp.url, yield* Effect.promise(() => sign({ sub: "ann" })))
  const wsUrl = cp.url.replace(/^http/, "ws")
  /** Stops the control plane and starts it again on the same port and database. */
  const restartControlPlane = Effect.gen(function*() {
    if (!persistent) return yield* Effect.die(new Error("restartControlPlane needs stack(true)"))
    yield* first.stop
    yield* startControlPlane(cpEnv)
  })

  /** Starts an agent on its own scope; `stop` shuts it down gracefully. */
  const startAgent = (agentId: string, region: string) =>
    Effect.gen(function*() {
      const env = {
        AGENT_ID: agentId,
        CONTROL_PLANE_URL: wsUrl,
        AGENT_TOKEN: BOOTSTRAP,
        NAMESPACE,
        KUBECONFIG: kubeconfig,
        AGENT_CREDENTIAL_FILE: join(dir, `credential-${agentId}`),
        REGION: region,
        RECONNECT_DELAY: "50ms",
        MAX_RECONNECT_DELAY: "500ms",
        HEARTBEAT_INTERVAL: "500ms",
        PING_INTERVAL: "500ms",
        PING_TIMEOUT: "500ms",
        LOG_LEVEL: "error"
      }
      const config = Layer.effect(
        AgentConfig,
        readAgentConfig.pipe(
          Effect.map((c): AgentConfigShape => ({ ...c, healthPort: 0, metricsPort: 0 })),
          Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
          Effect.orDie
        )
      )
      const scope = yield* Scope.make()
      yield* Layer.buildWithScope(Agent.layerKubernetes(Kubernetes.layerWith(fastKube)).pipe(Layer.provideMerge(config)), scope).pipe(Effect.orDie)
      const stop = Scope.close(scope, Exit.void)
      yield* Effect.addFinalizer(() => stop)
      return { stop }
    })

  const agent = (id: string) => Effect.map(admin.call("GET", `/agents/${id}`), (r) => (r.status === 200 ? r.body : undefined))
  const online = (id: string) => poll(`agent ${id} online`, Effect.map(agent(id), (a) => (a?.connected && a.status === "online" && a.enrollment === "approved" ? a : undefined)))

  /** Starts an agent, waits for it to enrol as pending, approves it and waits until it is online. */
  const enrol = (id: string, region: string) =>
    Effect.gen(function*() {
      const handle = yield* startAgent(id, region)
      yield* poll(`agent ${id} pending`, Effect.map(agent(id), (a) => (a?.enrollment === "pending" ? a : undefined)))
      assert.strictEqual((yield* admin.call("POST", `/agents/${id}/approve`)).status, 200)
      yield* online(id)
      return handle
    })

  const sessionIn = (c: Client, id: string, states: ReadonlyArray<string>) =>
    poll(`session ${id} in ${states.join("|")}`, Effect.map(c.call("GET", `/sessions/${id}`), (r) => (states.includes(r.body?.state) ? r.body : undefined)))

  const pods = () => kube.list("pods", NAMESPACE).filter((p: any) => p.metadata?.labels?.app === "session") as Array<any>

  return { kube, vnc, cp, wsUrl, admin, ann, startAgent, enrol, online, sessionIn, pods, restartControlPlane }
})

describe("control plane end to end with real agents", () => {
  it.live("placement across two regions and drain; a session from POST to running to DELETE to terminated", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* s.enrol("agent-eu", "eu-1")
      yield* s.enrol("agent-us", "us-1")
      const us = yield* s.ann.call("POST", "/sessions", { template: "demo", region: "us-1" })
      assert.strictEqual(us.status, 201)
      assert.strictEqual(us.body.agent_id, "agent-us")
      const eu = yield* s.ann.call("POST", "/sessions", { template: "demo", region: "eu-1" })
      assert.strictEqual(eu.body.agent_id, "agent-eu")
      // Drained: no new sessions there, existing ones go on.
      assert.strictEqual((yield* s.admin.call("PATCH", "/agents/agent-us", { status: "offline" })).body.status, "draining")
      const elsewhere = yield* s.ann.call("POST", "/sessions", { template: "demo", region: "us-1" })
      assert.strictEqual(elsewhere.body.agent_id, "agent-eu")
      for (const id of [us.body.id, eu.body.id, elsewhere.body.id]) yield* s.sessionIn(s.ann, id, ["running"])
      assert.strictEqual(s.pods().length, 3)
      const history = yield* s.ann.call("GET", `/commands/${us.body.create_command_id}`)
      assert.strictEqual(history.body.state, "completed")
      // Delete: terminating, then terminated, and the pod is gone.
      const del = yield* s.ann.call("DELETE", `/sessions/${us.body.id}`)
      assert.strictEqual(del.status, 202)
      const ended = yield* s.sessionIn(s.ann, us.body.id, ["terminated"])
      assert.strictEqual(ended.reason, "deleted")
      yield* poll("pod deleted", Effect.sync(() => (s.pods().some((p) => JSON.stringify(p.metadata).includes(us.body.id)) ? undefined : true)))
      // Both agents drained: 503 and nothing created.
      yield* s.admin.call("PATCH", "/agents/agent-eu", { status: "offline" })
      const refused = yield* s.ann.call("POST", "/sessions", { template: "demo" })
      assert.strictEqual(refused.status, 503)
      assert.strictEqual((yield* s.admin.call("GET", "/sessions")).body.sessions.length, 3)
    }), { timeout: 120_000 })

  it.live("a VNC session through the proxy, the agent and port-forward to vnc-testserver (ticket and JWT)", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      yield* s.enrol("agent-a", "eu-1")
      const created = (yield* s.ann.call("POST", "/sessions", { template: "demo" })).body
      yield* s.sessionIn(s.ann, created.id, ["running"])
      const viaTicket = (yield* s.ann.call("POST", `/sessions/${created.id}/vnc-ticket`)).body
      const rfb = (url: string, headers: Record<string, string> = {}) =>
        Effect.acquireRelease(
          Effect.promise(async () => {
            const ws = new WebSocket(url, ["binary"], { headers })
            const c = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
            return { ws, c }
          }),
          (v) => Effect.sync(() => v.c.close())
        )
      const one = yield* rfb(`${s.wsUrl}${viaTicket.url}`)
      assert.strictEqual(one.ws.protocol, "binary")
      assert.strictEqual(one.c.version, "3.8")
      assert.strictEqual(one.c.width, 64)
      assert.strictEqual(one.c.height, 48)
      const token = yield* Effect.promise(() => sign({ sub: "ann" }))
      const two = yield* rfb(`${s.wsUrl}/api/v1/sessions/${created.id}/vnc`, { authorization: `Bearer ${token}` })
      assert.strictEqual(two.c.width, 64)
      const metrics = yield* Effect.promise(() => fetch(`${s.cp.url}/metrics`).then((r) => r.text()))
      assert.match(metrics, /streamspace_control_plane_vnc_viewers 2/)
      // The session ends: the viewers are closed by the agent's vnc_closed.
      const closed = new Promise<number>((resolve) => one.ws.once("close", (code) => resolve(code)))
      yield* s.ann.call("DELETE", `/sessions/${created.id}`)
      const code = yield* Effect.promise(() => closed)
      assert.include([1000, 4410], code)
      yield* s.sessionIn(s.ann, created.id, ["terminated"])
    }), { timeout: 120_000 })

  it.live("agent restart: a session whose pod vanished meanwhile ends lost_on_agent; the other keeps running", () =>
    Effect.gen(function*() {
      const s = yield* stack()
      const first = yield* s.enrol("agent-r", "eu-1")
      const keep = (yield* s.ann.call("POST", "/sessions", { template: "demo" })).body
      const lose = (yield* s.ann.call("POST", "/sessions", { template: "demo" })).body
      yield* s.sessionIn(s.ann, keep.id, ["running"])
      yield* s.sessionIn(s.ann, lose.id, ["running"])
      yield* first.stop
      const pod = s.pods().find((p) => JSON.stringify(p.metadata).includes(lose.id))
      s.kube.delete("pods", NAMESPACE, pod.metadata.name)
      yield* s.startAgent("agent-r", "eu-1")
      yield* s.online("agent-r")
      const lost = yield* s.sessionIn(s.ann, lose.id, ["terminated"])
      assert.strictEqual(lost.reason, "lost_on_agent")
      assert.strictEqual((yield* s.ann.call("GET", `/sessions/${keep.id}`)).body.state, "running")
    }), { timeout: 120_000 })

  it.live("control-plane restart on the same database: records survive and a delete sent while the agent was away completes", () =>
    Effect.gen(function*() {
      const s = yield* stack(true)
      const agent = yield* s.enrol("agent-z", "eu-1")
      const created = (yield* s.ann.call("POST", "/sessions", { template: "demo" })).body
      yield* s.sessionIn(s.ann, created.id, ["running"])
      yield* agent.stop
      const del = yield* s.ann.call("DELETE", `/sessions/${created.id}`)
      assert.strictEqual(del.body.state, "terminating")
      yield* s.restartControlPlane
      assert.strictEqual((yield* s.ann.call("GET", `/sessions/${created.id}`)).body.state, "terminating")
      yield* s.startAgent("agent-z", "eu-1")
      yield* s.online("agent-z")
      const ended = yield* s.sessionIn(s.ann, created.id, ["terminated"])
      assert.strictEqual(ended.reason, "deleted")
      const command = yield* s.admin.call("GET", `/commands/${ended.delete_command_id}`)
      assert.strictEqual(command.body.state, "completed")
    }), { timeout: 120_000 })
})
