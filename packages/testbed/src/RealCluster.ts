// RealCluster: a real Kubernetes control plane on loopback, built from its Go modules (see goTools.ts):
// etcd, kube-apiserver (RBAC, service-account tokens, Pod Security admission), kube-controller-manager
// (node taints, default ServiceAccounts, PVC binding, garbage collection), kube-scheduler, and kwok as
// the kubelets of a few labelled and tainted nodes (node and pod status, PVC provisioning, port-forward).
// `startRealCluster` is the plain API (used by `npm run kube:up`); `RealCluster.layer` the scoped one.
import { execFile } from "node:child_process"
import { generateKeyPairSync, randomBytes } from "node:crypto"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { request } from "node:https"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Effect, Layer } from "effect"
import { toolPath } from "./goTools.ts"
import { defaultNodes, kwokFiles, nodeObject, type NodeSpec } from "./internal/kwok.ts"
import { freePort, type Proc, startProcess, waitReady } from "./internal/process.ts"

export type { NodeSpec, NodeTaint } from "./internal/kwok.ts"
export { defaultNodes } from "./internal/kwok.ts"

export interface RealClusterOptions {
  /** Where certificates, keys, etcd data, kubeconfigs and logs go (default: a new temporary folder, removed at stop). */
  readonly dir?: string
  readonly nodes?: ReadonlyArray<NodeSpec>
  /** Where kwok forwards a pod's ports when no PortForward object names the pod (default: 127.0.0.1:1, refused). */
  readonly fallbackForwardPort?: number
  readonly log?: (line: string) => void
}

export interface CommandResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export interface RealClusterShape {
  readonly dir: string
  /** https://127.0.0.1:PORT */
  readonly server: string
  /** The API server's CA bundle (its self-signed serving certificate and CA). */
  readonly caFile: string
  /** A kubeconfig for the cluster admin (system:masters), by bearer token. */
  readonly adminKubeconfig: string
  readonly adminToken: string
  /** The binary of every tool, for tests that run them (kubectl, helm). */
  readonly bin: (name: "kubectl" | "helm") => string
  /** kubectl as the admin; never throws, the result says how it went. */
  readonly kubectl: (args: ReadonlyArray<string>, input?: string) => Promise<CommandResult>
  /** `kubectl apply -f -` of YAML or JSON objects, which must succeed. */
  readonly apply: (manifest: string) => Promise<void>
  /** Stops the API server (its watches end); `startApiServer` brings it back on the same port and data. */
  readonly stopApiServer: () => Promise<void>
  readonly startApiServer: () => Promise<void>
  /** Both of the above: the API server's watches end and its caches start again. */
  readonly restartApiServer: () => Promise<void>
  /** Compacts etcd at its current revision (after one throwaway write), so older resourceVersions are gone. */
  readonly compactEtcd: () => Promise<number>
  /** Deletes an object behind the API server's back (`/registry/pods/NS/NAME`): a change no watch reports. */
  readonly deleteFromEtcd: (key: string) => Promise<void>
  readonly stop: () => Promise<void>
}

const run = (file: string, args: ReadonlyArray<string>, input?: string, env?: NodeJS.ProcessEnv) =>
  new Promise<CommandResult>((resolve) => {
    const child = execFile(file, args, { maxBuffer: 64 * 1024 * 1024, env: env ?? process.env }, (err, stdout, stderr) =>
      resolve({ code: err === null ? 0 : typeof err.code === "number" ? err.code : 1, stdout, stderr: stderr || (err?.message ?? "") }))
    if (input !== undefined) child.stdin?.end(input)
  })

/** One HTTPS request to the API server as the admin. */
const apiGet = (server: string, caFile: string, token: string, urlPath: string) =>
  new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(`${server}${urlPath}`, { ca: readFileSync(caFile), headers: { authorization: `Bearer ${token}` }, timeout: 5000 }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (c: string) => (body += c))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on("timeout", () => req.destroy(new Error("timeout")))
    req.on("error", reject)
    req.end()
  })

/** POST to etcd's JSON gateway (v3 API). */
const etcdPost = async (endpoint: string, api: string, body: object): Promise<{ header?: { revision?: string } }> => {
  const res = await fetch(`${endpoint}/v3/${api}`, { method: "POST", body: JSON.stringify(body) })
  if (!res.ok) throw new Error(`etcd ${api}: HTTP ${res.status} ${await res.text()}`)
  return (await res.json()) as { header?: { revision?: string } }
}

const b64 = (s: string) => Buffer.from(s).toString("base64")

