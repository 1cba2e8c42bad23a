// The agent image run as the chart runs it, against a control plane and a kube-testserver on this machine: uid
// 10001 (helm/streamspace-agent values: podSecurityContext), the image's ENTRYPOINT and ENV, and the variables
// the chart sets, with a kubeconfig copied into the container in place of the in-cluster service account. Ports
// are free ones here: the container shares this machine's network.
import { images } from "@streamspace/testbed"
import { Effect } from "effect"
import * as S from "../support/stack.ts"
import { openRfb } from "../support/systemVnc.ts"
import * as B from "./buildah.ts"

export const CHART_USER = "10001:10001"
const KUBECONFIG = "/etc/streamspace/kubeconfig"

export interface AgentContainer {
  readonly config: B.ImageConfig
  readonly container: B.Container
  readonly proc: B.Proc
  readonly env: Record<string, string>
  readonly healthPort: number
  readonly metricsPort: number
}

/** Starts the agent image enrolling at `cpWsUrl` with the bootstrap token, on `cluster`. */
export const startAgentContainer = (cluster: S.Cluster, cpWsUrl: string, agentId: string) =>
  Effect.gen(function*() {
    const config = yield* B.requireImage(images.agent)
    const container = yield* B.container(images.agent)
    yield* B.copyInto(container, cluster.kubeconfigPath, KUBECONFIG, CHART_USER)
    const healthPort = yield* S.freePort
    const metricsPort = yield* S.freePort
    const env = S.agentEnv(cluster, cpWsUrl, agentId, {
      KUBECONFIG,
      AGENT_CREDENTIAL_FILE: "/tmp/agent-credential",
      HEALTH_PORT: String(healthPort),
      METRICS_PORT: String(metricsPort),
      LOG_LEVEL: "info",
      LOG_FORMAT: "text"
    })
    const proc = yield* B.run(container, config.Entrypoint, { user: CHART_USER, env })
    return { config, container, proc, env, healthPort, metricsPort } satisfies AgentContainer
  })

/** Approves the agent once it has enrolled (pending), then waits for it to be online; a loaded machine starts it slowly. */
export const enrol = (cp: { readonly admin: S.Client }, agent: AgentContainer, agentId: string) =>
  Effect.gen(function*() {
    yield* S.waitForAgent(cp, agentId, "pending", (a) => a.enrollment === "pending" && a.connected, 60_000)
    yield* S.approveAgent(cp, agentId)
  }).pipe(Effect.catch((e) => Effect.die(new Error(`${e.message}\n${agent.proc.output()}`))))

/** A session created by `user` on the agent, running; then one RFB frame read through the control plane's proxy. */
export const sessionFrame = (cp: { readonly url: string; readonly wsUrl: string }, user: string) =>
  Effect.gen(function*() {
    const client = S.api(cp.url, S.userToken(user))
    const created = yield* client.post("/sessions", { template: "demo" })
    if (created.status !== 201) return yield* Effect.die(new Error(`create session: ${created.status} ${created.text}`))
    const session = yield* S.waitForSession(client, created.body.id, ["running"], 30_000)
    const { client: rfb } = yield* openRfb(cp.wsUrl, session.id, { token: S.userToken(user) })
    yield* Effect.promise(() => rfb.update(false))
    return { session, rfb }
  })
