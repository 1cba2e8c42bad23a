// `npm run kube:up -- --dir DIR`: a local Kubernetes cluster in the foreground until Ctrl-C. Writes
// DIR/admin.kubeconfig; a second start on the same DIR keeps the cluster's data.
import * as path from "node:path"
import { parseArgs } from "node:util"
import { startRealCluster } from "./RealCluster.ts"

const usage = `usage: npm run kube:up -- --dir DIR

Starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake kubelets for three
nodes) on 127.0.0.1, writes DIR/admin.kubeconfig, and runs until Ctrl-C. Logs are in DIR/logs.
Build the binaries first with \`npm run kube:build\` (about 20 minutes the first time, cached after).`

let dir: string | undefined
try {
  const { values } = parseArgs({ options: { dir: { type: "string" }, help: { type: "boolean", short: "h" } } })
  if (values.help === true) {
    console.log(usage)
    process.exit(0)
  }
  dir = values.dir
} catch (e) {
  console.error(`${(e as Error).message}\n\n${usage}`)
  process.exit(2)
}
if (dir === undefined) {
  console.error(`--dir is required\n\n${usage}`)
  process.exit(2)
}

try {
  const cluster = await startRealCluster({ dir: path.resolve(dir), log: (l) => console.log(l) })
  console.log(`\nready: export KUBECONFIG=${cluster.adminKubeconfig}\n       ${cluster.bin("kubectl")} get nodes\nCtrl-C stops it.`)
  const stop = () => {
    console.log("stopping...")
    void cluster.stop().then(() => process.exit(0))
  }
  process.once("SIGINT", stop)
  process.once("SIGTERM", stop)
} catch (e) {
  console.error((e as Error).message)
  process.exit(1)
}
