// kwok's part of the test bed: its configuration (options, the stages shipped in its module, ours), the
// CRDs and StorageClass it needs in the API server, and the Node objects it plays kubelet for.
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { testbedRoot } from "../cache.ts"
import { pinnedVersion } from "../goTools.ts"

export interface NodeTaint {
  readonly key: string
  readonly value?: string
  readonly effect: "NoSchedule" | "PreferNoSchedule" | "NoExecute"
}

export interface NodeSpec {
  readonly name: string
  readonly labels?: Readonly<Record<string, string>>
  readonly taints?: ReadonlyArray<NodeTaint>
  /** What the node offers the scheduler (default: kwok's 1k CPUs, 1Ti memory). */
  readonly allocatable?: { readonly cpu: string; readonly memory: string; readonly pods?: string }
}

/** Three nodes in two zones; one tainted for GPU work, so selectors and tolerations are exercised for real. */
export const defaultNodes: ReadonlyArray<NodeSpec> = [
  { name: "node-a", labels: { "topology.kubernetes.io/zone": "zone-a" } },
  { name: "node-b", labels: { "topology.kubernetes.io/zone": "zone-b" } },
  {
    name: "node-gpu",
    labels: { "topology.kubernetes.io/zone": "zone-b", "streamspace.test/gpu": "true" },
    taints: [{ key: "streamspace.test/gpu", value: "true", effect: "NoSchedule" }]
  }
]

/** The folder of the pinned kwok module in the Go module cache (downloaded when missing). */
const kwokModuleDir = (): string => {
  const version = pinnedVersion("kwok", "sigs.k8s.io/kwok")
  const out = execFileSync("go", ["mod", "download", "-json", `sigs.k8s.io/kwok@${version}`], {
    cwd: path.join(testbedRoot, "go", "kwok"),
    encoding: "utf8"
  })
  return (JSON.parse(out) as { Dir: string }).Dir
}

const yamlFiles = (dir: string, except: ReadonlyArray<string> = []) =>
  readdirSync(dir)
    .filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml" && !except.includes(f))
    .sort()
    .map((f) => readFileSync(path.join(dir, f), "utf8").trim())

export interface KwokFiles {
  /** The --config file: options, ClusterPortForward fallback, stages. */
  readonly config: string
  /** Objects to apply before kwok starts: its PortForward CRD and the default StorageClass for PVCs. */
  readonly objects: string
}

/**
 * kwok's configuration. Every `*Parallelism` option must be > 0 (0 refuses to start) and debugging handlers
 * on (port-forward answers "Debug endpoints are disabled" otherwise). PortForward objects (one per pod,
 * made by ClusterDesktops) come from the API server; a pod without one is forwarded to `fallbackTarget`.
 */
export const kwokFiles = (fallbackTarget: { readonly port: number }): KwokFiles => {
  const mod = kwokModuleDir()
  const stage = (p: string, except?: ReadonlyArray<string>) => yamlFiles(path.join(mod, "kustomize/stage", p), except)
  const config = [
    `apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  enableCRDs: [PortForward]
  enableDebuggingHandlers: true
  podPlayStageParallelism: 8
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 4`,
    `apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterPortForward
metadata:
  name: fallback-desktop
spec:
  forwards:
  - target:
      address: 127.0.0.1
      port: ${fallbackTarget.port}`,
    ...stage("node/fast"),
    ...stage("node/heartbeat"),
    ...stage("pod/fast"),
    ...stage("volume/fast", ["storage-class.yaml"]),
    readFileSync(path.join(testbedRoot, "kwok/error-stages.yaml"), "utf8").trim()
  ].join("\n---\n")
  const objects = [
    readFileSync(path.join(mod, "kustomize/crd/bases/kwok.x-k8s.io_portforwards.yaml"), "utf8").trim(),
    readFileSync(path.join(mod, "kustomize/stage/volume/fast/storage-class.yaml"), "utf8").trim()
  ].join("\n---\n")
  return { config, objects }
}

/** A Node object for kwok to manage. */
export const nodeObject = (node: NodeSpec): object => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: {
    name: node.name,
    annotations: { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
    labels: {
      "kubernetes.io/hostname": node.name,
      "kubernetes.io/os": "linux",
      "kubernetes.io/arch": "amd64",
      type: "kwok",
      ...node.labels
    }
  },
  spec: node.taints === undefined ? {} : { taints: node.taints },
  status: node.allocatable === undefined ? {} : {
    allocatable: { pods: "110", ...node.allocatable },
    capacity: { pods: "110", ...node.allocatable }
  }
})
