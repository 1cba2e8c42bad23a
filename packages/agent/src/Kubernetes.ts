// Kubernetes: the agent's cluster backend and the only importer of @kubernetes/client-node. Owns the
// client (in-cluster config, or KUBECONFIG; token files re-read when rotated: internal/kubeAuth.ts), the
// session objects (Pod, Service, per-user home PVC), the pod list/watch, the credential Secret,
// port-forwards and capacity. How each call is timed out, retried and recorded is internal/kubeCall.ts;
// how the API has been answering, internal/apiHealth.ts.
import * as k8s from "@kubernetes/client-node"
import type { Capacity, HomeVolume, SessionId, SessionSpec, UserId, WarmPool } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer, Option, Stream } from "effect"
import type { Scope } from "effect"
import { readFileSync } from "node:fs"
import { parse as parseYaml } from "yaml"
import { AgentConfig } from "./AgentConfig.ts"
import type { AgentConfigShape } from "./AgentConfig.ts"
import { type ApiHealth, type ClusterHealth, makeApiHealth } from "./internal/apiHealth.ts"
import { type ClaimView, homeOfClaim, homeSelector, mountedClaims } from "./internal/homes.ts"
import { makeCapacity } from "./internal/capacity.ts"
import { type Call, ignoreNotFound, makeCall, orNone } from "./internal/kubeCall.ts"
import { fromStatus, fromThrown, KubernetesError, reasonOfCode } from "./internal/kubeError.ts"
import {
  agentSelector,
  buildHomeClaim,
  LABEL_SESSION,
  buildPod,
  buildService,
  homeClaimName,
  homeClaimOf,
  isOurs,
  isUsersHome,
  type Json,
  type PodView,
  type SessionDefaults
} from "./internal/kubeObjects.ts"
import { inClusterOptions, kubeconfigTokenFiles, tokenFileAuthenticator, withTokenFiles } from "./internal/kubeAuth.ts"
import { buildWarmPod, claimableHash, claimedLabels, isWarmReady, LABEL_POOL_SPEC, poolHash, poolSelector } from "./internal/warmPool.ts"
import { type PodEvent, watchPods } from "./internal/podWatch.ts"
import { openPortForward, type PortForwardStream } from "./internal/portforward.ts"

export type { ClusterHealth } from "./internal/apiHealth.ts"
export { capacityFromConfig, capacityFromQuotas } from "./internal/capacity.ts"
export { KubernetesError } from "./internal/kubeError.ts"
export type { PodEvent } from "./internal/podWatch.ts"
export type { PortForwardRead, PortForwardStream } from "./internal/portforward.ts"

export interface PodList {
  readonly items: ReadonlyArray<PodView>
  readonly resourceVersion: string
}

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

/** What every operation below works with: the client, this agent's namespace and labels, and the call policy. */
interface Client {
  readonly kc: k8s.KubeConfig
  readonly core: k8s.CoreV1Api
  readonly watcher: k8s.Watch
  readonly agentId: string
  readonly namespace: string
  readonly defaults: SessionDefaults
  readonly template: Json | undefined
  readonly call: Call
  readonly apiHealth: ApiHealth
  readonly requestTimeout: Duration.Duration
  readonly portForwardHighWater: number
  /** Sessions whose pod is a claimed warm pod, by pod name (their pod is not named after them). */
  readonly podNames: Map<SessionId, string>
}

// ---- session objects ------------------------------------------------------------------------------

/** Creates `body`; on AlreadyExists reads the existing object and keeps it when `mine` says so. */
const createOrAdopt = <A extends { metadata?: k8s.V1ObjectMeta }>(
  c: Client,
  resource: string,
  name: string,
  create: () => Promise<A>,
  read: () => Promise<A>,
  mine: (existing: A) => boolean
): Effect.Effect<{ readonly object: A; readonly created: boolean }, KubernetesError> =>
  c.call("create", resource, `create ${resource} ${name}`, create).pipe(
    Effect.map((object) => ({ object, created: true })),
    Effect.catchIf((e) => e.reason === "AlreadyExists", (e) =>
      c.call("get", resource, `read ${resource} ${name}`, read).pipe(
        Effect.flatMap((existing) =>
          mine(existing)
            ? Effect.succeed({ object: existing, created: false })
            : Effect.fail(new KubernetesError({ reason: "AlreadyExists", message: `${e.message}, and it is not managed by this agent for this session`, code: 409 }))
        )
      ))
  )

const deleteService = (c: Client, id: SessionId) =>
  ignoreNotFound(c.call("delete", "services", `delete service ${id}`, () => c.core.deleteNamespacedService({ name: id, namespace: c.namespace })))

