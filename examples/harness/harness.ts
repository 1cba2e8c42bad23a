// An integration harness that embeds StreamSpace: the control plane's layers, the agent's layer and the testkit's
// stand-ins (a Kubernetes API server whose pods' port-forwards reach a VNC desktop) in one Effect program. It
// enrols the agent, creates a session and reads the desktop's RFB banner through the control plane's VNC proxy.
//
//   npm install @streamspace/control-plane @streamspace/agent @streamspace/testkit effect
//   node harness.ts          (Node 24 runs this TypeScript file directly)
import { Agent, AgentConfig, Kubernetes, readAgentConfig } from "@streamspace/agent"
import { ControlPlane, ControlPlaneConfig } from "@streamspace/control-plane"
import { TestCluster } from "@streamspace/testkit"
import { ConfigProvider, Data, Effect, Layer, Schedule } from "effect"

const AGENT_ID = "harness-agent"
const BOOTSTRAP_TOKEN = "harness-bootstrap-token-0123456789abcdef"

class HarnessError extends Data.TaggedError("HarnessError")<{ readonly message: string }> {}

/** The control plane on loopback, a free port, an in-memory database, and a development admin token. */
const controlPlane = ControlPlane.layerNoDeps.pipe(
  Layer.provideMerge(ControlPlaneConfig.layerFromRecord({
    HOST: "127.0.0.1",
    PORT: "0",
    DATABASE_IN_MEMORY: "true",
    DEV_MODE: "true",
    AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
    LOG_LEVEL: "warn"
  }))
)

/** The agent, pointed at the control plane and at the test cluster (health and metrics servers on free ports). */
const agent = (controlPlaneUrl: string, cluster: TestCluster["Service"]) =>
  Agent.layerKubernetes(Kubernetes.layer).pipe(
    Layer.provideMerge(Layer.effect(
      AgentConfig,
      readAgentConfig.pipe(
        Effect.map((config) => ({ ...config, healthPort: 0, metricsPort: 0 })),
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
          env: {
            AGENT_ID,
            CONTROL_PLANE_URL: controlPlaneUrl.replace(/^http/, "ws"),
            AGENT_TOKEN: BOOTSTRAP_TOKEN,
            KUBECONFIG: cluster.kubeconfigPath,
            NAMESPACE: cluster.namespace,
            AGENT_CREDENTIAL_FILE: `${cluster.kubeconfigPath}.agent-credential`,
            LOG_LEVEL: "warn"
          }
        })))
      )
    ))
  )

/** A JSON call to the control plane's API. */
const api = (cp: ControlPlane["Service"], method: string, path: string, body?: unknown) =>
  Effect.tryPromise({
    try: async () => {
      const res = await fetch(`${cp.url}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${cp.devToken}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) })
      })
      return { status: res.status, body: (await res.json()) as Record<string, unknown> }
    },
    catch: (e) => new HarnessError({ message: `${method} ${path}: ${String(e)}` })
  })

/** Polls `check` every 100 ms for up to 30 s until it answers a value. */
const waitUntil = <A>(what: string, check: Effect.Effect<A | undefined, HarnessError>) =>
  check.pipe(
    Effect.flatMap((a) => a === undefined ? Effect.fail(new HarnessError({ message: `still waiting for ${what}` })) : Effect.succeed(a)),
    Effect.retry({ schedule: Schedule.spaced("100 millis"), times: 300 })
  )

/** The first 12 bytes a viewer receives through the VNC proxy: the server's RFB protocol version. */
const readRfbBanner = (url: string) =>
  Effect.callback<string, HarnessError>((resume) => {
    const ws = new WebSocket(url, ["binary"])
    ws.binaryType = "arraybuffer"
    let received = new Uint8Array(0)
    ws.onmessage = (event) => {
      const chunk = new Uint8Array(event.data as ArrayBuffer)
      const next = new Uint8Array(received.length + chunk.length)
      next.set(received)
      next.set(chunk, received.length)
      received = next
      if (received.length >= 12) {
        ws.close()
        resume(Effect.succeed(new TextDecoder().decode(received.subarray(0, 12))))
      }
    }
    ws.onerror = () => resume(Effect.fail(new HarnessError({ message: `WebSocket ${url} failed` })))
    return Effect.sync(() => ws.close())
  })

export const program = Effect.gen(function*() {
  const cluster = yield* TestCluster
  const cp = yield* ControlPlane
  yield* Layer.build(agent(cp.url, cluster))

  // Enrol: the agent registers as pending with the bootstrap token; an admin approves it.
  yield* waitUntil("the agent to enrol", Effect.map(api(cp, "GET", `/agents/${AGENT_ID}`), (r) => r.body["enrollment"] === "pending" ? true : undefined))
  yield* api(cp, "POST", `/agents/${AGENT_ID}/approve`)
  yield* waitUntil("the agent online", Effect.map(api(cp, "GET", `/agents/${AGENT_ID}`), (r) => r.body["status"] === "online" ? true : undefined))

  // A session of the built-in "demo" template, placed on the agent, running as a pod in the test cluster.
  const created = yield* api(cp, "POST", "/sessions", { template: "demo" })
  if (created.status !== 201) return yield* new HarnessError({ message: `create session: HTTP ${created.status} ${JSON.stringify(created.body)}` })
  const sessionId = String(created.body["id"])
  yield* waitUntil("the session running", Effect.map(api(cp, "GET", `/sessions/${sessionId}`), (r) => r.body["state"] === "running" ? true : undefined))

  // A viewer: a single-use ticket, then the VNC WebSocket through the control plane, the agent and the port-forward.
  const ticket = yield* api(cp, "POST", `/sessions/${sessionId}/vnc-ticket`)
  const banner = yield* readRfbBanner(`${cp.url.replace(/^http/, "ws")}${String(ticket.body["url"])}`)
  return { sessionId, banner }
}).pipe(Effect.scoped)

export const main = program.pipe(Effect.provide(Layer.merge(TestCluster.layer({ namespace: "streamspace" }), controlPlane)))

if (import.meta.main) {
  Effect.runPromise(main).then(
    ({ sessionId, banner }) => {
      console.log(`session ${sessionId}: ${JSON.stringify(banner)}`)
      process.exit(banner === "RFB 003.008\n" ? 0 : 1)
    },
    (e) => {
      console.error(e)
      process.exit(1)
    }
  )
}
