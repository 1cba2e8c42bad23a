// Kubernetes: the agent's cluster backend and the only importer of @kubernetes/client-node. Owns the
// client (in-cluster config, or KUBECONFIG), every call's retry policy and error mapping, the session
// objects (Pod, Service, per-user home PVC), the pod list/watch, the credential Secret, port-forwards,
// capacity, and the record of how the API has been answering (for the heartbeat's status).
import * as k8s from "@kubernetes/client-node"
import type { Capacity, SessionId, SessionSpec, UserId } from "@streamspace/protocol"
import { parseQuantity } from "@streamspace/protocol"
import { Cause, Clock, Context, Duration, Effect, Layer, Metric, Option, Queue, Schedule, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { existsSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { parse as parseYaml } from "yaml"
import { AgentConfig } from "./AgentConfig.ts"
import type { AgentConfigShape } from "./AgentConfig.ts"
import {
  agentSelector,
  buildHomeClaim,
  buildPod,
  buildService,
  homeClaimName,
  isOurs,
  isUsersHome,
  type Json,
  type PodView,
  type SessionDefaults
} from "./internal/kubeObjects.ts"
import { inClusterServer, kubeconfigTokenFiles, tokenFileAuthenticator, tokenFileProvider } from "./internal/kubeAuth.ts"
import { openPortForward, type PortForwardStream } from "./internal/portforward.ts"
import { kubernetesApiErrors } from "./Metrics.ts"

export class KubernetesError extends Schema.TaggedError<KubernetesError>()("KubernetesError", {
  reason: Schema.Literals([
    "NotFound", // 404
    "AlreadyExists", // 409 on create, and the object is not ours
    "Conflict", // 409 optimistic-lock conflict (retried)
    "Invalid", // 422 / 400: the API's validation message
    "Forbidden", // 403 (RBAC, admission)
    "QuotaExceeded", // 403 from ResourceQuota admission: the namespace is full
    "Unauthorized", // 401
    "TooManyRequests", // 429 (retried, honouring Retry-After)
    "Unavailable", // 5xx, network (retried)
    "Timeout", // no answer within the request timeout (retried)
    "Expired", // a watch's resourceVersion is too old: relist
    "Config" // the kubeconfig could not be loaded
  ]),
  message: Schema.String,
  code: Schema.optionalKey(Schema.Number),
  retryAfterSeconds: Schema.optionalKey(Schema.Number)
}) {}

export interface ClusterHealth {
  readonly status: "ok" | "degraded" | "failing"
  readonly message?: string
}

export interface PodEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK"
  readonly object: PodView
}

export interface PodList {
  readonly items: ReadonlyArray<PodView>
  readonly resourceVersion: string
}

export type { PortForwardRead, PortForwardStream } from "./internal/portforward.ts"

export interface KubernetesShape {
  readonly namespace: string
  /** Creates (or adopts) the session's home PVC, Service and Pod; rolls back what it made on failure. Returns the pod. */
  readonly createSession: (id: SessionId, spec: SessionSpec) => Effect.Effect<PodView, KubernetesError>
  /** Deletes the session's Pod and Service (the home PVC stays); missing objects are fine. */
  readonly deleteSession: (id: SessionId) => Effect.Effect<void, KubernetesError>
  readonly readPod: (name: string) => Effect.Effect<Option.Option<PodView>, KubernetesError>
  /** Every pod labelled for this agent, and the list's resourceVersion to watch from. */
  readonly listSessionPods: Effect.Effect<PodList, KubernetesError>
  /** Pod events after `resourceVersion`; ends when the server closes the watch, fails with `Expired` on 410. */
  readonly watchSessionPods: (resourceVersion: string) => Stream.Stream<PodEvent, KubernetesError>
  readonly readSecret: (name: string) => Effect.Effect<Option.Option<Record<string, string>>, KubernetesError>
  /** Creates the Secret or replaces its data. */
  readonly writeSecret: (name: string, data: Record<string, string>) => Effect.Effect<void, KubernetesError>
  /** A port-forward stream to `pod:port`, closed with the scope. */
  readonly portForward: (pod: string, port: number) => Effect.Effect<PortForwardStream, KubernetesError, Scope.Scope>
  /** From a ResourceQuota in the namespace when one is readable, else MAX_SESSIONS x the session defaults. */
  readonly capacity: Effect.Effect<Capacity>
  /** How the API has been answering: degraded after recent errors, failing after a minute of nothing but errors. */
  readonly health: Effect.Effect<ClusterHealth>
}

/** Tunables with production defaults; tests shrink them. */
export interface KubernetesOptions {
  /** First retry delay; doubles each attempt (jittered). */
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

const RETRYABLE = new Set<KubernetesError["reason"]>(["Conflict", "TooManyRequests", "Unavailable", "Timeout"])
/** Errors that say the API (or our access to it) is unwell; 404/409/422 are ordinary answers. */
const UNHEALTHY = new Set<KubernetesError["reason"]>(["Forbidden", "Unauthorized", "TooManyRequests", "Unavailable", "Timeout"])

interface StatusBody {
  readonly reason?: string
  readonly message?: string
  readonly details?: { readonly retryAfterSeconds?: number }
}

const parseStatus = (body: unknown): StatusBody => {
  if (typeof body === "object" && body !== null) return body as StatusBody
  if (typeof body !== "string") return {}
  try {
    const s = JSON.parse(body) as unknown
    return typeof s === "object" && s !== null ? (s as StatusBody) : {}
  } catch {
    return {}
  }
}

const reasonOfCode = (code: number, statusReason: string | undefined, message = ""): KubernetesError["reason"] => {
  if (code === 404) return "NotFound"
  if (code === 403 && message.includes("exceeded quota")) return "QuotaExceeded"
  if (code === 409) return statusReason === "AlreadyExists" ? "AlreadyExists" : "Conflict"
  if (code === 400 || code === 422) return "Invalid"
  if (code === 403) return "Forbidden"
  if (code === 401) return "Unauthorized"
  if (code === 429) return "TooManyRequests"
  if (code === 410) return "Expired"
  if (code === 408 || code === 504) return "Timeout"
  return "Unavailable"
}

/** Maps whatever the client threw (ApiException, fetch TypeError, watch error) to a KubernetesError. */
export const toKubernetesError = (what: string, e: unknown): KubernetesError => {
  if (e instanceof KubernetesError) return e
  if (e instanceof k8s.ApiException) {
    const ex = e as k8s.ApiException<unknown>
    const status = parseStatus(ex.body)
    const headerRetry = Number(ex.headers?.["retry-after"])
    const retryAfter = Number.isFinite(headerRetry) && headerRetry >= 0 ? headerRetry : status.details?.retryAfterSeconds
    return new KubernetesError({
      reason: reasonOfCode(ex.code, status.reason, status.message),
      message: `${what}: ${status.message ?? (ex.code === 401 ? "Unauthorized" : `HTTP ${ex.code}`)}`,
      code: ex.code,
      ...(retryAfter !== undefined ? { retryAfterSeconds: retryAfter } : {})
    })
  }
  const err = e as { statusCode?: number; message?: string; name?: string; cause?: { code?: string; message?: string } }
  if (typeof err?.statusCode === "number") {
    return new KubernetesError({ reason: reasonOfCode(err.statusCode, undefined), message: `${what}: ${err.message ?? `HTTP ${err.statusCode}`}`, code: err.statusCode })
  }
  if (err?.name === "TimeoutError") return new KubernetesError({ reason: "Timeout", message: `${what}: timed out` })
  const detail = err?.cause?.code ?? err?.cause?.message ?? err?.message ?? String(e)
  return new KubernetesError({ reason: "Unavailable", message: `${what}: ${detail}` })
}

/** Kubernetes quantity for `value` base units: millicores for CPU, the largest exact binary unit for bytes. */
const formatCpu = (cores: number): string => `${Math.round(cores * 1000)}m`
const formatBytes = (bytes: number): string => {
  for (const [unit, f] of [["Ti", 2 ** 40], ["Gi", 2 ** 30], ["Mi", 2 ** 20], ["Ki", 2 ** 10]] as const) {
    if (bytes >= f && Number.isInteger(bytes / f)) return `${bytes / f}${unit}`
  }
  return String(Math.round(bytes))
}

/** Capacity from ResourceQuota `hard` lists (the tightest wins), or undefined when none limits cpu and memory. */
export const capacityFromQuotas = (
  quotas: ReadonlyArray<{ readonly hard?: Readonly<Record<string, string>> }>,
  maxSessions: number
): Capacity | undefined => {
  let cpu: number | undefined
  let memory: number | undefined
  let pods: number | undefined
  const min = (a: number | undefined, q: string | undefined) => {
    const v = q === undefined ? undefined : parseQuantity(q)
    return v === undefined ? a : a === undefined ? v : Math.min(a, v)
  }
  for (const q of quotas) {
    const h = q.hard ?? {}
    cpu = min(cpu, h["requests.cpu"] ?? h["cpu"])
    memory = min(memory, h["requests.memory"] ?? h["memory"])
    pods = min(pods, h["pods"])
  }
  if (cpu === undefined || memory === undefined) return undefined
  return { cpu: formatCpu(cpu), memory: formatBytes(memory), max_sessions: Math.min(maxSessions, pods ?? maxSessions) }
}

/** The fallback when no quota is readable: what MAX_SESSIONS sessions at the default size would use. */
export const capacityFromConfig = (config: Pick<AgentConfigShape, "maxSessions" | "sessionDefaultCpu" | "sessionDefaultMemory">): Capacity => ({
  cpu: formatCpu((parseQuantity(config.sessionDefaultCpu) ?? 1) * config.maxSessions),
  memory: formatBytes((parseQuantity(config.sessionDefaultMemory) ?? 2 ** 31) * config.maxSessions),
  max_sessions: config.maxSessions
})

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
          kc.loadFromOptions({
            clusters: kc.clusters,
            contexts: kc.contexts,
            currentContext: kc.currentContext,
            users: kc.users.map((u) => {
              const file = files.get(u.name)
              return file === undefined ? u : { name: u.name, authProvider: tokenFileProvider(file) }
            })
          })
        }
      } else {
        const { kubernetesServiceHost: host, kubernetesServicePort: port, serviceAccountDir: dir } = config
        if (host === undefined || port === undefined) {
          throw new Error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?): set KUBECONFIG")
        }
        const token = path.join(dir, "token")
        readFileSync(token) // fail now, naming the file, rather than on the first call
        const namespaceFile = path.join(dir, "namespace")
        kc.loadFromOptions({
          clusters: [{ name: "in-cluster", server: inClusterServer(host, port), caFile: path.join(dir, "ca.crt"), skipTLSVerify: false }],
          users: [{ name: "in-cluster", authProvider: tokenFileProvider(token) }],
          contexts: [{
            name: "in-cluster",
            cluster: "in-cluster",
            user: "in-cluster",
            ...(existsSync(namespaceFile) ? { namespace: readFileSync(namespaceFile, "utf8").trim() } : {})
          }],
          currentContext: "in-cluster"
        })
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