/** The name of a session's pod: its id, or the warm pod it claimed (remembered, else found by its label). */
const podNameOf = (c: Client, id: SessionId): Effect.Effect<string, KubernetesError> =>
  Effect.gen(function*() {
    const known = c.podNames.get(id)
    if (known !== undefined) return known
    const byLabel: k8s.V1PodList = yield* c.call("list", "pods", `find the pod of session ${id}`, () =>
      c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: `${agentSelector(c.agentId)},${LABEL_SESSION}=${id}` }))
    const name = byLabel.items.find((p) => p.metadata?.name !== undefined && p.metadata.name !== id)?.metadata?.name
    if (name !== undefined) c.podNames.set(id, name)
    return name ?? id
  })

const deletePodNamed = (c: Client, name: string) =>
  orNone(c.call("delete", "pods", `delete pod ${name}`, () => c.core.deleteNamespacedPod({ name, namespace: c.namespace })))

const deletePod = (c: Client, id: SessionId) =>
  Effect.gen(function*() {
    const known = c.podNames.get(id)
    // Most pods are named after their session; only when there is none is it looked up by label.
    const gone = yield* deletePodNamed(c, known ?? id)
    if (Option.isNone(gone) && known === undefined) {
      const other = yield* podNameOf(c, id)
      if (other !== id) yield* deletePodNamed(c, other)
    }
    c.podNames.delete(id)
  })

// ---- warm pools -----------------------------------------------------------------------------------

/** Takes a ready warm pod for the session by relabelling it (a replace with its resourceVersion, so two creates never take the same pod). */
const claimWarmPod = (c: Client, id: SessionId, spec: SessionSpec): Effect.Effect<Option.Option<PodView>, KubernetesError> =>
  Effect.gen(function*() {
    const hash = claimableHash(spec)
    if (hash === undefined) return Option.none()
    const list: k8s.V1PodList = yield* c.call("list", "pods", "list warm pods", () =>
      c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: `${agentSelector(c.agentId)},${LABEL_POOL_SPEC}=${hash}` }))
    for (const pod of list.items) {
      if (!isWarmReady(pod as PodView) || pod.metadata?.name === undefined) continue
      const name = pod.metadata.name
      const body: k8s.V1Pod = { ...pod, metadata: { ...pod.metadata, labels: claimedLabels(pod as PodView, c.agentId, id, spec) } }
      // Someone else claimed it first (409): try the next one; not retried like other conflicts.
      const claimed = yield* c.call("update", "pods", `claim warm pod ${name}`, () =>
        c.core.replaceNamespacedPod({ name, namespace: c.namespace, body }).catch((e) => (e instanceof k8s.ApiException && e.code === 409 ? null : Promise.reject(e))))
      if (claimed === null) continue
      c.podNames.set(id, name)
      return Option.some(claimed as PodView)
    }
    return Option.none()
  })

const ensureWarmPool = (c: Client) =>
  Effect.fn("Kubernetes.ensureWarmPool")(function*(pool: WarmPool) {
    const hash = poolHash(pool)
    const list: k8s.V1PodList = yield* c.call("list", "pods", `list warm pods of ${pool.template}`, () =>
      c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: poolSelector(c.agentId, pool.template) }))
    const live = list.items.filter((p) => p.metadata?.deletionTimestamp == null)
    const current = live.filter((p) => p.metadata?.labels?.[LABEL_POOL_SPEC] === hash)
    const surplus = [...live.filter((p) => p.metadata?.labels?.[LABEL_POOL_SPEC] !== hash), ...current.slice(pool.size)]
    for (const p of surplus) {
      yield* ignoreNotFound(c.call("delete", "pods", `delete warm pod ${p.metadata!.name}`, () => c.core.deleteNamespacedPod({ name: p.metadata!.name!, namespace: c.namespace })))
    }
    for (let i = current.length; i < pool.size; i++) {
      yield* c.call("create", "pods", `create warm pod of ${pool.template}`, () =>
        c.core.createNamespacedPod({ namespace: c.namespace, body: buildWarmPod(c.defaults, pool, c.template) as k8s.V1Pod }))
    }
  })

const pruneWarmPools = (c: Client) =>
  Effect.fn("Kubernetes.pruneWarmPools")(function*(keep: ReadonlySet<string>) {
    const list: k8s.V1PodList = yield* c.call("list", "pods", "list warm pods", () =>
      c.core.listNamespacedPod({ namespace: c.namespace, labelSelector: poolSelector(c.agentId) }))
    for (const p of list.items) {
      if (keep.has(p.metadata?.labels?.["streamspace.io/warm-pool"] ?? "") || p.metadata?.deletionTimestamp != null) continue
      yield* ignoreNotFound(c.call("delete", "pods", `delete warm pod ${p.metadata!.name}`, () => c.core.deleteNamespacedPod({ name: p.metadata!.name!, namespace: c.namespace })))
    }
  })

