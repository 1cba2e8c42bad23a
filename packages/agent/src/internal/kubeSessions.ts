// The session objects on the cluster: a session's Pod, Service and home PVC (create, adopt, delete,
// hibernate, resume), the warm pools' pods and the users' home volumes. Kubernetes.ts exposes them.
import * as k8s from "@kubernetes/client-node"
import type { HomeVolume, SessionId, SessionSpec, UserId, WarmPool } from "@streamspace/protocol"
import { Duration, Effect, Option } from "effect"
import { type ClaimView, homeOfClaim, homeSelector, mountedClaims } from "./homes.ts"
import { ignoreNotFound, orNone } from "./kubeCall.ts"
import type { Client, PodList } from "./kubeClient.ts"
import { KubernetesError } from "./kubeError.ts"
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
  type PodView
} from "./kubeObjects.ts"
import { buildWarmPod, claimableHash, claimedLabels, isWarmReady, LABEL_POOL_SPEC, poolHash, poolSelector } from "./warmPool.ts"

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

export const ensureWarmPool = (c: Client) =>
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

export const pruneWarmPools = (c: Client) =>
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

export const createSession = (c: Client) =>
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

export const deleteSession = (c: Client) =>
  Effect.fn("Kubernetes.deleteSession")(function*(id: SessionId) {
    yield* Effect.annotateCurrentSpan({ "session.id": id })
    yield* Effect.all([deletePod(c, id), deleteService(c, id)], { concurrency: 2, discard: true })
  })

/** How often a hibernate checks whether the deleted pod is gone. */
const GONE_POLL = Duration.millis(250)

export const hibernateSession = (c: Client) =>
  Effect.fn("Kubernetes.hibernateSession")(function*(id: SessionId) {
    yield* Effect.annotateCurrentSpan({ "session.id": id })
    const before = yield* readPod(c)(id)
    const claim = Option.flatMap(before, (p) => Option.fromUndefinedOr(homeClaimOf(p)))
    yield* Effect.all([deletePod(c, id), deleteService(c, id)], { concurrency: 2, discard: true })
    // The pod terminates gracefully; hibernated means it is gone. The command's deadline bounds the wait.
    while (Option.isSome(yield* readPod(c)(id))) yield* Effect.sleep(GONE_POLL)
    return claim
  })

export const resumeSession = (c: Client) =>
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

export const readPod = (c: Client) =>
  Effect.fn("Kubernetes.readPod")(function*(session: SessionId) {
    const name = c.podNames.get(session) ?? session
    const pod = (yield* orNone(c.call("get", "pods", `read pod ${name}`, () => c.core.readNamespacedPod({ name, namespace: c.namespace })))) as Option.Option<PodView>
    if (Option.isSome(pod) || c.podNames.has(session)) return pod
    // Not named after the session: a warm pod it claimed before this agent (re)started.
    const other = yield* podNameOf(c, session)
    return other === session ? pod : (yield* orNone(c.call("get", "pods", `read pod ${other}`, () => c.core.readNamespacedPod({ name: other, namespace: c.namespace })))) as Option.Option<PodView>
  })

// ---- home volumes ------------------------------------------------------------------------------

export const listHomes = (c: Client): Effect.Effect<ReadonlyArray<HomeVolume>, KubernetesError> =>
  Effect.gen(function*() {
    const claims = yield* c.call("list", "persistentvolumeclaims", "list home volumes", () =>
      c.core.listNamespacedPersistentVolumeClaim({ namespace: c.namespace, labelSelector: homeSelector(c.agentId) }))
    const mounted = mountedClaims((yield* listSessionPods(c)).items as ReadonlyArray<k8s.V1Pod>)
    return claims.items.flatMap((claim) => homeOfClaim(claim as ClaimView, mounted) ?? [])
  }).pipe(Effect.withSpan("Kubernetes.listHomes"))

export const deleteHome = (c: Client) =>
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

// ---- list ----------------------------------------------------------------------------------------

export const listSessionPods = (c: Client): Effect.Effect<PodList, KubernetesError> =>
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
