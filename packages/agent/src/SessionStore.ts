// SessionStore: the agent's live view of its sessions, fed by a watch on the objects labelled for this
// agent and rebuilt from the cluster at start. Emits every phase change; answers list_sessions.
import type { Capacity, HomeVolume, SessionId, SessionSpec, SessionStatus, UserId, WarmPool } from "@streamspace/protocol"
import { Clock, Context, DateTime, Duration, Effect, Layer, Metric, Option, PubSub, Queue, Schedule, Schema, Stream } from "effect"
import { AgentConfig } from "./AgentConfig.ts"
import { type ClusterHealth, Kubernetes, type KubernetesError, type KubernetesShape, type PodEvent } from "./Kubernetes.ts"
import { exponentialFullJitter, makeStepper, resetWhen } from "./internal/backoff.ts"
import { restartsOf, sessionIdOf, statusOfPod, type PodView } from "./internal/kubeObjects.ts"
import { isPoolPod } from "./internal/warmPool.ts"
import { sessionsActive } from "./Metrics.ts"

export type { ClusterHealth } from "./Kubernetes.ts"

export class SessionStoreError extends Schema.TaggedError<SessionStoreError>()("SessionStoreError", {
  reason: Schema.Literals(["NotFound", "Rejected", "Forbidden", "Unavailable", "CapacityExceeded", "HomeInUse"]),
  message: Schema.String
}) {}

export interface SessionStoreShape {
  /** Creates the session's objects, or adopts them when they exist; resolves once they exist (phase creating or later). */
  readonly create: (id: SessionId, spec: SessionSpec) => Effect.Effect<SessionStatus, SessionStoreError>
  /** Deletes pod and service (the home PVC stays); succeeds when the session is already gone. */
  readonly delete: (id: SessionId) => Effect.Effect<void, SessionStoreError>
  /** Deletes pod and service, keeps the home PVC, resolves once the pod is gone; the home claim's name, if any. */
  readonly hibernate: (id: SessionId) => Effect.Effect<Option.Option<string>, SessionStoreError>
  /** A new pod for a hibernated session on its existing home (NotFound when the home is gone). */
  readonly resume: (id: SessionId, spec: SessionSpec) => Effect.Effect<SessionStatus, SessionStoreError>
  readonly get: (id: SessionId) => Effect.Effect<Option.Option<SessionStatus>>
  /** The users' home volumes on this agent. */
  readonly listHomes: Effect.Effect<ReadonlyArray<HomeVolume>, SessionStoreError>
  /** Deletes a user's home volume; HomeInUse while a pod mounts it; succeeds when it is already gone. */
  readonly deleteHome: (name: string, user: UserId) => Effect.Effect<void, SessionStoreError>
  /** The warm pools to keep from now on (every WARM_POOL_INTERVAL, and at once); templates left out lose theirs. */
  readonly setWarmPools: (pools: ReadonlyArray<WarmPool>) => Effect.Effect<void>
  readonly list: Effect.Effect<ReadonlyArray<SessionStatus>>
  /** Sessions not terminated or failed. */
  readonly activeCount: Effect.Effect<number>
  /** Every observed phase change, including pods that die or are deleted out of band. */
  readonly changes: Stream.Stream<SessionStatus>
  /**
   * Sessions whose desktop container restarted (its restart count went up), also when the kubelet reported the
   * restart in one update with the pod Ready again, so no phase change shows it.
   */
  readonly restarts: Stream.Stream<SessionId>
  readonly capacity: Effect.Effect<Capacity>
  /** How the Kubernetes API has been answering lately, for the heartbeat status. */
  readonly health: Effect.Effect<ClusterHealth>
}

/** Delay before re-watching after a watch that ended without delivering anything. */
const QUIET_REWATCH = Duration.seconds(1)

/** Relisting after a failed watch: from 1 s up to 30 s, afresh once a watch delivered events again. */
const watchBackoff = resetWhen(exponentialFullJitter(QUIET_REWATCH, "30 seconds").pipe(Schedule.setInputType<number>()), (events) => events > 0)

export const toSessionStoreError = (e: KubernetesError): SessionStoreError => {
  switch (e.reason) {
    case "Invalid":
    case "AlreadyExists":
    case "NotFound":
    case "Config":
      return new SessionStoreError({ reason: "Rejected", message: e.message })
    case "Forbidden":
    case "Unauthorized":
      return new SessionStoreError({ reason: "Forbidden", message: e.message })
    case "QuotaExceeded":
      return new SessionStoreError({ reason: "CapacityExceeded", message: e.message })
    default:
      return new SessionStoreError({ reason: "Unavailable", message: e.message })
  }
}

const isActive = (s: SessionStatus) => s.phase !== "terminated" && s.phase !== "failed"
const sameState = (a: SessionStatus, b: SessionStatus) =>
  a.phase === b.phase && a.reason === b.reason && a.pod_ip === b.pod_ip && a.message === b.message