/** The user's home PVC, created once and reused by each of their sessions. */
const ensureHome = (c: Client, user: UserId, shared: boolean) => {
  const name = homeClaimName(user)
  return createOrAdopt(
    c,
    "persistentvolumeclaims",
    name,
    () => c.core.createNamespacedPersistentVolumeClaim({ namespace: c.namespace, body: buildHomeClaim(c.defaults, user, shared) as k8s.V1PersistentVolumeClaim }),
    () => c.core.readNamespacedPersistentVolumeClaim({ name, namespace: c.namespace }),
    (claim) => isUsersHome(claim.metadata, user)
  )
}

const createSession = (c: Client) =>
  Effect.fn("Kubernetes.createSession")(function*(id: SessionId, spec: SessionSpec) {
    yield* Effect.annotateCurrentSpan({ "session.id": id })
    const { core, namespace } = c
    if (spec.persistent_home) yield* ensureHome(c, spec.user_id, spec.shared_home === true)
    else if (claimableHash(spec) !== undefined) {
      // A warm pod claimed for this session already (a create re-sent, perhaps to a restarted agent) is adopted;
      // else a warm pod of the same spec that is running already is taken. Either gets the session's Service.
      const claimedBefore = yield* podNameOf(c, id)
      const warm = claimedBefore !== id
        ? yield* orNone(c.call("get", "pods", `read pod ${claimedBefore}`, () => core.readNamespacedPod({ name: claimedBefore, namespace }))).pipe(
          Effect.map(Option.map((p) => p as PodView))
        )
        : yield* claimWarmPod(c, id, spec)
      if (Option.isSome(warm)) {
        yield* createOrAdopt(
          c,
          "services",
          id,
          () => core.createNamespacedService({ namespace, body: buildService(c.defaults, id, spec) as k8s.V1Service }),
          () => core.readNamespacedService({ name: id, namespace }),
          (s) => isOurs(s.metadata, c.agentId, id)
        )
        return warm.value
      }
    }
    let madeService = false
    let madePod = false
    return yield* Effect.gen(function*() {
      const svc = yield* createOrAdopt(
        c,
        "services",
        id,
        () => core.createNamespacedService({ namespace, body: buildService(c.defaults, id, spec) as k8s.V1Service }),
        () => core.readNamespacedService({ name: id, namespace }),
        (s) => isOurs(s.metadata, c.agentId, id)
      )
      madeService = svc.created
      const pod = yield* createOrAdopt(
        c,
        "pods",
        id,
        () => core.createNamespacedPod({ namespace, body: buildPod({ id, spec, defaults: c.defaults, template: c.template }) as k8s.V1Pod }),
        () => core.readNamespacedPod({ name: id, namespace }),
        (p) => isOurs(p.metadata, c.agentId, id)
      )
      madePod = pod.created
      if (!pod.created && pod.object.metadata?.deletionTimestamp != null) {
        return yield* new KubernetesError({ reason: "Conflict", message: `pod ${id} is still terminating from an earlier session; try again shortly` })
      }
      return pod.object as PodView
    }).pipe(
      // Roll back what this call made (the home PVC stays: it is the user's, and reused next time).
      Effect.onExit((exit) =>
        exit._tag === "Success" ? Effect.void : Effect.gen(function*() {
          if (madePod) yield* deletePod(c, id).pipe(Effect.ignore)
          if (madeService) yield* deleteService(c, id).pipe(Effect.ignore)
          yield* Effect.logWarning(`create of session ${id} failed; rolled back the objects it made`)
        })
      )
    )
  })

const deleteSession = (c: Client) =>
  Effect.fn("Kubernetes.deleteSession")(function*(id: SessionId) {
    yield* Effect.annotateCurrentSpan({ "session.id": id })
    yield* Effect.all([deletePod(c, id), deleteService(c, id)], { concurrency: 2, discard: true })
  })

/** How often a hibernate checks whether the deleted pod is gone. */
const GONE_POLL = Duration.millis(250)

const hibernateSession = (c: Client) =>
  Effect.fn("Kubernetes.hibernateSession")(function*(id: SessionId) {
    yield* Effect.annotateCurrentSpan({ "session.id": id })
    const before = yield* readPod(c)(id)
    const claim = Option.flatMap(before, (p) => Option.fromUndefinedOr(homeClaimOf(p)))
    yield* Effect.all([deletePod(c, id), deleteService(c, id)], { concurrency: 2, discard: true })
    // The pod terminates gracefully; hibernated means it is gone. The command's deadline bounds the wait.
    while (Option.isSome(yield* readPod(c)(id))) yield* Effect.sleep(GONE_POLL)
    return claim
  })

