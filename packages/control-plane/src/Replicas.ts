// Replicas: this control plane among the others on the same PostgreSQL (DATABASE_URL). Each replica has an id
// (new at every start) and a peer address (PEER_URL, default http://HOST:PORT with the bound port), and holds
// a lease in PostgreSQL that it renews every third of REPLICA_LEASE; a replica whose lease expired is dead.
// Agent presence (which replica holds which agent's socket) is written on connect and removed on disconnect,
// fenced by the holder's lease. A replica that cannot renew in time stops claiming: `onLeaseLost` handlers
// close its agents' sockets so they redial a live replica, and `claim` fails until the lease is back.
// `notify`/`listen` are PostgreSQL NOTIFY/LISTEN, every channel of ours carried on one PostgreSQL channel
// (`streamspace`) so one connection listens (a lost one is re-established, and each listener's `onReconnect`
// catches up on what may have been missed); `asLeader` runs a cluster singleton under an advisory lock.
//
// With the embedded PGlite (one process) there are no peers: `clustered` is false, presence is in memory,
// notifications stay in the process, and every singleton runs here.
import { PgClient } from "@effect/sql-pg"
import type { AgentId } from "@streamspace/protocol"
import type { Scope } from "effect"
import { Clock, Context, Duration, Effect, Layer, Option, Queue } from "effect"
import { randomUUID } from "node:crypto"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { asLeader } from "./internal/replicas/leader.ts"
import { type Holder, makeRegistry } from "./internal/replicas/registry.ts"

export type { Holder } from "./internal/replicas/registry.ts"

export interface ReplicaSelf {
  readonly id: string
  readonly peerUrl: string
}

export interface ReplicasShape {
  /** True on PostgreSQL (DATABASE_URL): other replicas may share the database. */
  readonly clustered: boolean
  readonly self: ReplicaSelf
  /** Which live replica holds the agent's socket (this one included); None when no live replica does. */
  readonly holderOf: (agentId: AgentId) => Effect.Effect<Option.Option<Holder>>
  /** Every agent held by a live replica, in one read. */
  readonly holders: Effect.Effect<ReadonlyMap<AgentId, Holder>>
  /** Records that this replica holds the agent's socket; false when it may not (its lease ran out). */
  readonly claim: (agentId: AgentId) => Effect.Effect<boolean>
  /** This replica no longer holds the agent's socket (offline unless another replica holds it). */
  readonly release: (agentId: AgentId) => Effect.Effect<void>
  /** Runs `f` whenever this replica loses its lease (cannot renew in time), for as long as the scope lives. */
  readonly onLeaseLost: (f: Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
  /** Wakes every replica's listeners of `channel` (this one's too). */
  readonly notify: (channel: string, payload: string) => Effect.Effect<void>
  /** Hands each notification of `channel` to `f` for as long as the scope lives; `onReconnect` after a lost listener is back. */
  readonly listen: (channel: string, f: (payload: string) => Effect.Effect<void>, onReconnect?: Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
  /** Runs `work` on one replica at a time (the leader of `name`), for as long as the scope lives; moves when the leader dies. */
  readonly asLeader: (name: string, work: Effect.Effect<void>) => Effect.Effect<void, never, Scope.Scope>
}

const QUERY_TIMEOUT = Duration.seconds(5)
/** The one PostgreSQL channel of the control plane's notifications (`<channel>\n<payload>`). */
const BUS = "streamspace"

const defaultPeerUrl = (host: string, port: number, tls: boolean) => {
  const h = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host
  return `${tls ? "https" : "http"}://${h.includes(":") ? `[${h}]` : h}:${port}`
}

/** One process: no peers. */
const makeSingle = (self: ReplicaSelf): ReplicasShape => {
  const held = new Set<AgentId>()
  const listeners = new Map<string, Set<(payload: string) => Effect.Effect<void>>>()
  const holder: Holder = { replicaId: self.id, peerUrl: self.peerUrl }
  return {
    clustered: false,
    self,
    holderOf: (id) => Effect.sync(() => (held.has(id) ? Option.some(holder) : Option.none())),
    holders: Effect.sync(() => new Map([...held].map((id) => [id, holder]))),
    claim: (id) => Effect.sync(() => (held.add(id), true)),
    release: (id) => Effect.sync(() => void held.delete(id)),
    onLeaseLost: () => Effect.void,
    notify: (channel, payload) => Effect.forEach([...(listeners.get(channel) ?? [])], (f) => f(payload), { discard: true }),
    listen: (channel, f) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const set = listeners.get(channel) ?? new Set()
          set.add(f)
          listeners.set(channel, set)
        }),
        () => Effect.sync(() => listeners.get(channel)?.delete(f))
      ),
    asLeader: (_name, work) => Effect.asVoid(Effect.forkScoped(work))
  }
}