interface State {
  readonly kube: KubernetesShape
  /** The warm pools the control plane asked for. */
  pools: ReadonlyArray<WarmPool>
  /** Wakes the warm pool keeper (a new set of pools, or a warm pod taken). */
  readonly poolsChanged: Queue.Queue<void>
  /** Warm pods of pools no longer asked for may remain. */
  prune: boolean
  readonly sessions: Map<SessionId, SessionStatus>
  readonly changes: PubSub.PubSub<SessionStatus>
  readonly restartCounts: Map<SessionId, number>
  readonly restarted: PubSub.PubSub<SessionId>
}

const observedAt = Effect.map(Clock.currentTimeMillis, (ms) => DateTime.formatIso(DateTime.makeUnsafe(ms)))

const activeCount = (s: State) =>
  Effect.sync(() => {
    let n = 0
    for (const status of s.sessions.values()) if (isActive(status)) n++
    return n
  })

/** Records what a pod says now; publishes when the phase, reason, message or address changed. */
const apply = Effect.fnUntraced(function*(s: State, pod: PodView, deleted: boolean, publish: boolean) {
  // A warm pod is no session until a create claims it (the watch then sees it relabelled).
  if (sessionIdOf(pod) === undefined && isPoolPod(pod)) return
  const id = sessionIdOf(pod) ?? (pod.metadata?.name as SessionId | undefined)
  if (id === undefined) return
  const before = s.sessions.get(id)
  if (deleted && before === undefined) return
  const restarts = restartsOf(pod)
  const restartsBefore = s.restartCounts.get(id)
  if (deleted) s.restartCounts.delete(id)
  else s.restartCounts.set(id, restarts)
  if (publish && restartsBefore !== undefined && restarts > restartsBefore) yield* PubSub.publish(s.restarted, id)
  const status = statusOfPod(pod, id, yield* observedAt, deleted)
  if (before !== undefined && sameState(before, status)) return
  if (deleted) s.sessions.delete(id)
  else s.sessions.set(id, status)
  yield* Metric.update(sessionsActive, yield* activeCount(s))
  if (publish) {
    yield* PubSub.publish(s.changes, status)
    yield* Effect.logDebug(`session ${id} is ${status.phase}${status.reason !== undefined ? ` (${status.reason})` : ""}`)
  }
})

/** After a (re)list: apply every listed pod, and every known session missing from the list is gone. */
const reconcile = Effect.fnUntraced(function*(s: State, items: ReadonlyArray<PodView>, publish: boolean) {
  const seen = new Set<string>()
  for (const pod of items) {
    const id = sessionIdOf(pod)
    if (id === undefined) continue
    seen.add(id)
    yield* apply(s, pod, false, publish)
  }
  for (const [id] of [...s.sessions]) {
    if (!seen.has(id)) yield* apply(s, { metadata: { name: id, labels: {} } }, true, publish)
  }
})

/**
 * List + watch, like an informer: resume from the last resourceVersion when a watch ends, relist on
 * 410 Expired or after an error (with the backoff), so out-of-band changes are never missed.
 */
const watchSessions = (s: State, initialVersion: string | undefined) =>
  Effect.gen(function*() {
    let resourceVersion = initialVersion
    const backoff = yield* makeStepper(watchBackoff)
    /** Events since the last failure: any means the watch worked again, and the backoff starts afresh. */
    let delivered = 0
    while (true) {
      let events = 0
      const round = Effect.gen(function*() {
        if (resourceVersion === undefined) {
          const l = yield* s.kube.listSessionPods
          yield* reconcile(s, l.items, true)
          resourceVersion = l.resourceVersion
        }
        yield* s.kube.watchSessionPods(resourceVersion).pipe(
          Stream.runForEach((ev: PodEvent) =>
            Effect.gen(function*() {
              events++
              delivered++
              const rv = ev.object.metadata?.resourceVersion
              if (rv !== undefined && rv !== "") resourceVersion = rv
              if (ev.type !== "BOOKMARK") yield* apply(s, ev.object, ev.type === "DELETED", true)
            })
          )
        )
      })
      const result = yield* Effect.result(round)
      if (result._tag === "Success") {
        if (events === 0) yield* Effect.sleep(QUIET_REWATCH)
        continue
      }
      const e = result.failure
      resourceVersion = undefined
      if (e.reason === "Expired") {
        yield* Effect.logDebug(`watch expired, relisting: ${e.message}`)
        continue
      }
      const delay = yield* backoff(delivered)
      delivered = 0
      yield* Effect.logWarning(`session watch failed (${e.message}); relisting in ${Duration.format(delay)}`)
      yield* Effect.sleep(delay)
    }
  })

const create = (s: State) =>
  Effect.fn("SessionStore.create")(function*(id: SessionId, spec: SessionSpec) {
    const pod = yield* s.kube.createSession(id, spec).pipe(Effect.mapError(toSessionStoreError))
    // It may have taken a warm pod: refill now rather than at the next interval.
    if (s.pools.some((p) => p.template === spec.template && p.size > 0)) yield* Queue.offer(s.poolsChanged, undefined)
    // The watch may already have seen a later state of this pod; only a first sighting is recorded here.
    if (!s.sessions.has(id)) yield* apply(s, pod, false, true)
    return s.sessions.get(id) ?? statusOfPod(pod, id, yield* observedAt)
  })

