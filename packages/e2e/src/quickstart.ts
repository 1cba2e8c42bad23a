// The quick start (`npm start`): the control plane, an agent and, without a kubeconfig, a simulated
// demo cluster, in one process. Prints where the web UI is and how to log in; Ctrl-C stops the agent
// gracefully, then the control plane, then the demo cluster (whose objects are kept in DATA_DIR).
import { relaunchWithRuntimeFlags } from "@streamspace/control-plane/relaunch"
import { existsSync } from "node:fs"
import { parseArgs } from "node:util"
import type { LocalStack as LocalStackService } from "./LocalStack.ts"

// The control plane's node flags and allocator setting, as its image runs it: the process replaces itself first.
relaunchWithRuntimeFlags()

const usage = `usage: npm start [-- options]

  --port N            web UI and API port (env PORT, default 8000; 0 picks a free one)
  --host ADDR         listen address (env HOST, default 127.0.0.1: this machine only)
  --data-dir DIR      database, demo cluster and agent credential (env DATA_DIR, default ./data)
  --kubeconfig FILE   run sessions on this cluster instead of the simulated one (env KUBECONFIG)
  -h, --help          this text

Other variables of the control plane and the agent (LOG_LEVEL, LOG_FORMAT, REGION, NAMESPACE, ...) are
passed to both.`

const fail = (message: string): never => {
  process.stderr.write(`quick start: ${message}\n\n${usage}\n`)
  process.exit(2)
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        port: { type: "string" },
        host: { type: "string" },
        "data-dir": { type: "string" },
        kubeconfig: { type: "string" },
        help: { type: "boolean", short: "h", default: false }
      }
    })
  } catch (e) {
    return fail((e as Error).message)
  }
})()
if (values.help) {
  process.stdout.write(`${usage}\n`)
  process.exit(0)
}

const portText = values.port ?? process.env["PORT"] ?? "8000"
const port = /^\d+$/.test(portText) && Number(portText) <= 65535 ? Number(portText) : fail(`PORT=${portText} is not a TCP port (0 to 65535)`)
const kubeconfig = values.kubeconfig ?? (process.env["KUBECONFIG"] || undefined)
const dataDir = values["data-dir"] ?? process.env["DATA_DIR"] ?? "./data"

const banner = (q: LocalStackService["Service"]) => {
  const lines = [
    "",
    "  StreamSpace is running (quick start).",
    "",
    `  Web UI:       ${q.url}`,
    `  Log in:       ${q.loginUrl}`,
    `                (opens the web UI logged in as admin; the link and token are valid for ${process.env["DEV_TOKEN_TTL"] || "8h"})`,
    `  Admin token:  ${q.adminToken}`,
    `                curl -H "Authorization: Bearer <token>" ${q.url}api/v1/sessions`,
    "",
    q.simulated
      ? "  Cluster:      SIMULATED. A local demo cluster (kube-testserver) runs the sessions; each session desktop\n" +
        "                is a synthetic test screen (vnc-testserver), not a real Linux desktop. Use --kubeconfig\n" +
        "                or KUBECONFIG for a real cluster."
      : `  Cluster:      the one in ${q.clusterUrl} (namespace ${process.env["NAMESPACE"] ?? "streamspace"})`,
    `  Agent:        ${q.agentId} ${
      q.agentOnline ? `(online${q.agentApproved ? "; enrolled and approved automatically, as this is a local install" : ""})` : "(NOT online yet: see the log lines above; it keeps retrying)"
    }`,
    `                health and metrics: ${q.agentUrl}/health, ${q.agentUrl}/metrics (the control plane's: ${q.url}metrics)`,
    `  Data:         ${q.dataDir}${q.restoredSessions > 0 ? ` (the demo cluster kept ${q.restoredSessions} session(s) from the last run)` : ""}`,
    "",
    "  Press Ctrl-C to stop. Sessions and data are kept for the next start.",
    ""
  ]
  return lines.join("\n") + "\n"
}

const NodeRuntime = await import("@effect/platform-node/NodeRuntime")
const { Cause, Effect, Exit, Layer, Option, Runtime } = await import("effect")
const { LocalStack } = await import("./LocalStack.ts")

const program = Effect.gen(function*() {
  const q = yield* LocalStack
  yield* Effect.sync(() => process.stdout.write(banner(q)))
  yield* Effect.addFinalizer(() => Effect.sync(() => process.stdout.write("\nquick start: stopping (agent, then control plane, then demo cluster)...\n")))
  return yield* Effect.never
})

const stack = LocalStack.layer({
  port,
  host: values.host ?? process.env["HOST"] ?? "127.0.0.1",
  dataDir,
  kubeconfig,
  demoStartDelayMs: 1500,
  env: process.env
})

process.stdout.write(
  `quick start: starting the control plane, an agent and ${kubeconfig === undefined ? "a simulated demo cluster" : `the cluster in ${kubeconfig}`}` +
    (existsSync(dataDir) ? "" : ` (the first start creates the database in ${dataDir}, which takes a little longer)`) + "...\n"
)

NodeRuntime.runMain(Layer.launch(Layer.effectDiscard(program).pipe(Layer.provide(stack))), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) {
      process.stdout.write("quick start: stopped.\n")
      return onExit(0)
    }
    const error = Cause.findErrorOption(exit.cause)
    const e = Option.isSome(error) ? error.value as { readonly _tag?: string; readonly message?: string; readonly cause?: { readonly code?: string; readonly message?: string } } : undefined
    const text = e?.cause?.code === "EADDRINUSE"
      ? `port ${port} is already in use (another StreamSpace?). Stop what uses it, or pick another port: PORT=${port + 1} npm start`
      : e?._tag === "SettingError"
      ? `configuration error: ${e.message}`
      : e?.message || e?.cause?.message || Cause.pretty(exit.cause)
    process.stderr.write(`quick start: ${text}\n`)
    return Runtime.defaultTeardown(exit, (code) => onExit(code === 0 ? 1 : code))
  }
})