/** On PostgreSQL: the lease, presence, NOTIFY and advisory-lock singletons. */
const makeClustered = (self: ReplicaSelf, leaseMs: number) =>
  Effect.gen(function*() {
    const pg = yield* PgClient.PgClient
    const registry = makeRegistry(pg, self, leaseMs)
    const renewEvery = Duration.millis(Math.max(100, Math.floor(leaseMs / 3)))
    /** Until when this replica may act as the holder of its agents, by its own clock (never later than the database's). */
    let validUntil = 0
    /** How many times the lease was lost: a renewal that raced a loss does not revive it (the next one is fresh). */
    let losses = 0
    const lostHandlers = new Set<Effect.Effect<void>>()
    const leaseValid = Effect.map(Clock.currentTimeMillis, (now) => now < validUntil)
    const lose = (why: string) =>
      Effect.gen(function*() {
        if (validUntil === 0) return
        validUntil = 0
        losses++
        yield* Effect.logError(`Replicas: lease lost (${why}): closing this replica's agent sockets so they move to a live replica`)
        yield* Effect.forEach([...lostHandlers], (f) => Effect.catchCause(f, (c) => Effect.logError("Replicas: a lease-lost handler failed", c)), { discard: true })
      })
    const renewOnce = Effect.gen(function*() {
      const started = yield* Clock.currentTimeMillis
      const fresh = validUntil === 0
      const before = losses
      const lapsed = yield* registry.renew(fresh).pipe(Effect.timeout(renewEvery))
      if (lapsed && !fresh) yield* lose("the database let it expire")
      if (losses !== before) return
      // Counted from before the renewal was sent: the database's lease ends no earlier than this.
      validUntil = started + leaseMs
      if (fresh && losses > 0) yield* Effect.logInfo("Replicas: lease regained (a new term): this replica takes agents again")
    })
    yield* renewOnce.pipe(Effect.orDie)
    yield* Effect.logInfo(`Replicas: replica ${self.id} registered, peer address ${self.peerUrl}`)
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      yield* Effect.sleep(renewEvery)
      const renewed = yield* Effect.exit(renewOnce)
      if (renewed._tag === "Failure") yield* Effect.logWarning("Replicas: could not renew the lease", renewed.cause)
    })))
    // The lease's own watchdog: not renewed by a margin before it ends (PostgreSQL out of reach, or too slow),
    // this replica stops claiming before the others may consider its agents free.
    const margin = Duration.toMillis(renewEvery) / 2
    yield* Effect.forkScoped(Effect.forever(Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      if (validUntil === 0) return yield* Effect.sleep(Duration.millis(margin))
      const due = validUntil - margin
      if (now < due) return yield* Effect.sleep(Duration.millis(due - now))
      yield* lose("not renewed in time: PostgreSQL out of reach")
    })))
    yield* Effect.addFinalizer(() => registry.resign.pipe(Effect.timeout(renewEvery), Effect.ignore))

    /** A presence query that cannot answer (PostgreSQL out of reach) is logged and answers `fallback`. */
    const orLog = <A>(what: string, fallback: A) => <E>(eff: Effect.Effect<A, E>) =>
      Effect.catchCause(Effect.timeout(eff, QUERY_TIMEOUT), (c) => Effect.as(Effect.logWarning(`Replicas: ${what} failed`, c), fallback))

    // One LISTEN connection for every channel (one PostgreSQL channel, the payload prefixed with ours): a
    // listener per channel would hold a pooled connection each and starve the queries.
    const handlers = new Map<string, Set<{ readonly inbox: Queue.Queue<string>; readonly onReconnect: Effect.Effect<void> }>>()
    const dispatch = (payload: string) =>
      Effect.gen(function*() {
        const cut = payload.indexOf("\n")
        if (cut < 0) return
        for (const h of handlers.get(payload.slice(0, cut)) ?? []) yield* Queue.offer(h.inbox, payload.slice(cut + 1))
      })
    const consume = (queue: Queue.Dequeue<{ readonly payload: string }, unknown>) =>
      Effect.forever(Effect.flatMap(Queue.take(queue), (n) => dispatch(n.payload)))
    const catchUp = Effect.forEach([...handlers.values()].flatMap((set) => [...set]), (h) => h.onReconnect, { discard: true })
    const first = yield* pg.listen(BUS).pipe(Effect.orDie)
    yield* Effect.forkScoped(consume(first).pipe(
      Effect.catchCause((c) => Effect.logWarning("Replicas: the listener stopped; listening again", c)),
      Effect.andThen(Effect.forever(
        Effect.scoped(Effect.gen(function*() {
          const queue = yield* pg.listen(BUS)
          yield* Effect.logInfo("Replicas: listening again; catching up on what may have been notified meanwhile")
          yield* catchUp
          return yield* consume(queue)
        })).pipe(
          Effect.catchCause((c) => Effect.logWarning("Replicas: the listener stopped; listening again", c)),
          Effect.andThen(Effect.sleep(Duration.millis(200)))
        )
      ))
    ))

    const shape: ReplicasShape = {
      clustered: true,
      self,
      holderOf: (id) => registry.holderOf(id).pipe(Effect.map(Option.fromUndefinedOr), orLog("holderOf", Option.none<Holder>())),
      holders: registry.holders.pipe(orLog("reading presence", new Map<AgentId, Holder>())),
      claim: (id) =>
        Effect.gen(function*() {
          if (!(yield* leaseValid)) return false
          return yield* registry.claim(id)
        }).pipe(orLog("claim", false)),
      release: (id) => registry.release(id).pipe(orLog<void>("release", undefined)),
      onLeaseLost: (f) => Effect.acquireRelease(Effect.sync(() => lostHandlers.add(f)), () => Effect.sync(() => lostHandlers.delete(f))),
      notify: (channel, payload) => pg.notify(BUS, `${channel}\n${payload}`).pipe(orLog<void>(`notify ${channel}`, undefined)),
      listen: (channel, f, onReconnect = Effect.void) =>
        Effect.gen(function*() {
          const handler = { inbox: yield* Queue.unbounded<string>(), onReconnect }
          yield* Effect.acquireRelease(
            Effect.sync(() => {
              const set = handlers.get(channel) ?? new Set()
              set.add(handler)
              handlers.set(channel, set)
            }),
            () => Effect.sync(() => handlers.get(channel)?.delete(handler))
          )
          yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(handler.inbox), (payload) =>
            f(payload).pipe(Effect.catchCause((c) => Effect.logError(`Replicas: a ${channel} listener failed`, c))))))
        }),
      asLeader: (name, work) => Effect.asVoid(Effect.forkScoped(asLeader(pg, name, work, renewEvery, leaseValid)))
    }
    // The offline watchdog of the cluster: agents whose holder died (lease expired) are recorded offline.
    yield* shape.asLeader("agent-presence", Effect.forever(Effect.gen(function*() {
      yield* Effect.sleep(renewEvery)
      const offline = yield* registry.sweep.pipe(orLog("the presence sweep", [] as ReadonlyArray<AgentId>))
      if (offline.length > 0) yield* Effect.logInfo(`Replicas: ${offline.length} agent(s) held by no live replica are offline`).pipe(Effect.annotateLogs({ agent_ids: offline }))
    })))
    return shape
  })