const hibernate = (s: State) =>
  Effect.fn("SessionStore.hibernate")(function*(id: SessionId) {
    return yield* s.kube.hibernateSession(id).pipe(Effect.mapError(toSessionStoreError))
  })

const resume = (s: State) =>
  Effect.fn("SessionStore.resume")(function*(id: SessionId, spec: SessionSpec) {
    const pod = yield* s.kube.resumeSession(id, spec).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? new SessionStoreError({ reason: "NotFound", message: e.message }) : toSessionStoreError(e)))
    )
    if (!s.sessions.has(id)) yield* apply(s, pod, false, true)
    return s.sessions.get(id) ?? statusOfPod(pod, id, yield* observedAt)
  })
/** Brings every warm pool to its size, and removes the pods of pools no longer asked for. */
const keepWarmPools = (s: State) =>
  Effect.gen(function*() {
    for (const pool of s.pools) yield* s.kube.ensureWarmPool(pool)
    yield* s.kube.pruneWarmPools(new Set(s.pools.filter((p) => p.size > 0).map((p) => p.template)))
  }).pipe(Effect.catch((e) => Effect.logWarning(`warm pools: ${e.message}`)))

const delete_ = (s: State) =>
  Effect.fn("SessionStore.delete")(function*(id: SessionId) {
    yield* s.kube.deleteSession(id).pipe(Effect.mapError(toSessionStoreError))
  })

export const make = Effect.gen(function*() {
  const config = yield* AgentConfig
  const s: State = {
    kube: yield* Kubernetes,
    pools: [],
    prune: false,
    poolsChanged: yield* Queue.sliding<void>(1),
    sessions: new Map(),
    changes: yield* Effect.acquireRelease(PubSub.unbounded<SessionStatus>(), PubSub.shutdown),
    restartCounts: new Map(),
    restarted: yield* Effect.acquireRelease(PubSub.unbounded<SessionId>(), PubSub.shutdown)
  }
  // Rebuild from the cluster before anyone asks (hello carries this inventory). An unreachable API does
  // not stop the agent: the watch keeps trying and the health says why.
  const initial = yield* s.kube.listSessionPods.pipe(
    Effect.tap((l) => reconcile(s, l.items, false)),
    Effect.map((l) => l.resourceVersion),
    Effect.tapError((e) => Effect.logWarning(`cannot list sessions at start: ${e.message}`)),
    Effect.option
  )
  yield* Effect.logInfo(`adopted ${s.sessions.size} existing session(s) from the cluster`)
  yield* Effect.forkScoped(watchSessions(s, Option.getOrUndefined(initial)))
  // The warm pool keeper: on every change, and every WARM_POOL_INTERVAL (pods die, creates take them).
  yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
    yield* Queue.take(s.poolsChanged).pipe(Effect.timeoutOption(config.warmPoolInterval))
    if (s.pools.length === 0 && !s.prune) return
    s.prune = false
    yield* keepWarmPools(s)
  })))

  return SessionStore.of({
    create: create(s),
    delete: delete_(s),
    hibernate: hibernate(s),
    resume: resume(s),
    get: Effect.fn("SessionStore.get")(function*(id: SessionId) {
      return Option.fromUndefinedOr(s.sessions.get(id))
    }),
    list: Effect.sync(() => [...s.sessions.values()]),
    setWarmPools: (pools) =>
      Effect.gen(function*() {
        s.pools = pools
        // Pools asked away are emptied at once, even when none are left to keep.
        s.prune = true
        yield* Queue.offer(s.poolsChanged, undefined)
      }),
    listHomes: s.kube.listHomes.pipe(Effect.mapError(toSessionStoreError), Effect.withSpan("SessionStore.listHomes")),
    deleteHome: Effect.fn("SessionStore.deleteHome")(function*(name: string, user: UserId) {
      const done = yield* s.kube.deleteHome(name, user).pipe(Effect.mapError(toSessionStoreError))
      if (done === "in_use") return yield* new SessionStoreError({ reason: "HomeInUse", message: `home volume ${name} is mounted by a session pod; delete its sessions first` })
    }),
    activeCount: activeCount(s),
    changes: Stream.fromPubSub(s.changes),
    restarts: Stream.fromPubSub(s.restarted),
    capacity: s.kube.capacity,
    health: s.kube.health
  })
})

export class SessionStore extends Context.Service<SessionStore, SessionStoreShape>()("agent/SessionStore") {
  /** Needs Kubernetes (tests provide one pointed at kube-testserver). */
  static readonly layerNoDeps: Layer.Layer<SessionStore, never, Kubernetes | AgentConfig> = Layer.effect(SessionStore, make)
  /** With the Kubernetes backend built from AgentConfig. */
  static readonly layer: Layer.Layer<SessionStore, KubernetesError, AgentConfig> = SessionStore.layerNoDeps.pipe(
    Layer.provide(Kubernetes.layer)
  )
}
