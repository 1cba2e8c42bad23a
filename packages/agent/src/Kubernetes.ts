// Kubernetes: the agent's cluster backend and the only importer of @kubernetes/client-node (with its
// internal/kube* helpers). Owns the client (in-cluster config, or KUBECONFIG; token files re-read when
// rotated: internal/kubeAuth.ts), the pod watch, the credential Secret, port-forwards and capacity; the
// session objects (Pod, Service, per-user home PVC), warm pools, homes and the pod list are
// internal/kubeSessions.ts. How each call is timed out, retried and recorded is internal/kubeCall.ts;
// how the API has been answering, internal/apiHealth.ts.
import * as k8s from "@kubernetes/client-node"
import type { Capacity, HomeVolume, SessionId, SessionSpec, UserId, WarmPool } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer, Option, Stream } from "effect"
import type { Scope } from "effect"
import { readFileSync } from "node:fs"
import { parse as parseYaml } from "yaml"
import { AgentConfig } from "./AgentConfig.ts"
import type { AgentConfigShape } from "./AgentConfig.ts"
import { type ClusterHealth, makeApiHealth } from "./internal/apiHealth.ts"
import { makeCapacity } from "./internal/capacity.ts"
import { makeCall, orNone } from "./internal/kubeCall.ts"
import { fromStatus, fromThrown, KubernetesError, reasonOfCode } from "./internal/kubeError.ts"
import { agentSelector, type Json, type PodView } from "./internal/kubeObjects.ts"
import { inClusterOptions, kubeconfigTokenFiles, tokenFileAuthenticator, withTokenFiles } from "./internal/kubeAuth.ts"
import { type PodEvent, watchPods } from "./internal/podWatch.ts"
import { openPortForward, type PortForwardStream } from "./internal/portforward.ts"
import type { Client, PodList } from "./internal/kubeClient.ts"
import {
  createSession,
  deleteHome,
  deleteSession,
  ensureWarmPool,
  hibernateSession,
  listHomes,
  listSessionPods,
  pruneWarmPools,
  readPod,
  resumeSession
} from "./internal/kubeSessions.ts"

export type { ClusterHealth } from "./internal/apiHealth.ts"
export { capacityFromConfig, capacityFromQuotas } from "./internal/capacity.ts"
export { KubernetesError } from "./internal/kubeError.ts"
export type { PodList } from "./internal/kubeClient.ts"
export type { PodEvent } from "./internal/podWatch.ts"
export type { PortForwardRead, PortForwardStream } from "./internal/portforward.ts"

export interface KubernetesShape {
  readonly namespace: string
  /** Creates (or adopts) the session's home PVC, Service and Pod; rolls back what it made on failure. Returns the pod. */
  readonly createSession: (id: SessionId, spec: SessionSpec) => Effect.Effect<PodView, KubernetesError>
  /** Deletes the session's Pod and Service (the home PVC stays); missing objects are fine. */
  readonly deleteSession: (id: SessionId) => Effect.Effect<void, KubernetesError>
  /**
   * Hibernates a session: deletes its Pod and Service, keeps the home PVC, and waits until the pod is gone (so
   * it holds no CPU or memory on a node any more). Returns the name of the home PVC the pod mounted, if any.
   */
  readonly hibernateSession: (id: SessionId) => Effect.Effect<Option.Option<string>, KubernetesError>
  /**
   * Starts a hibernated session again with a new Pod and Service. A persistent home must still exist and be the
   * user's (NotFound otherwise: never an empty home in its place). Returns the pod.
   */
  readonly resumeSession: (id: SessionId, spec: SessionSpec) => Effect.Effect<PodView, KubernetesError>
  /** The pod of a session (named after it, or a warm pod it claimed). */
  readonly readPod: (session: SessionId) => Effect.Effect<Option.Option<PodView>, KubernetesError>
  /** Keeps `pool.size` warm pods of the pool (pods of an older spec of it are replaced); size 0 removes them. */
  readonly ensureWarmPool: (pool: WarmPool) => Effect.Effect<void, KubernetesError>
  /** Removes the warm pods of every template not in `keep`. */
  readonly pruneWarmPools: (keep: ReadonlySet<string>) => Effect.Effect<void, KubernetesError>
  /** This agent's home PVCs, each with its owner, size and whether a pod mounts it. */
  readonly listHomes: Effect.Effect<ReadonlyArray<HomeVolume>, KubernetesError>
  /**
   * Deletes the home PVC `name` of `user`: `absent` when there is none, `in_use` (nothing deleted) while a pod
   * mounts it; a PVC of another user or not managed by an agent is refused (Invalid).
   */
  readonly deleteHome: (name: string, user: UserId) => Effect.Effect<"deleted" | "absent" | "in_use", KubernetesError>
  /** Every pod labelled for this agent, and the list's resourceVersion to watch from. */
  readonly listSessionPods: Effect.Effect<PodList, KubernetesError>
  /** Pod events after `resourceVersion`; ends when the server closes the watch, fails with `Expired` on 410. */
  readonly watchSessionPods: (resourceVersion: string) => Stream.Stream<PodEvent, KubernetesError>
  readonly readSecret: (name: string) => Effect.Effect<Option.Option<Record<string, string>>, KubernetesError>
  /** Creates the Secret or replaces its data. */
  readonly writeSecret: (name: string, data: Record<string, string>) => Effect.Effect<void, KubernetesError>
  /** A port-forward stream to the session's pod at `port`, closed with the scope. */
  readonly portForward: (session: SessionId, port: number) => Effect.Effect<PortForwardStream, KubernetesError, Scope.Scope>
  /** From a ResourceQuota in the namespace when one is readable, else MAX_SESSIONS x the session defaults. */
  readonly capacity: Effect.Effect<Capacity>
  /** How the API has been answering: degraded after recent errors, failing after a minute of nothing but errors. */
  readonly health: Effect.Effect<ClusterHealth>
}