export class Replicas extends Context.Service<Replicas, ReplicasShape>()("control-plane/Replicas") {
  /**
   * Clustered on PostgreSQL (DATABASE_URL), single otherwise. `boundPort` is the port the server listens on
   * (for the default peer address). Needs ControlPlaneConfig and the database's PgClient.
   */
  static readonly layer = (boundPort: () => number) =>
    Layer.effect(
      Replicas,
      Effect.gen(function*() {
        const config = yield* ControlPlaneConfig
        const self: ReplicaSelf = {
          id: `cp-${randomUUID()}`,
          peerUrl: (config.peerUrl ?? defaultPeerUrl(config.host, boundPort(), config.tlsCertFile !== undefined)).replace(/\/+$/, "")
        }
        if (Option.isNone(config.database.databaseUrl)) return makeSingle(self)
        return yield* makeClustered(self, Duration.toMillis(config.replicaLease))
      })
    )
  /** The single-process replica (no peers), whatever the database: for tests of one process. */
  static readonly layerSingle = Layer.sync(Replicas, () => makeSingle({ id: `cp-${randomUUID()}`, peerUrl: "http://127.0.0.1:0" }))
}

/** The Replicas in context, or a single process's (services built without one, as in their own tests). */
export const currentReplicas: Effect.Effect<ReplicasShape> = Effect.map(
  Effect.serviceOption(Replicas),
  Option.getOrElse(() => makeSingle({ id: `cp-${randomUUID()}`, peerUrl: "http://127.0.0.1:0" }))
)
