// CLI: runs a kube-testserver until SIGINT/SIGTERM and writes a kubeconfig for it.
//   node packages/kube-testserver/src/main.ts --port 6443 --kubeconfig-out ./kubeconfig
import { NodeRuntime } from "@effect/platform-node"
import { Effect } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { parseArgs } from "node:util"
import { KubeTestServer } from "./KubeTestServer.ts"

const usage = `usage: kube-testserver [options]
  --port N                 listen port (default 6443; 0 = any)
  --host H                 listen address (default 127.0.0.1)
  --kubeconfig-out FILE    write an admin kubeconfig here
  --namespace NS           namespace of the kubeconfig's context (default streamspace)
  --token T                admin bearer token (default admin-token)
  --start-delay-ms N       kubelet delay from pod creation to Running (default 500)
  --cannot-pull IMAGES     comma-separated images that fail with ImagePullBackOff
  --rbac FILE              Role/RoleBinding YAML (or a bare PolicyRule list) to load
  --service-account NS/NAME  create this service account, bind a bare rule list to it, and
                           write its kubeconfig to <kubeconfig-out>.<NAME> (token file: <...>.token)
  --forward-all PORT=HOST:PORT  forward every pod's PORT to HOST:PORT (e.g. 5900=127.0.0.1:5901)
  --log                    log each request to stderr`

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "6443" },
    host: { type: "string", default: "127.0.0.1" },
    "kubeconfig-out": { type: "string" },
    namespace: { type: "string", default: "streamspace" },
    token: { type: "string", default: "admin-token" },
    "start-delay-ms": { type: "string", default: "500" },
    "cannot-pull": { type: "string" },
    rbac: { type: "string" },
    "service-account": { type: "string" },
    "forward-all": { type: "string" },
    log: { type: "boolean", default: false },
    help: { type: "boolean", default: false }
  }
})

if (values.help) {
  console.log(usage)
  process.exit(0)
}

const forward = values["forward-all"] === undefined ? undefined : /^(\d+)=(.+):(\d+)$/.exec(values["forward-all"])
if (values["forward-all"] !== undefined && forward === null) {
  console.error(`--forward-all: expected PORT=HOST:PORT, got ${values["forward-all"]}`)
  process.exit(2)
}
const sa = values["service-account"]?.split("/")
if (sa !== undefined && sa.length !== 2) {
  console.error(`--service-account: expected NAMESPACE/NAME, got ${values["service-account"]}`)
  process.exit(2)
}

const program = Effect.gen(function*() {
  const kube = yield* KubeTestServer
  const namespace = values.namespace
  if (kube.get("namespaces", "", namespace) === undefined) kube.put("namespaces", { metadata: { name: namespace }, spec: { finalizers: ["kubernetes"] }, status: { phase: "Active" } })
  if (forward !== null && forward !== undefined) {
    const [, fromPort, host, toPort] = forward
    kube.setDefaultPortForward((_ns, _pod, port) => (port === Number(fromPort) ? { host: host!, port: Number(toPort) } : undefined))
  }
  const out = values["kubeconfig-out"]
  if (sa !== undefined) {
    const [saNs, saName] = sa as [string, string]
    const token = kube.addServiceAccount(saNs, saName)
    if (values.rbac !== undefined) kube.loadRbac(readFileSync(values.rbac, "utf8"), { namespace: saNs, roleName: saName, bindServiceAccount: { namespace: saNs, name: saName } })
    if (out !== undefined) {
      writeFileSync(`${out}.${saName}`, kube.kubeconfigFor(token, { namespace: saNs, user: saName }))
      writeFileSync(`${out}.${saName}.token`, token)
    }
  } else if (values.rbac !== undefined) kube.loadRbac(readFileSync(values.rbac, "utf8"), { namespace })
  if (out !== undefined) writeFileSync(out, kube.kubeconfigFor(kube.adminToken, { namespace, user: "admin" }))
  yield* Effect.log(`kube-testserver listening on ${kube.url}${out !== undefined ? `; kubeconfig written to ${out}` : ""}`)
  return yield* Effect.never
}).pipe(
  Effect.provide(KubeTestServer.layer({
    host: values.host,
    port: Number(values.port),
    adminToken: values.token,
    log: values.log,
    kubelet: {
      startDelayMs: Number(values["start-delay-ms"]),
      cannotPull: values["cannot-pull"]?.split(",").filter((s) => s !== "") ?? []
    }
  }))
)

NodeRuntime.runMain(program)
