// ClusterDesktops: the desktops of a RealCluster's session pods. kwok runs no containers, so for every pod
// labelled app=session this starts a vnc-testserver named after the pod and points kwok's port-forward for
// that pod at it (a PortForward object), so that tests can tell desktops apart and see whose input arrived
// where. A desktop stops when its pod goes away, as a pod's VNC server would; `kill` stops one early.
import * as k8s from "@kubernetes/client-node"
import { type RunningVncTestServer, start } from "@streamspace/vnc-testserver"
import { Context, Effect, Layer } from "effect"
import { RealCluster } from "./RealCluster.ts"

export interface ClusterDesktopsShape {
  /** The desktop of `namespace/pod`, once the pod exists. */
  readonly get: (namespace: string, pod: string) => RunningVncTestServer | undefined
  /** Every desktop, keyed `namespace/pod`. */
  readonly all: () => ReadonlyMap<string, RunningVncTestServer>
  /** Stops a pod's VNC server (the pod stays): what a viewer sees when the desktop process dies. */
  readonly kill: (namespace: string, pod: string) => Promise<void>
}

const GROUP = { group: "kwok.x-k8s.io", version: "v1alpha1", plural: "portforwards" } as const

export interface ClusterDesktopsOptions {
  /** Only pods of this namespace (default: every namespace), so that test files sharing a cluster do not meet. */
  readonly namespace?: string
  /** The pods' VNC port (default 5900). */
  readonly vncPort?: number
}

export const startClusterDesktops = async (kubeconfig: string, options: ClusterDesktopsOptions = {}) => {
  const vncPort = options.vncPort ?? 5900
  const ns = options.namespace
  const kc = new k8s.KubeConfig()
  kc.loadFromFile(kubeconfig)
  const core = kc.makeApiClient(k8s.CoreV1Api)
  const custom = kc.makeApiClient(k8s.CustomObjectsApi)
  const desktops = new Map<string, RunningVncTestServer>()
  const pending = new Map<string, Promise<void>>()
  let stopped = false

  const add = (pod: k8s.V1Pod) => {
    const namespace = pod.metadata?.namespace ?? "default"
    const name = pod.metadata?.name ?? ""
    const key = `${namespace}/${name}`
    if (desktops.has(key) || pending.has(key) || pod.metadata?.deletionTimestamp != null) return
    const work = (async () => {
      const desktop = await start({ name, frameRate: 5, log: () => {} })
      if (stopped) return desktop.close()
      desktops.set(key, desktop)
      const body = {
        apiVersion: `${GROUP.group}/${GROUP.version}`,
        kind: "PortForward",
        metadata: { name, namespace },
        spec: { forwards: [{ ports: [vncPort], target: { address: desktop.host, port: desktop.port } }] }
      }
      await custom.createNamespacedCustomObject({ ...GROUP, namespace, body }).catch((e: { code?: number }) => {
        if (e.code !== 409) throw e
        return custom.replaceNamespacedCustomObject({ ...GROUP, namespace, name, body })
      })
    })().catch(() => {}).finally(() => pending.delete(key))
    pending.set(key, work)
  }

  const remove = async (namespace: string, name: string) => {
    const key = `${namespace}/${name}`
    await pending.get(key)
    const desktop = desktops.get(key)
    desktops.delete(key)
    await desktop?.close()
    await custom.deleteNamespacedCustomObject({ ...GROUP, namespace, name }).catch(() => {})
  }

  const selector = "app=session"
  const informer = ns === undefined
    ? k8s.makeInformer(kc, "/api/v1/pods", () => core.listPodForAllNamespaces({ labelSelector: selector }), selector)
    : k8s.makeInformer(kc, `/api/v1/namespaces/${ns}/pods`, () => core.listNamespacedPod({ namespace: ns, labelSelector: selector }), selector)
  informer.on("add", add)
  informer.on("update", (pod) => pod.metadata?.deletionTimestamp == null ? add(pod) : undefined)
  informer.on("delete", (pod) => void remove(pod.metadata?.namespace ?? "default", pod.metadata?.name ?? ""))
  // An informer stops on error (the API server restarting, say); start it again.
  informer.on("error", () => setTimeout(() => !stopped && void informer.start().catch(() => {}), 500))
  await informer.start()

  const shape: ClusterDesktopsShape = {
    get: (namespace, pod) => desktops.get(`${namespace}/${pod}`),
    all: () => desktops,
    kill: async (namespace, pod) => {
      const key = `${namespace}/${pod}`
      await desktops.get(key)?.close()
    }
  }
  const stop = async () => {
    stopped = true
    await informer.stop()
    await Promise.all(pending.values())
    await Promise.all([...desktops.values()].map((d) => d.close()))
    desktops.clear()
  }
  return { ...shape, stop }
}

export class ClusterDesktops extends Context.Service<ClusterDesktops, ClusterDesktopsShape>()("testbed/ClusterDesktops") {
  static readonly layer = (options: ClusterDesktopsOptions = {}): Layer.Layer<ClusterDesktops, never, RealCluster> => Layer.effect(
    ClusterDesktops,
    Effect.gen(function*() {
      const cluster = yield* RealCluster
      return yield* Effect.acquireRelease(
        Effect.promise(() => startClusterDesktops(cluster.adminKubeconfig, options)),
        (d) => Effect.promise(() => d.stop())
      )
    })
  )
}