const resumeSession = (c: Client) =>
  Effect.fn("Kubernetes.resumeSession")(function*(id: SessionId, spec: SessionSpec) {
    yield* Effect.annotateCurrentSpan({ "session.id": id })
    if (spec.persistent_home) {
      const name = homeClaimName(spec.user_id)
      const claim = yield* orNone(c.call("get", "persistentvolumeclaims", `read persistentvolumeclaim ${name}`, () =>
        c.core.readNamespacedPersistentVolumeClaim({ name, namespace: c.namespace })))
      if (Option.isNone(claim) || claim.value.metadata?.deletionTimestamp != null || !isUsersHome(claim.value.metadata, spec.user_id)) {
        return yield* new KubernetesError({
          reason: "NotFound",
          message: `the home volume ${name} of session ${id} no longer exists; the session cannot be resumed`,
          code: 404
        })
      }
    }
    return yield* createSession(c)(id, spec)
  })

const readPod = (c: Client) =>
  Effect.fn("Kubernetes.readPod")(function*(session: SessionId) {
    const name = c.podNames.get(session) ?? session
    const pod = (yield* orNone(c.call("get", "pods", `read pod ${name}`, () => c.core.readNamespacedPod({ name, namespace: c.namespace })))) as Option.Option<PodView>
    if (Option.isSome(pod) || c.podNames.has(session)) return pod
    // Not named after the session: a warm pod it claimed before this agent (re)started.
    const other = yield* podNameOf(c, session)
    return other === session ? pod : (yield* orNone(c.call("get", "pods", `read pod ${other}`, () => c.core.readNamespacedPod({ name: other, namespace: c.namespace })))) as Option.Option<PodView>
  })

// ---- home volumes ------------------------------------------------------------------------------

const listHomes = (c: Client): Effect.Effect<ReadonlyArray<HomeVolume>, KubernetesError> =>
  Effect.gen(function*() {
    const claims = yield* c.call("list", "persistentvolumeclaims", "list home volumes", () =>
      c.core.listNamespacedPersistentVolumeClaim({ namespace: c.namespace, labelSelector: homeSelector(c.agentId) }))
    const mounted = mountedClaims((yield* listSessionPods(c)).items as ReadonlyArray<k8s.V1Pod>)
    return claims.items.flatMap((claim) => homeOfClaim(claim as ClaimView, mounted) ?? [])
  }).pipe(Effect.withSpan("Kubernetes.listHomes"))

const deleteHome = (c: Client) =>
  Effect.fn("Kubernetes.deleteHome")(function*(name: string, user: UserId) {
    const claim = yield* orNone(c.call("get", "persistentvolumeclaims", `read home volume ${name}`, () =>
      c.core.readNamespacedPersistentVolumeClaim({ name, namespace: c.namespace })))
    if (Option.isNone(claim)) return "absent" as const
    // Already deleted; the pvc-protection finalizer holds it until no pod uses it.
    if (claim.value.metadata?.deletionTimestamp != null) return "deleted" as const
    if (!isUsersHome(claim.value.metadata, user) || claim.value.metadata?.labels?.agent !== c.agentId) {
      return yield* new KubernetesError({ reason: "Invalid", message: `persistentvolumeclaim ${name} is not the home of user ${user} managed by agent ${c.agentId}; left alone` })
    }
    if (mountedClaims((yield* listSessionPods(c)).items as ReadonlyArray<k8s.V1Pod>).has(name)) return "in_use" as const
    yield* ignoreNotFound(c.call("delete", "persistentvolumeclaims", `delete home volume ${name}`, () =>
      c.core.deleteNamespacedPersistentVolumeClaim({ name, namespace: c.namespace })))
    return "deleted" as const
  })

// ---- list and watch -------------------------------------------------------------------------------

const listSessionPods = (c: Client): Effect.Effect<PodList, KubernetesError> =>
  Effect.gen(function*() {
    const items: Array<PodView> = []
    let cont: string | undefined
    let resourceVersion = ""
    do {
      const page: k8s.V1PodList = yield* c.call("list", "pods", "list session pods", () =>
        c.core.listNamespacedPod({
          namespace: c.namespace,
          labelSelector: agentSelector(c.agentId),
          limit: 500,
          ...(cont !== undefined ? { _continue: cont } : {})
        }))
      items.push(...(page.items as Array<PodView>))
      if (resourceVersion === "") resourceVersion = page.metadata?.resourceVersion ?? ""
      cont = page.metadata?._continue || undefined
    } while (cont !== undefined)
    return { items, resourceVersion }
  }).pipe(Effect.withSpan("Kubernetes.listSessionPods"))

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