/** Tunables with production defaults; tests shrink them. */
export interface KubernetesOptions {
  /** First retry delay; doubles each attempt (full jitter). */
  readonly retryBase?: Duration.Input
  /** Retries after the first attempt for 409 Conflict, 429, 5xx, network errors and timeouts. */
  readonly retryTimes?: number
  /** Longest wait honoured from a Retry-After header. */
  readonly maxRetryAfter?: Duration.Input
  /** A REST call without an answer by then counts as a Timeout. */
  readonly requestTimeout?: Duration.Input
  /** Errors within this window make the health `degraded`. */
  readonly degradedWindow?: Duration.Input
  /** Only errors for this long make the health `failing`. */
  readonly failingAfter?: Duration.Input
  /** Bytes buffered from a port-forward before its socket is paused. */
  readonly portForwardHighWater?: number
}

const DEFAULTS = {
  retryBase: "200 millis",
  retryTimes: 5,
  maxRetryAfter: "30 seconds",
  requestTimeout: "30 seconds",
  degradedWindow: "2 minutes",
  failingAfter: "1 minute",
  portForwardHighWater: 128 * 1024
} as const

/** Maps whatever the client threw (ApiException, fetch TypeError, watch error) to a KubernetesError. */
export const toKubernetesError = (what: string, e: unknown): KubernetesError =>
  e instanceof k8s.ApiException
    ? fromStatus(what, e.code, (e as k8s.ApiException<unknown>).body, e.headers)
    : fromThrown(what, e)

/**
 * The client configuration: KUBECONFIG when set, else in-cluster (the API server from KUBERNETES_SERVICE_HOST
 * and _PORT, the service account's files from SERVICE_ACCOUNT_DIR). Token files, the in-cluster one and
 * kubeconfig users' `tokenFile:`, are read again whenever they change (the kubelet rotates the token).
 */
const loadKubeConfig = (config: AgentConfigShape): Effect.Effect<{ readonly kc: k8s.KubeConfig; readonly invalidateTokens: () => void }, KubernetesError> =>
  Effect.try({
    try: () => {
      const kc = new k8s.KubeConfig()
      const tokens = tokenFileAuthenticator()
      kc.addAuthenticator(tokens)
      if (config.kubeconfig !== undefined) {
        kc.loadFromFile(config.kubeconfig)
        const files = kubeconfigTokenFiles(parseYaml(readFileSync(config.kubeconfig, "utf8")), config.kubeconfig)
        if (files.size > 0) {
          kc.loadFromOptions({ clusters: kc.clusters, contexts: kc.contexts, currentContext: kc.currentContext, users: withTokenFiles(kc.users, files) })
        }
      } else {
        kc.loadFromOptions(inClusterOptions(config.kubernetesServiceHost, config.kubernetesServicePort, config.serviceAccountDir))
      }
      if (kc.getCurrentCluster() === null) throw new Error("no current cluster")
      return { kc, invalidateTokens: tokens.invalidate }
    },
    catch: (e) =>
      new KubernetesError({
        reason: "Config",
        message: config.kubeconfig !== undefined
          ? `cannot load KUBECONFIG ${config.kubeconfig}: ${(e as Error).message}`
          : `cannot load the in-cluster configuration: ${(e as Error).message}`
      })
  })

