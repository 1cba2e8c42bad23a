// The tunnel test bed shared by benchmarks 1-4, built once per run and torn down at the end:
//   target (TCP source/echo) <- kube-testserver port-forward <- agent A -> fake control plane  (agent hop alone)
//   target <- kube-testserver port-forward <- agent B -> control plane 1 -> viewer             (full path)
//   simulated agent -> control plane 2 -> viewer                                               (control-plane hop alone)
//   target <- websockify <- viewer                                                             (baseline)
//   target <- real kube-apiserver port-forward (kwok) <- agent C -> control plane 3 -> viewer   (production-like; realkube.ts)
// Every process is separate: the numbers are per process and nothing shares an event loop.
import { waitForPromise } from "@streamspace/testbed"
import { type RealPaths, realPathSpecs, startRealPaths } from "./realkube.ts"
import { spawnWorker, type Worker } from "./rpc.ts"
import {
  type AgentProc,
  type ControlPlane,
  ADMIN,
  enrollAgent,
  ensureTemplate,
  ensureWebsockify,
  runningSession,
  signJwt,
  startAgent,
  startControlPlane,
  startWebsockify,
  BOOTSTRAP_TOKEN
} from "./system.ts"

export interface Stack {
  readonly target: Worker
  readonly targetPort: number
  readonly kube: Worker
  readonly kubeInfo: { url: string; port: number; adminToken: string; kubeconfig: string }
  readonly viewer: Worker
  /** A second viewer process for background load. */
  readonly loadViewer: Worker
  readonly websockify: { port: number; pid: number; stop: () => Promise<void> } | undefined
  readonly fakecp: Worker
  readonly agentA: AgentProc
  /** Sessions created on agent A through the fake control plane. */
  readonly fakeSessions: Array<string>
  readonly cp: ControlPlane | undefined
  readonly agentB: AgentProc | undefined
  readonly userToken: string
  /** A running session on agent B (full path). */
  readonly session: string | undefined
  readonly cp2: ControlPlane | undefined
  readonly simAgents: Worker | undefined
  readonly simSession: string | undefined
  /** The paths through a real Kubernetes API server, when the test bed is built. */
  readonly real: RealPaths | undefined
  readonly errors: Array<string>
  readonly stop: () => Promise<void>
}

let built: Promise<Stack> | undefined

export const getStack = (): Promise<Stack> => (built ??= buildStack())
export const stopStack = async () => {
  if (built === undefined) return
  const s = await built.catch(() => undefined)
  built = undefined
  await s?.stop()
}

const step = (what: string) => console.log(`  [${new Date().toISOString().slice(11, 19)}] ${what}`)

