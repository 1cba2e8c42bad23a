// Cluster-side test support: a kube-testserver per test, the agent's config pointed at it through a real
// kubeconfig file, the agent's Role from the Helm chart, and session specs.
import { KubeTestServer, type KubeTestServerHandle, type ServerOptions } from "@streamspace/kube-testserver"
import type { SessionId, SessionSpec, TemplateName, UserId } from "@streamspace/protocol"
import { Effect, Layer } from "effect"
import type { Scope } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { AgentConfig } from "../../src/AgentConfig.ts"
import { Kubernetes, type KubernetesOptions } from "../../src/Kubernetes.ts"
import { SessionStore } from "../../src/SessionStore.ts"
import { type AuditProxy, makeAuditProxy } from "./clusterAudit.ts"

export const AGENT_ID = "agent-test"
export const NAMESPACE = "streamspace"

/** The name files/role-rules.yaml puts in the Secret rule's resourceNames; the chart replaces it with the credential Secret's. */
export const CREDENTIAL_SECRET_PLACEHOLDER = "AGENT_CREDENTIAL_SECRET"
/** AGENT_CREDENTIAL_SECRET's default, the Secret the test clusters' Role names. */
export const CREDENTIAL_SECRET = "streamspace-agent-credential"
export const ROLE_RULES_PATH = fileURLToPath(new URL("../../../../helm/streamspace-agent/files/role-rules.yaml", import.meta.url))

/** Short retries and timeouts, so fault tests finish quickly. */
export const fastKube: KubernetesOptions = {
  retryBase: "20 millis",
  retryTimes: 4,
  maxRetryAfter: "2 seconds",
  requestTimeout: "5 seconds",
  failingAfter: "300 millis"
}

export interface Cluster {
  readonly server: KubeTestServerHandle
  /** Agent environment pointing at the server (KUBECONFIG is a file written for this test). */
  readonly env: Record<string, string>
  readonly dir: string
  /** The recording proxy the agent talks through, when asked for. */
  readonly audit: AuditProxy | undefined
  /** AgentConfig for this cluster, with `extra` variables on top. */
  readonly config: (extra?: Record<string, string>) => Layer.Layer<AgentConfig, unknown>
  /** Kubernetes (fast retries) + SessionStore, with AgentConfig. */
  readonly store: (extra?: Record<string, string>, options?: KubernetesOptions) => Layer.Layer<SessionStore | Kubernetes | AgentConfig, unknown>
}

export interface ClusterOptions extends ServerOptions {
  /** Run the agent as a ServiceAccount bound to the chart's Role (default: cluster admin). */
  readonly rbac?: boolean | string
  /** Route the agent's calls through an auditing proxy. */
  readonly audit?: boolean
}

/** Starts a kube-testserver for the current scope; the kubelet runs pods within 0-20 ms. */
export const makeCluster = (options: ClusterOptions = {}): Effect.Effect<Cluster, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const server = yield* KubeTestServer.make({ kubelet: { startDelayMs: 10, terminationDelayMs: 10, pvcBindDelayMs: 10 }, ...options })
    const dir = yield* Effect.acquireRelease(
      Effect.sync(() => mkdtempSync(join(tmpdir(), "agent-cluster-"))),
      (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
    )
    let kubeconfig = server.kubeconfigFor(server.adminToken, { namespace: NAMESPACE, user: "admin" })
    if (options.rbac !== undefined && options.rbac !== false) {
      // As templates/rbac.yaml does: the Secret rule names the agent's credential Secret, which the chart creates empty.
      const rules = (typeof options.rbac === "string" ? options.rbac : readFileSync(ROLE_RULES_PATH, "utf8"))
        .replaceAll(CREDENTIAL_SECRET_PLACEHOLDER, CREDENTIAL_SECRET)
      server.put("secrets", { metadata: { name: CREDENTIAL_SECRET, namespace: NAMESPACE }, type: "Opaque" })
      const token = server.addServiceAccount(NAMESPACE, "streamspace-agent")
      server.loadRbac(rules, {
        namespace: NAMESPACE,
        roleName: "streamspace-agent",
        bindServiceAccount: { namespace: NAMESPACE, name: "streamspace-agent" }
      })
      kubeconfig = server.kubeconfigFor(token, { namespace: NAMESPACE, user: "streamspace-agent" })
    }
    let audit: AuditProxy | undefined
    if (options.audit === true) {
      const u = new URL(server.url)
      audit = yield* makeAuditProxy({ host: u.hostname, port: Number(u.port) })
      kubeconfig = kubeconfig.replace(server.url, audit.url)
    }
    const kubeconfigPath = join(dir, "kubeconfig")
    writeFileSync(kubeconfigPath, kubeconfig)
    const env: Record<string, string> = {
      AGENT_ID,
      CONTROL_PLANE_URL: "ws://127.0.0.1:9",
      NAMESPACE,
      KUBECONFIG: kubeconfigPath,
      AGENT_CREDENTIAL_FILE: join(dir, "credential")
    }
    const config = (extra: Record<string, string> = {}) => AgentConfig.layerFromRecord({ ...env, ...extra })
    const store = (extra: Record<string, string> = {}, kubeOptions: KubernetesOptions = fastKube) =>
      SessionStore.layerNoDeps.pipe(
        Layer.provideMerge(Kubernetes.layerWith(kubeOptions)),
        Layer.provideMerge(config(extra))
      )
    return { server, env, dir, audit, config, store }
  })

export const sid = (s: string) => s as SessionId

export const sessionSpec = (overrides: Partial<SessionSpec> = {}): SessionSpec => ({
  user_id: "alice" as UserId,
  template: "firefox" as TemplateName,
  image: "streamspace/firefox:1.0",
  persistent_home: false,
  vnc_port: 5900,
  ...overrides
})