const loadPodTemplate = (path: string | undefined): Effect.Effect<Json | undefined, KubernetesError> =>
  path === undefined ? Effect.succeed(undefined) : Effect.try({
    try: () => {
      const doc = parseYaml(readFileSync(path, "utf8")) as unknown
      if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("expected a YAML mapping (a Pod)")
      return doc as Json
    },
    catch: (e) => new KubernetesError({ reason: "Config", message: `cannot read SESSION_POD_TEMPLATE ${path}: ${(e as Error).message}` })
  })

// ---- list and watch -------------------------------------------------------------------------------

const watchSessionPods = (c: Client, resourceVersion: string): Stream.Stream<PodEvent, KubernetesError> =>
  watchPods(
    (onEvent, onDone) =>
      c.watcher.watch(
        `/api/v1/namespaces/${c.namespace}/pods`,
        { labelSelector: agentSelector(c.agentId), resourceVersion, allowWatchBookmarks: true },
        onEvent,
        onDone
      ),
    c.apiHealth,
    toKubernetesError
  )

// ---- the credential Secret ------------------------------------------------------------------------

const readSecretObject = (c: Client, name: string) =>
  orNone(c.call("get", "secrets", `read secret ${name}`, () => c.core.readNamespacedSecret({ name, namespace: c.namespace })))

const readSecret = (c: Client) =>
  Effect.fn("Kubernetes.readSecret")(function*(name: string) {
    const secret = yield* readSecretObject(c, name)
    return Option.map(secret, (s) => Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")])))
  })

const writeSecret = (c: Client) =>
  Effect.fn("Kubernetes.writeSecret")(function*(name: string, data: Record<string, string>) {
    const { core, namespace } = c
    // Replacing keeps the labels and annotations already there (the chart creates this Secret: Helm's ownership
    // labels and annotations must survive, or the next `helm upgrade` refuses to adopt it).
    const body = (existing?: k8s.V1Secret): k8s.V1Secret => ({
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        name,
        namespace,
        labels: { "app.kubernetes.io/managed-by": "streamspace-agent", ...existing?.metadata?.labels, agent: c.agentId },
        ...(existing?.metadata?.annotations !== undefined ? { annotations: existing.metadata.annotations } : {}),
        ...(existing?.metadata?.resourceVersion !== undefined ? { resourceVersion: existing.metadata.resourceVersion } : {})
      },
      data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "utf8").toString("base64")]))
    })
    // Read, then replace with the read resourceVersion (409 Conflict: someone wrote in between, go again) or create.
    yield* Effect.gen(function*() {
      const existing = yield* readSecretObject(c, name)
      if (Option.isSome(existing)) {
        yield* c.call("update", "secrets", `replace secret ${name}`, () =>
          core.replaceNamespacedSecret({ name, namespace, body: body(existing.value) }))
      } else {
        yield* c.call("create", "secrets", `create secret ${name}`, () => core.createNamespacedSecret({ namespace, body: body() }))
      }
    }).pipe(Effect.retry({ times: 3, while: (e) => e.reason === "Conflict" || e.reason === "AlreadyExists" }))
  })

// ---- port-forward ------------------------------------------------------------------------------