export const make = (options: KubernetesOptions = {}) =>
  Effect.gen(function*() {
    const config = yield* AgentConfig
    const { kc, invalidateTokens } = yield* loadKubeConfig(config)
    const template = yield* loadPodTemplate(config.sessionPodTemplate)
    const core = kc.makeApiClient(k8s.CoreV1Api)
    const watcher = new k8s.Watch(kc)
    const namespace = config.namespace
    const selector = agentSelector(config.agentId)
    const opts = { ...DEFAULTS, ...options }
    const requestTimeout = Duration.fromInputUnsafe(opts.requestTimeout)
    const maxRetryAfter = Duration.fromInputUnsafe(opts.maxRetryAfter)
    const defaults: SessionDefaults = {
      agentId: config.agentId,
      namespace,
      imagePullPolicy: config.sessionImagePullPolicy,
      cpu: config.sessionDefaultCpu,
      memory: config.sessionDefaultMemory,
      storage: config.sessionDefaultStorage,
      storageClass: config.sessionStorageClass,
      serviceType: config.sessionServiceType
    }

    // ---- health: how the API has been answering -------------------------------------------------
    let failingSince: number | undefined
    let lastError: string | undefined
    let errorTimes: Array<number> = []
    const recordSuccess = Effect.sync(() => {
      failingSince = undefined
    })
    const recordFailure = (verb: string, resource: string, e: KubernetesError) =>
      Effect.gen(function*() {
        yield* Metric.update(Metric.withAttributes(kubernetesApiErrors, { verb, resource, code: String(e.code ?? e.reason) }), 1)
        if (!UNHEALTHY.has(e.reason)) {
          // The API answered (404, 409, 422...): it is reachable and working.
          failingSince = undefined
          return
        }
        const now = yield* Clock.currentTimeMillis
        failingSince ??= now
        lastError = e.message
        errorTimes.push(now)
      })
    const health = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      errorTimes = errorTimes.filter((t) => now - t < Duration.toMillis(opts.degradedWindow))
      if (failingSince !== undefined && now - failingSince >= Duration.toMillis(opts.failingAfter)) {
        return { status: "failing", message: `Kubernetes API failing for ${Math.round((now - failingSince) / 1000)}s: ${lastError}` } as const
      }
      if (failingSince !== undefined || errorTimes.length > 0) {
        return { status: "degraded", message: `${errorTimes.length} Kubernetes API error(s) recently; last: ${lastError}` } as const
      }
      return { status: "ok" } as const
    })

    // ---- one call: timeout, error mapping, metrics, bounded retry --------------------------------
    const retrySchedule = Schedule.exponential(opts.retryBase).pipe(
      Schedule.jittered,
      Schedule.setInputType<KubernetesError>(),
      // Honour Retry-After (bounded), never waiting less than the backoff.
      Schedule.modifyDelay(({ duration, input }) =>
        Effect.succeed(
          input.retryAfterSeconds === undefined
            ? duration
            : Duration.max(duration, Duration.min(Duration.seconds(input.retryAfterSeconds), maxRetryAfter))
        )
      )
    )
    const call = <A>(verb: string, resource: string, what: string, f: () => Promise<A>): Effect.Effect<A, KubernetesError> =>
      Effect.tryPromise({ try: f, catch: (e) => toKubernetesError(what, e) }).pipe(
        Effect.timeoutOrElse({
          duration: requestTimeout,
          orElse: () => Effect.fail(new KubernetesError({ reason: "Timeout", message: `${what}: no answer within ${Duration.format(requestTimeout)}` }))
        }),
        Effect.tapError((e) => recordFailure(verb, resource, e)),
        Effect.tap(() => recordSuccess),
        Effect.retry({ schedule: retrySchedule, times: opts.retryTimes, while: (e) => RETRYABLE.has(e.reason) }),
        // A token rotated between two stats of its file: read every token file again and try once more.
        Effect.retry({ times: 1, while: (e) => e.reason === "Unauthorized" && (invalidateTokens(), true) })
      )
    const orNone = <A>(eff: Effect.Effect<A, KubernetesError>): Effect.Effect<Option.Option<A>, KubernetesError> =>
      eff.pipe(Effect.map(Option.some), Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeedNone))
    const ignoreNotFound = (eff: Effect.Effect<unknown, KubernetesError>): Effect.Effect<void, KubernetesError> =>
      eff.pipe(Effect.asVoid, Effect.catchIf((e) => e.reason === "NotFound", () => Effect.void))

    const readPod = Effect.fn("Kubernetes.readPod")(function*(name: string) {
      return yield* orNone(call("get", "pods", `read pod ${name}`, () => core.readNamespacedPod({ name, namespace }))) as Effect.Effect<Option.Option<PodView>, KubernetesError>
    })

    /** Creates `body`; on AlreadyExists reads the existing object and keeps it when `mine` says so. */
    const createOrAdopt = <A extends { metadata?: k8s.V1ObjectMeta }>(
      resource: string,
      name: string,
      create: () => Promise<A>,
      read: () => Promise<A>,
      mine: (existing: A) => boolean
    ): Effect.Effect<{ readonly object: A; readonly created: boolean }, KubernetesError> =>
      call("create", resource, `create ${resource} ${name}`, create).pipe(
        Effect.map((object) => ({ object, created: true })),
        Effect.catchIf((e) => e.reason === "AlreadyExists", (e) =>
          call("get", resource, `read ${resource} ${name}`, read).pipe(
            Effect.flatMap((existing) =>
              mine(existing)
                ? Effect.succeed({ object: existing, created: false })
                : Effect.fail(new KubernetesError({ reason: "AlreadyExists", message: `${e.message}, and it is not managed by this agent for this session`, code: 409 }))
            )
          ))
      )

    const deleteService = (id: SessionId) =>
      ignoreNotFound(call("delete", "services", `delete service ${id}`, () => core.deleteNamespacedService({ name: id, namespace })))
    const deletePod = (id: SessionId) =>
      ignoreNotFound(call("delete", "pods", `delete pod ${id}`, () => core.deleteNamespacedPod({ name: id, namespace })))

    const createSession = Effect.fn("Kubernetes.createSession")(function*(id: SessionId, spec: SessionSpec) {
      yield* Effect.annotateCurrentSpan({ "session.id": id })
      if (spec.persistent_home) yield* ensureHome(spec.user_id, spec.shared_home === true)
      let madeService = false
      let madePod = false
      return yield* Effect.gen(function*() {
        const svc = yield* createOrAdopt(
          "services",
          id,
          () => core.createNamespacedService({ namespace, body: buildService(defaults, id, spec) as k8s.V1Service }),
          () => core.readNamespacedService({ name: id, namespace }),
          (s) => isOurs(s.metadata, config.agentId, id)
        )
        madeService = svc.created
        const pod = yield* createOrAdopt(
          "pods",
          id,
          () => core.createNamespacedPod({ namespace, body: buildPod({ id, spec, defaults, template }) as k8s.V1Pod }),
          () => core.readNamespacedPod({ name: id, namespace }),
          (p) => isOurs(p.metadata, config.agentId, id)
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
            if (madePod) yield* deletePod(id).pipe(Effect.ignore)
            if (madeService) yield* deleteService(id).pipe(Effect.ignore)
            yield* Effect.logWarning(`create of session ${id} failed; rolled back the objects it made`)
          })
        )
      )
    })

    const ensureHome = (user: UserId, shared: boolean) => {
      const name = homeClaimName(user)
      return createOrAdopt(
        "persistentvolumeclaims",
        name,
        () => core.createNamespacedPersistentVolumeClaim({ namespace, body: buildHomeClaim(defaults, user, shared) as k8s.V1PersistentVolumeClaim }),
        () => core.readNamespacedPersistentVolumeClaim({ name, namespace }),
        (c) => isUsersHome(c.metadata, user)
      )
    }

    const deleteSession = Effect.fn("Kubernetes.deleteSession")(function*(id: SessionId) {
      yield* Effect.annotateCurrentSpan({ "session.id": id })
      yield* Effect.all([deletePod(id), deleteService(id)], { concurrency: 2, discard: true })
    })

    const listSessionPods = Effect.gen(function*() {
      const items: Array<PodView> = []
      let cont: string | undefined
      let resourceVersion = ""
      do {
        const page: k8s.V1PodList = yield* call("list", "pods", "list session pods", () =>
          core.listNamespacedPod({ namespace, labelSelector: selector, limit: 500, ...(cont !== undefined ? { _continue: cont } : {}) }))
        items.push(...(page.items as Array<PodView>))
        if (resourceVersion === "") resourceVersion = page.metadata?.resourceVersion ?? ""
        cont = page.metadata?._continue || undefined
      } while (cont !== undefined)
      return { items, resourceVersion }
    }).pipe(Effect.withSpan("Kubernetes.listSessionPods"))

    const watchSessionPods = (resourceVersion: string): Stream.Stream<PodEvent, KubernetesError> =>
      Stream.callback<PodEvent, KubernetesError>((queue) => {
        const fail = (e: KubernetesError) => Queue.failCauseUnsafe(queue, Cause.fail(e))
        return Effect.acquireRelease(
          Effect.tryPromise({
            try: () =>
              watcher.watch(
                `/api/v1/namespaces/${namespace}/pods`,
                { labelSelector: selector, resourceVersion, allowWatchBookmarks: true },
                (type, object: { code?: number; message?: string }) => {
                  if (type === "ERROR") {
                    fail(object.code === 410
                      ? new KubernetesError({ reason: "Expired", message: `watch pods: ${object.message ?? "resourceVersion expired"}`, code: 410 })
                      : toKubernetesError("watch pods", { statusCode: object.code ?? 500, message: object.message }))
                  } else if (type === "ADDED" || type === "MODIFIED" || type === "DELETED" || type === "BOOKMARK") {
                    Queue.offerUnsafe(queue, { type, object: object as PodView })
                  }
                },
                (err: unknown) => {
                  const e = err as { name?: string } | null | undefined
                  // A clean server close and the client's 30 s inactivity timeout both just end this watch.
                  if (e === null || e === undefined || e.name === "TimeoutError") Queue.endUnsafe(queue)
                  else if (e.name !== "AbortError") fail(toKubernetesError("watch pods", err))
                }
              ),
            catch: (e) => toKubernetesError("watch pods", e)
          }).pipe(Effect.tap(() => recordSuccess)),
          (controller) => Effect.sync(() => controller.abort())
        )
      }).pipe(
        // Every failure, whether the watch could not start or broke later, is counted once here.
        Stream.tapError((e) => e.reason === "Expired" ? Effect.void : recordFailure("watch", "pods", e))
      )

    const readSecret = Effect.fn("Kubernetes.readSecret")(function*(name: string) {
      const secret = yield* orNone(call("get", "secrets", `read secret ${name}`, () => core.readNamespacedSecret({ name, namespace })))
      return Option.map(secret, (s) =>
        Object.fromEntries(Object.entries(s.data ?? {}).map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")])))
    })

    const writeSecret = Effect.fn("Kubernetes.writeSecret")(function*(name: string, data: Record<string, string>) {
      const body = (resourceVersion?: string): k8s.V1Secret => ({
        apiVersion: "v1",
        kind: "Secret",
        type: "Opaque",
        metadata: {
          name,
          namespace,
          labels: { "app.kubernetes.io/managed-by": "streamspace-agent", agent: config.agentId },
          ...(resourceVersion !== undefined ? { resourceVersion } : {})
        },
        data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "utf8").toString("base64")]))
      })
      // Read, then replace with the read resourceVersion (409 Conflict: someone wrote in between, go again) or create.
      yield* Effect.gen(function*() {
        const existing = yield* orNone(call("get", "secrets", `read secret ${name}`, () => core.readNamespacedSecret({ name, namespace })))
        if (Option.isSome(existing)) {
          yield* call("update", "secrets", `replace secret ${name}`, () =>
            core.replaceNamespacedSecret({ name, namespace, body: body(existing.value.metadata?.resourceVersion) }))
        } else {
          yield* call("create", "secrets", `create secret ${name}`, () => core.createNamespacedSecret({ namespace, body: body() }))
        }
      }).pipe(
        Effect.retry({ times: 3, while: (e) => e.reason === "Conflict" || e.reason === "AlreadyExists" })
      )
    })

    const cluster = kc.getCurrentCluster()!
    const portForward = Effect.fn("Kubernetes.portForward")(function*(pod: string, port: number) {
      const server = cluster.server.replace(/\/+$/, "")
      const url = `${server.replace(/^http/, "ws")}/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(pod)}/portforward?ports=${port}`
      const wsOptions: Record<string, unknown> = {}
      yield* Effect.tryPromise({
        try: () => kc.applyToHTTPSOptions(wsOptions),
        catch: (e) => new KubernetesError({ reason: "Config", message: `port-forward to ${pod}: ${(e as Error).message}` })
      })
      return yield* openPortForward({ url, options: wsOptions }, opts.portForwardHighWater).pipe(
        Effect.mapError((r) =>
          r.code === undefined
            ? new KubernetesError({ reason: "Unavailable", message: `port-forward to ${pod}:${port}: ${r.message}` })
            : new KubernetesError({ reason: reasonOfCode(r.code, undefined), message: `port-forward to ${pod}:${port}: ${r.message}`, code: r.code })
        ),
        Effect.tapError((e) => recordFailure("get", "pods/portforward", e)),
        Effect.timeoutOrElse({
          duration: requestTimeout,
          orElse: () => Effect.fail(new KubernetesError({ reason: "Timeout", message: `port-forward to ${pod}:${port}: no answer within ${Duration.format(requestTimeout)}` }))
        })
      )
    })

    // Quota reading is optional: once it is known to be unreadable (403, 404) it is not asked again.
    let quotaReadable = true
    const capacity = Effect.gen(function*() {
      const fallback = capacityFromConfig(config)
      if (!quotaReadable) return fallback
      const quotas = yield* call("list", "resourcequotas", "list resource quotas", () => core.listNamespacedResourceQuota({ namespace })).pipe(
        Effect.map((l) => l.items.map((q) => ({ hard: q.spec?.hard ?? {} }))),
        Effect.catch((e) =>
          Effect.gen(function*() {
            if (e.reason === "Forbidden" || e.reason === "NotFound") {
              quotaReadable = false
              yield* Effect.logInfo(`capacity from MAX_SESSIONS x session defaults: resource quotas are not readable (${e.message})`)
            }
            return []
          })
        )
      )
      return capacityFromQuotas(quotas, config.maxSessions) ?? fallback
    }).pipe(Effect.withSpan("Kubernetes.capacity"))

    return Kubernetes.of({
      namespace,
      createSession,
      deleteSession,
      readPod,
      listSessionPods,
      watchSessionPods,
      readSecret,
      writeSecret,
      portForward,
      capacity,
      health
    })
  })

export class Kubernetes extends Context.Service<Kubernetes, KubernetesShape>()("agent/Kubernetes") {
  /** From AgentConfig: in-cluster config, or the KUBECONFIG file. */
  static readonly layer: Layer.Layer<Kubernetes, KubernetesError, AgentConfig> = Layer.effect(Kubernetes, make())
  /** The same with other tunables (tests: short retries and timeouts). */
  static readonly layerWith = (options: KubernetesOptions): Layer.Layer<Kubernetes, KubernetesError, AgentConfig> =>
    Layer.effect(Kubernetes, make(options))
}