export const startRealCluster = async (options: RealClusterOptions = {}): Promise<RealClusterShape> => {
  const log = options.log ?? (() => {})
  const temporary = options.dir === undefined
  const dir = options.dir ?? mkdtempSync(path.join(os.tmpdir(), "streamspace-kube-"))
  const logs = path.join(dir, "logs")
  const certs = path.join(dir, "certs")
  mkdirSync(logs, { recursive: true })
  mkdirSync(certs, { recursive: true })
  const started = Date.now()
  const procs: Array<Proc> = []

  // Keys and the admin token persist in `dir`, so a cluster started again on the same folder keeps its data.
  const saKey = path.join(certs, "sa.key")
  const saPub = path.join(certs, "sa.pub")
  if (!existsSync(saKey)) {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 })
    writeFileSync(saKey, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 })
    writeFileSync(saPub, publicKey.export({ type: "spki", format: "pem" }))
  }
  const tokenFile = path.join(certs, "tokens.csv")
  if (!existsSync(tokenFile)) writeFileSync(tokenFile, `${randomBytes(24).toString("hex")},admin,admin,system:masters\n`, { mode: 0o600 })
  const adminToken = readFileSync(tokenFile, "utf8").split(",")[0]!

  const [etcdPort, etcdPeerPort, apiPort, kubeletPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()])
  const etcdEndpoint = `http://127.0.0.1:${etcdPort}`
  const server = `https://127.0.0.1:${apiPort}`
  const caFile = path.join(certs, "apiserver.crt")
  const adminKubeconfig = path.join(dir, "admin.kubeconfig")

  const stop = async () => {
    for (const p of procs.reverse()) await p.stop()
    procs.length = 0
    if (temporary) rmSync(dir, { recursive: true, force: true })
  }

  try {
    log(`etcd on ${etcdEndpoint}`)
    const etcd = startProcess("etcd", toolPath("etcd"), [
      "--name=default",
      `--data-dir=${path.join(dir, "etcd")}`,
      `--listen-client-urls=${etcdEndpoint}`,
      `--advertise-client-urls=${etcdEndpoint}`,
      `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
      `--initial-cluster=default=http://127.0.0.1:${etcdPeerPort}`,
      "--unsafe-no-fsync"
    ], logs)
    procs.push(etcd)
    await waitReady(etcd, "health", async () => (await fetch(`${etcdEndpoint}/health`)).ok)

    const apiArgs = [
      `--etcd-servers=${etcdEndpoint}`,
      `--secure-port=${apiPort}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      "--endpoint-reconciler-type=none",
      `--cert-dir=${certs}`,
      "--service-account-issuer=https://kubernetes.default.svc",
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      "--authorization-mode=Node,RBAC",
      `--token-auth-file=${tokenFile}`,
      "--service-cluster-ip-range=10.96.0.0/16",
      // Compaction is the test's to do (compactEtcd), so a watch's expiry is never a matter of timing.
      "--etcd-compaction-interval=0"
    ]
    const startApiServer = async () => {
      log(`kube-apiserver on ${server}`)
      const api = startProcess("kube-apiserver", toolPath("kube-apiserver"), apiArgs, logs)
      procs.splice(1, 0, api)
      await waitReady(api, "readiness", async () => {
        if (!existsSync(caFile)) return false
        return (await apiGet(server, caFile, adminToken, "/readyz")).status === 200
      }, 120_000)
      return api
    }
    let apiServer = await startApiServer()

    writeFileSync(adminKubeconfig, JSON.stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "testbed", cluster: { server, "certificate-authority": caFile } }],
      users: [{ name: "admin", user: { token: adminToken } }],
      contexts: [{ name: "testbed", context: { cluster: "testbed", user: "admin", namespace: "default" } }],
      "current-context": "testbed"
    }, null, 2), { mode: 0o600 })

    const kubectl = (args: ReadonlyArray<string>, input?: string) =>
      run(toolPath("kubectl"), ["--kubeconfig", adminKubeconfig, ...args], input)
    const apply = async (manifest: string) => {
      const r = await kubectl(["apply", "-f", "-"], manifest)
      if (r.code !== 0) throw new Error(`kubectl apply failed: ${r.stderr}`)
    }

    log("kube-controller-manager, kube-scheduler")
    procs.push(startProcess("kube-controller-manager", toolPath("kube-controller-manager"), [
      `--kubeconfig=${adminKubeconfig}`,
      "--leader-elect=false",
      `--service-account-private-key-file=${saKey}`,
      `--root-ca-file=${caFile}`,
      "--bind-address=127.0.0.1",
      "--secure-port=0",
      "--use-service-account-credentials=false"
    ], logs))
    procs.push(startProcess("kube-scheduler", toolPath("kube-scheduler"), [
      `--kubeconfig=${adminKubeconfig}`,
      "--leader-elect=false",
      "--secure-port=0"
    ], logs))

    const kwok = kwokFiles({ port: options.fallbackForwardPort ?? 1 })
    await apply(kwok.objects)
    const kwokConfig = path.join(dir, "kwok.yaml")
    writeFileSync(kwokConfig, kwok.config)
    const nodes = options.nodes ?? defaultNodes
    await apply(JSON.stringify({ apiVersion: "v1", kind: "List", items: nodes.map(nodeObject) }))
    log(`kwok: kubelets of ${nodes.map((n) => n.name).join(", ")} on 127.0.0.1:${kubeletPort}`)
    const kwokProc = startProcess("kwok", toolPath("kwok"), [
      `--kubeconfig=${adminKubeconfig}`,
      `--config=${kwokConfig}`,
      "--manage-all-nodes=true",
      "--node-ip=127.0.0.1",
      `--node-port=${kubeletPort}`,
      `--server-address=127.0.0.1:${kubeletPort}`,
      // The API server does not verify kubelet certificates here: its own self-signed pair serves.
      `--tls-cert-file=${caFile}`,
      `--tls-private-key-file=${path.join(certs, "apiserver.key")}`
    ], logs)
    procs.push(kwokProc)

    // Ready for sessions: every node Ready without the not-ready taint (controller-manager), and the
    // default ServiceAccount exists (pod admission needs it).
    await waitReady(kwokProc, "nodes ready", async () => {
      const r = await apiGet(server, caFile, adminToken, "/api/v1/nodes")
      const list = JSON.parse(r.body) as { items?: Array<{ spec?: { taints?: Array<{ key: string }> }; status?: { conditions?: Array<{ type: string; status: string }> } }> }
      const items = list.items ?? []
      return items.length === nodes.length && items.every((n) =>
        n.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true &&
        !(n.spec?.taints ?? []).some((t) => t.key.startsWith("node.kubernetes.io/not-ready")))
    }, 120_000)
    await waitReady(kwokProc, "default ServiceAccount", async () =>
      (await apiGet(server, caFile, adminToken, "/api/v1/namespaces/default/serviceaccounts/default")).status === 200, 60_000)
    log(`cluster ready in ${((Date.now() - started) / 1000).toFixed(1)}s (${dir})`)

    let apiRunning = true
    const stopApiServer = async () => {
      if (!apiRunning) return
      apiRunning = false
      await apiServer.stop()
      procs.splice(procs.indexOf(apiServer), 1)
    }
    const restartedApiServer = async () => {
      if (apiRunning) return
      apiServer = await startApiServer()
      apiRunning = true
    }
    const restartApiServer = async () => {
      await stopApiServer()
      await restartedApiServer()
    }
    const deleteFromEtcd = async (key: string) => {
      await etcdPost(etcdEndpoint, "kv/deleterange", { key: b64(key) })
    }

    const compactEtcd = async () => {
      // A write makes the current revision one that no Kubernetes object has, then everything before it goes.
      const put = await etcdPost(etcdEndpoint, "kv/put", { key: b64("/streamspace-testbed/compact"), value: b64(String(Date.now())) })
      const revision = Number(put.header?.revision)
      await etcdPost(etcdEndpoint, "kv/compaction", { revision: String(revision), physical: true })
      return revision
    }

    const bin = (name: "kubectl" | "helm") => toolPath(name)
    return {
      dir,
      server,
      caFile,
      adminKubeconfig,
      adminToken,
      bin,
      kubectl,
      apply,
      stopApiServer,
      startApiServer: restartedApiServer,
      restartApiServer,
      compactEtcd,
      deleteFromEtcd,
      stop
    }
  } catch (e) {
    await stop()
    throw e
  }
}

export class RealCluster extends Context.Service<RealCluster, RealClusterShape>()("testbed/RealCluster") {
  /** A cluster for the scope: everything stops (and a temporary folder is removed) when it closes. */
  static readonly layer = (options: RealClusterOptions = {}): Layer.Layer<RealCluster> =>
    Layer.effect(
      RealCluster,
      Effect.acquireRelease(
        Effect.promise(() => startRealCluster(options)),
        (cluster) => Effect.promise(() => cluster.stop())
      )
    )
}