const portForward = (c: Client) =>
  Effect.fn("Kubernetes.portForward")(function*(session: SessionId, port: number) {
    // A claimed warm pod's name is known once readPod found it (TunnelPool reads the pod before forwarding).
    const pod = c.podNames.get(session) ?? session
    const server = c.kc.getCurrentCluster()!.server.replace(/\/+$/, "")
    const url = `${server.replace(/^http/, "ws")}/api/v1/namespaces/${encodeURIComponent(c.namespace)}/pods/${encodeURIComponent(pod)}/portforward?ports=${port}`
    const wsOptions: Record<string, unknown> = {}
    yield* Effect.tryPromise({
      try: () => c.kc.applyToHTTPSOptions(wsOptions),
      catch: (e) => new KubernetesError({ reason: "Config", message: `port-forward to ${pod}: ${(e as Error).message}` })
    })
    return yield* openPortForward({ url, options: wsOptions }, c.portForwardHighWater).pipe(
      Effect.mapError((r) =>
        r.code === undefined
          ? new KubernetesError({ reason: "Unavailable", message: `port-forward to ${pod}:${port}: ${r.message}` })
          : new KubernetesError({ reason: reasonOfCode(r.code, undefined), message: `port-forward to ${pod}:${port}: ${r.message}`, code: r.code })
      ),
      Effect.tapError((e) => c.apiHealth.recordFailure("get", "pods/portforward", e)),
      Effect.timeoutOrElse({
        duration: c.requestTimeout,
        orElse: () => Effect.fail(new KubernetesError({ reason: "Timeout", message: `port-forward to ${pod}:${port}: no answer within ${Duration.format(c.requestTimeout)}` }))
      })
    )
  })

export const make = (options: KubernetesOptions = {}) =>
  Effect.gen(function*() {
    const config = yield* AgentConfig
    const { kc, invalidateTokens } = yield* loadKubeConfig(config)
    const template = yield* loadPodTemplate(config.sessionPodTemplate)
    const opts = { ...DEFAULTS, ...options }
    const apiHealth = makeApiHealth(opts)
    const call = makeCall(opts, apiHealth, toKubernetesError)
    const c: Client = {
      kc,
      core: kc.makeApiClient(k8s.CoreV1Api),
      watcher: new k8s.Watch(kc),
      agentId: config.agentId,
      namespace: config.namespace,
      defaults: {
        agentId: config.agentId,
        namespace: config.namespace,
        imagePullPolicy: config.sessionImagePullPolicy,
        cpu: config.sessionDefaultCpu,
        memory: config.sessionDefaultMemory,
        storage: config.sessionDefaultStorage,
        ephemeralStorage: config.sessionEphemeralStorageLimit,
        storageClass: config.sessionStorageClass,
        serviceType: config.sessionServiceType
      },
      template,
      // A token rotated between two stats of its file: read every token file again and try once more.
      call: (verb, resource, what, f) =>
        call(verb, resource, what, f).pipe(Effect.retry({ times: 1, while: (e) => e.reason === "Unauthorized" && (invalidateTokens(), true) })),
      apiHealth,
      requestTimeout: Duration.fromInputUnsafe(opts.requestTimeout),
      portForwardHighWater: opts.portForwardHighWater,
      podNames: new Map()
    }
    return Kubernetes.of({
      namespace: c.namespace,
      createSession: createSession(c),
      deleteSession: deleteSession(c),
      hibernateSession: hibernateSession(c),
      resumeSession: resumeSession(c),
      readPod: readPod(c),
      ensureWarmPool: ensureWarmPool(c),
      pruneWarmPools: pruneWarmPools(c),
      listHomes: listHomes(c),
      deleteHome: deleteHome(c),
      listSessionPods: listSessionPods(c),
      watchSessionPods: (resourceVersion) => watchSessionPods(c, resourceVersion),
      readSecret: readSecret(c),
      writeSecret: writeSecret(c),
      portForward: portForward(c),
      capacity: makeCapacity(
        config,
        c.call("list", "resourcequotas", "list resource quotas", () => c.core.listNamespacedResourceQuota({ namespace: c.namespace })).pipe(
          Effect.map((l) => l.items.map((q) => ({ hard: q.spec?.hard ?? {} })))
        )
      ),
      health: apiHealth.health
    })
  })

export class Kubernetes extends Context.Service<Kubernetes, KubernetesShape>()("agent/Kubernetes") {
  /** From AgentConfig: in-cluster config, or the KUBECONFIG file. */
  static readonly layer: Layer.Layer<Kubernetes, KubernetesError, AgentConfig> = Layer.effect(Kubernetes, make())
  /** The same with other tunables (tests: short retries and timeouts). */
  static readonly layerWith = (options: KubernetesOptions): Layer.Layer<Kubernetes, KubernetesError, AgentConfig> =>
    Layer.effect(Kubernetes, make(options))
}
