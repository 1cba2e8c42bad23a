// One real Kubernetes control plane for every file of the real-cluster suite (starting one costs ~20 s of
// two cores); each file works in namespaces of its own. A file that must restart the API server starts its
// own cluster instead.
import { startRealCluster } from "@streamspace/testbed"
import type { TestProject } from "vitest/node"

export interface RealClusterInfo {
  readonly dir: string
  readonly server: string
  readonly caFile: string
  readonly adminKubeconfig: string
  readonly adminToken: string
}

declare module "vitest" {
  export interface ProvidedContext {
    realCluster: RealClusterInfo
  }
}

export default async function setup(project: TestProject) {
  const cluster = await startRealCluster({ log: (line) => console.log(`real-cluster: ${line}`) })
  const { dir, server, caFile, adminKubeconfig, adminToken } = cluster
  project.provide("realCluster", { dir, server, caFile, adminKubeconfig, adminToken })
  return () => cluster.stop()
}