const buildStack = async (): Promise<Stack> => {
  step("starting the tunnel test bed")
  const errors: Array<string> = []
  const stops: Array<() => Promise<void>> = []
  const target = spawnWorker("target")
  stops.push(target.stop)
  const { port: targetPort } = await target.call<{ port: number }>("target.start")
  step("target up; starting kube-testserver")
  const kube = spawnWorker("kube")
  stops.push(kube.stop)
  const kubeInfo = await kube.call("kube.start", { startDelayMs: 0, target: { host: "127.0.0.1", port: targetPort } })
  const viewer = spawnWorker("viewer")
  const loadViewer = spawnWorker("load-viewer")
  stops.push(viewer.stop, loadViewer.stop)

  let websockify: Stack["websockify"]
  if (await ensureWebsockify()) {
    websockify = await startWebsockify(targetPort)
    stops.push(websockify.stop)
  } else errors.push("websockify could not be installed: its baseline is missing")

  step("starting agent A against a fake control plane")
  // Agent A with a fake control plane.
  const fakecp = spawnWorker("fakecp")
  stops.push(fakecp.stop)
  const { url: fakeUrl } = await fakecp.call<{ url: string }>("fakecp.start", {})
  const agentA = await startAgent({ id: "bench-agent-a", controlPlaneUrl: fakeUrl, kubeconfig: kubeInfo.kubeconfig })
  stops.push(agentA.stop)
  await waitForPromise("agent A connected to the fake control plane", async () => (await fakecp.call("fakecp.connected")).connected, { timeout: 60_000, interval: 50 })
  step("agent A connected; creating its session")
  const fakeSessions = ["bench-a-0"]
  const created = await fakecp.call("fakecp.createSessions", { ids: fakeSessions })
  if (created.failures.length > 0 || created.notRunning > 0) throw new Error(`agent A sessions: ${JSON.stringify(created)}`)

  // Agent B with the real control plane.
  const userToken = signJwt("bench-user", "user")
  let cp: ControlPlane | undefined
  let agentB: AgentProc | undefined
  let session: string | undefined
  try {
    step("starting control plane 1 and agent B")
    cp = await startControlPlane()
    stops.push(cp.stop)
    await ensureTemplate(cp)
    agentB = await startAgent({ id: "bench-agent-b", controlPlaneUrl: cp.wsBase, kubeconfig: kubeInfo.kubeconfig })
    stops.push(agentB.stop)
    step("enrolling agent B")
    await enrollAgent(cp, "bench-agent-b")
    step("agent B approved; creating a session")
    session = await runningSession(cp, userToken)
  } catch (e) {
    errors.push(`full path unavailable: ${(e as Error).message.slice(0, 2000)}`)
  }

  // A simulated agent with a second control plane (the control-plane hop alone).
  let cp2: ControlPlane | undefined
  let simAgents: Worker | undefined
  let simSession: string | undefined
  try {
    step("starting control plane 2 and a simulated agent")
    cp2 = await startControlPlane()
    stops.push(cp2.stop)
    await ensureTemplate(cp2)
    simAgents = spawnWorker("sim-agent")
    stops.push(simAgents.stop)
    await simAgents.call("agents.start", { url: cp2.wsBase, ids: ["bench-sim-0"], token: BOOTSTRAP_TOKEN })
    await waitForPromise("sim agent pending", async () => (await cp2!.api("GET", "/api/v1/agents/bench-sim-0")).status === 200, { timeout: 30_000, interval: 50 })
    const a = await cp2.api("POST", "/api/v1/agents/bench-sim-0/approve")
    if (a.status !== 200) throw new Error(`approve sim agent: ${a.status} ${JSON.stringify(a.json)}`)
    await waitForPromise("sim agent connected", async () => (await simAgents!.call("agents.status")).connected === 1, { timeout: 30_000, interval: 50 })
    simSession = await runningSession(cp2, userToken)
  } catch (e) {
    errors.push(`control-plane hop alone unavailable: ${(e as Error).message.slice(0, 2000)}`)
  }

  step("starting a real Kubernetes control plane and agent C")
  // BENCH_REAL=0 leaves the real API server's paths out (quicker probes of our own hops).
  const realOrWhy = process.env.BENCH_REAL === "0" ? "real API server paths not measured: BENCH_REAL=0" : await startRealPaths(targetPort)
  const real = typeof realOrWhy === "string" ? undefined : realOrWhy
  if (typeof realOrWhy === "string") errors.push(realOrWhy)
  else stops.push(realOrWhy.stop)

  step(`test bed ready${errors.length > 0 ? ` (with ${errors.length} problems)` : ""}`)
  return {
    target,
    targetPort,
    kube,
    kubeInfo,
    viewer,
    loadViewer,
    websockify,
    fakecp,
    agentA,
    fakeSessions,
    cp,
    agentB,
    userToken,
    session,
    cp2,
    simAgents,
    simSession,
    real,
    errors,
    stop: async () => {
      for (const s of stops.reverse()) await s().catch(() => undefined)
    }
  }
}

/** Viewer specs for each path. */
export const paths = (s: Stack) => {
  const out: Record<string, unknown> = {
    raw_tcp: { kind: "tcp", host: "127.0.0.1", port: s.targetPort }
  }
  if (s.websockify !== undefined) out.websockify = { kind: "ws", url: `ws://127.0.0.1:${s.websockify.port}/`, protocols: ["binary"] }
  out.port_forward = {
    kind: "pf",
    url: `ws://127.0.0.1:${s.kubeInfo.port}/api/v1/namespaces/streamspace/pods/${s.fakeSessions[0]}/portforward?ports=5900`,
    token: s.kubeInfo.adminToken
  }
  if (s.cp2 !== undefined && s.simSession !== undefined) {
    out.control_plane = { kind: "ws", url: `${s.cp2.wsBase}/api/v1/sessions/${s.simSession}/vnc`, headers: { authorization: `Bearer ${s.userToken}` } }
  }
  if (s.cp !== undefined && s.session !== undefined) {
    out.full_path = { kind: "ws", url: `${s.cp.wsBase}/api/v1/sessions/${s.session}/vnc`, headers: { authorization: `Bearer ${s.userToken}` } }
  }
  if (s.real !== undefined) Object.assign(out, realPathSpecs(s.real, s.userToken))
  return out
}

export { ADMIN }
