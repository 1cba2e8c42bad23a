// The production-like VNC path for benchmarks 1 and 2: a real Kubernetes API server (packages/testbed), whose
// port-forward goes through Go relays (kube-apiserver -> kwok's kubelet endpoint) to the benchmark's TCP
// target, as it would to a session pod. Three paths:
//   real API server port-forward alone (a WebSocket client, as the agent speaks it)
//   `kubectl port-forward` alone (what a person measures against)
//   viewer -> control plane 3 -> agent C -> real API server port-forward -> target
// Built only when the test bed's Go tools are built (`npm run kube:build`); otherwise the paths are absent.
import { type RealClusterShape, startRealCluster, toolPath, waitForPromise } from "@streamspace/testbed"
import { spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import { type AgentProc, type ControlPlane, enrollAgent, ensureTemplate, runningSession, signJwt, startAgent, startControlPlane } from "./system.ts"

export interface RealPaths {
  readonly cluster: RealClusterShape
  readonly pod: string
  readonly kubectlPort: number
  readonly cp: ControlPlane
  readonly agent: AgentProc
  readonly session: string
  readonly stop: () => Promise<void>
}

const NAMESPACE = "streamspace"

/** `kubectl port-forward` to the pod on a free local port; resolves once it says it is forwarding. */
const kubectlPortForward = (cluster: RealClusterShape, pod: string) =>
  new Promise<{ port: number; stop: () => Promise<void> }>((resolve, reject) => {
    const child = spawn(toolPath("kubectl"), ["--kubeconfig", cluster.adminKubeconfig, "-n", NAMESPACE, "port-forward", `pod/${pod}`, ":5900"], { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    const timer = setTimeout(() => reject(new Error(`kubectl port-forward did not start: ${out}`)), 30_000)
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString()
      const m = /Forwarding from 127\.0\.0\.1:(\d+)/.exec(out)
      if (m !== null) {
        clearTimeout(timer)
        resolve({
          port: Number(m[1]),
          stop: () => new Promise<void>((r) => {
            child.once("exit", () => r())
            child.kill()
          })
        })
      }
    })
    child.stderr.on("data", (d: Buffer) => (out += d.toString()))
    child.once("exit", (code) => reject(new Error(`kubectl port-forward exited (${code}): ${out}`)))
  })

export const startRealPaths = async (targetPort: number, kubectlPod = "bench-real-0"): Promise<RealPaths | string> => {
  try {
    toolPath("kube-apiserver")
  } catch (e) {
    return `real API server paths not measured: ${(e as Error).message}`
  }
  const stops: Array<() => Promise<void>> = []
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined)
  }
  try {
    // Every pod's port 5900 goes to the target: no PortForward objects needed.
    const cluster = await startRealCluster({ fallbackForwardPort: targetPort })
    stops.push(cluster.stop)
    await cluster.apply(JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE } }))
    await waitForPromise("the namespace's default ServiceAccount", async () => (await cluster.kubectl(["-n", NAMESPACE, "get", "serviceaccount", "default"])).code === 0, { timeout: 60_000 })
    await cluster.apply(JSON.stringify({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: kubectlPod, namespace: NAMESPACE },
      spec: { containers: [{ name: "desktop", image: "bench/desktop:1", ports: [{ containerPort: 5900 }] }] }
    }))
    await waitForPromise("the benchmark pod running", async () =>
      (await cluster.kubectl(["-n", NAMESPACE, "get", "pod", kubectlPod, "-o", "jsonpath={.status.phase}"])).stdout === "Running", { timeout: 60_000 })
    const kubectl = await kubectlPortForward(cluster, kubectlPod)
    stops.push(kubectl.stop)

    const cp = await startControlPlane()
    stops.push(cp.stop)
    await ensureTemplate(cp)
    const agent = await startAgent({
      id: "bench-agent-real",
      controlPlaneUrl: cp.wsBase,
      kubeconfig: readFileSync(cluster.adminKubeconfig, "utf8")
    })
    stops.push(agent.stop)
    await enrollAgent(cp, "bench-agent-real")
    const session = await runningSession(cp, signJwt("bench-user", "user"))
    return { cluster, pod: kubectlPod, kubectlPort: kubectl.port, cp, agent, session, stop }
  } catch (e) {
    await stop()
    return `real API server paths unavailable: ${(e as Error).message.slice(0, 2000)}`
  }
}

/** Viewer specs of the real paths (see worker.ts ViewerSpec). */
export const realPathSpecs = (r: RealPaths, userToken: string): Record<string, unknown> => ({
  real_port_forward: {
    kind: "pf",
    url: `${r.cluster.server.replace(/^https/, "wss")}/api/v1/namespaces/${NAMESPACE}/pods/${r.pod}/portforward?ports=5900`,
    token: r.cluster.adminToken,
    ca: readFileSync(r.cluster.caFile, "utf8")
  },
  kubectl_port_forward: { kind: "tcp", host: "127.0.0.1", port: r.kubectlPort },
  real_full_path: { kind: "ws", url: `${r.cp.wsBase}/api/v1/sessions/${r.session}/vnc`, headers: { authorization: `Bearer ${userToken}` } }
})
