// Homes: the users' home volumes on the agents. Each agent is asked for its list (`list_homes`) when it
// connects and every HOME_SCAN_INTERVAL; the control plane adds what only it knows (a live session of the user
// has the home, when it was last used) and keeps the records in the Store. Users see their own homes, admins
// all; a home is deleted (`delete_home`) only when no session uses it, on request or by the retention policy:
// with HOME_RETENTION set, a home unused that long first carries `expires_at` for HOME_RETENTION_WARNING, then
// goes. Use in between cancels it.
import type { AgentId, SessionPhase } from "@streamspace/protocol"
import { Clock, Context, Effect, FiberSet, Layer, Schedule, Schema } from "effect"
import { randomBytes } from "node:crypto"
import { AgentHub } from "./AgentHub.ts"
import type { User } from "./Auth.ts"
import { CommandDispatcher } from "./CommandDispatcher.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { recordOf, retentionStep, type SessionUse } from "./internal/homes/policy.ts"
import { currentReplicas } from "./Replicas.ts"
import { Sessions } from "./Sessions.ts"
import { type HomeRecord, Store, type StoreShape } from "./Store.ts"

export type { HomeRecord } from "./Store.ts"

export class HomesError extends Schema.TaggedError<HomesError>()("HomesError", {
  reason: Schema.Literals(["NotFound", "InUse", "Forbidden", "Unavailable"]),
  message: Schema.String
}) {}

/** Where the records live: the Store, or memory (tests). */
export interface HomesRepo {
  readonly list: (filter?: { readonly userId?: string | undefined; readonly agentId?: string | undefined }) => Effect.Effect<ReadonlyArray<HomeRecord>, HomesError>
  readonly put: (home: HomeRecord) => Effect.Effect<void, HomesError>
  readonly remove: (id: string) => Effect.Effect<void, HomesError>
}

const unavailable = (e: { readonly message: string }) => new HomesError({ reason: "Unavailable", message: `home store: ${e.message}` })

export const onStore = (store: StoreShape): HomesRepo => ({
  list: (filter) => store.homes.list(filter).pipe(Effect.mapError(unavailable)),
  put: (h) => store.homes.put(h).pipe(Effect.asVoid, Effect.mapError(unavailable)),
  remove: (id) => store.homes.remove(id).pipe(Effect.mapError(unavailable))
})

export const makeMemoryRepo = (): HomesRepo & { readonly rows: Map<string, HomeRecord> } => {
  const rows = new Map<string, HomeRecord>()
  return {
    rows,
    list: (filter) =>
      Effect.sync(() =>
        [...rows.values()].filter((h) => (filter?.userId === undefined || h.userId === filter.userId) && (filter?.agentId === undefined || h.agentId === filter.agentId))
      ),
    put: (h) =>
      Effect.sync(() => {
        const same = [...rows.values()].find((r) => r.agentId === h.agentId && r.name === h.name)
        rows.set(same?.id ?? h.id, { ...h, id: same?.id ?? h.id })
      }),
    remove: (id) => Effect.sync(() => void rows.delete(id))
  }
}

export interface HomesShape {
  /** An admin's: everyone's, or `forUser`'s; a user's: their own (asking for another user's is Forbidden). */
  readonly list: (user: User, forUser?: string) => Effect.Effect<ReadonlyArray<HomeRecord>, HomesError>
  /** Deletes a home on its agent (owner or admin); InUse while a session has it. NotFound also for others' homes. */
  readonly remove: (user: User, id: string) => Effect.Effect<void, HomesError>
  /** Asks one agent for its homes and records them. */
  readonly refresh: (agentId: AgentId) => Effect.Effect<void, HomesError>
  /** Applies the retention policy once, now. */
  readonly sweep: Effect.Effect<void, HomesError>
}

/** Reads every session record (the control plane acts as an admin here). */
const everyone: User = { id: "system" as User["id"], role: "admin", groups: [] }
const ended = (s: SessionPhase) => s === "terminated" || s === "failed"

export const makeWith = Effect.fnUntraced(function*(repo: HomesRepo) {
  const config = yield* ControlPlaneConfig
  const hub = yield* AgentHub
  const dispatcher = yield* CommandDispatcher
  const sessions = yield* Sessions
  const fibers = yield* FiberSet.make()
  const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

  /** What the session records say about the home of `userId` on `agentId`. */
  const useOf = Effect.fnUntraced(function*(agentId: AgentId, userId: string) {
    let live = false
    let lastEnded: Date | undefined
    for (const s of yield* sessions.list(everyone).pipe(Effect.mapError(unavailable))) {
      if (s.agentId !== agentId || s.userId !== userId || !s.spec.persistent_home) continue
      if (!ended(s.state)) live = true
      else if (lastEnded === undefined || s.updatedAt > lastEnded) lastEnded = s.updatedAt
    }
    return { live, lastEnded } satisfies SessionUse
  })

  const refresh = Effect.fn("Homes.refresh")(function*(agentId: AgentId) {
    const command = yield* dispatcher.dispatch(agentId, { action: "list_homes", args: {} }).pipe(Effect.mapError(unavailable))
    const outcome = yield* dispatcher.await(command.id).pipe(Effect.mapError(unavailable))
    if (outcome._tag === "Failed") return yield* new HomesError({ reason: "Unavailable", message: `agent ${agentId} could not list its homes: ${outcome.error.code}: ${outcome.error.message}` })
    if (outcome.result.action !== "list_homes") return
    const at = yield* now
    const before = new Map((yield* repo.list({ agentId })).map((h) => [h.name, h]))
    for (const listed of outcome.result.homes) {
      const prev = before.get(listed.name)
      before.delete(listed.name)
      yield* repo.put(recordOf(prev?.id ?? `h-${randomBytes(6).toString("hex")}`, agentId, listed, prev, yield* useOf(agentId, listed.user_id), at))
    }
    // What the agent no longer has is gone (deleted out of band, or by us).
    for (const gone of before.values()) yield* repo.remove(gone.id)
  })

  /** Deletes the home on its agent and forgets it. */
  const destroy = Effect.fnUntraced(function*(h: HomeRecord) {
    const command = yield* dispatcher.dispatch(h.agentId, { action: "delete_home", args: { name: h.name, user_id: h.userId } }).pipe(Effect.mapError(unavailable))
    const outcome = yield* dispatcher.await(command.id).pipe(Effect.mapError(unavailable))
    if (outcome._tag === "Failed") {
      if (outcome.error.code === "home_in_use") {
        yield* repo.put({ ...h, inUse: true, expiresAt: undefined, lastUsedAt: yield* now })
        return yield* new HomesError({ reason: "InUse", message: `home ${h.id} is mounted by a session on agent ${h.agentId}` })
      }
      return yield* new HomesError({ reason: "Unavailable", message: `agent ${h.agentId} could not delete home ${h.name}: ${outcome.error.code}: ${outcome.error.message}` })
    }
    yield* repo.remove(h.id)
    yield* Effect.logInfo("home deleted").pipe(Effect.annotateLogs({ home_id: h.id, agent_id: h.agentId, user_id: h.userId, home: h.name }))
  })

  const list = Effect.fn("Homes.list")(function*(user: User, forUser?: string) {
    if (user.role !== "admin" && forUser !== undefined && forUser !== user.id) {
      return yield* new HomesError({ reason: "Forbidden", message: "only admins may list other users' homes" })
    }
    return yield* repo.list({ userId: user.role === "admin" ? forUser : user.id })
  })

  const remove = Effect.fn("Homes.remove")(function*(user: User, id: string) {
    const h = (yield* repo.list(user.role === "admin" ? {} : { userId: user.id })).find((x) => x.id === id)
    if (h === undefined) return yield* new HomesError({ reason: "NotFound", message: `no home "${id.slice(0, 80)}"` })
    if (h.inUse || (yield* useOf(h.agentId, h.userId)).live) {
      return yield* new HomesError({ reason: "InUse", message: `home ${h.id} is in use by a session of ${h.userId}; delete (or wait for) that session first` })
    }
    yield* destroy(h)
  })

  const sweep = Effect.gen(function*() {
    const at = yield* now
    for (const h of yield* repo.list()) {
      // The session records are newer than the last listing: a session started since then is a use.
      const use = yield* useOf(h.agentId, h.userId)
      const current = use.live ? { ...h, inUse: true, lastUsedAt: at } : h
      const step = retentionStep(current, config.homeRetention, config.homeRetentionWarning, at)
      switch (step._tag) {
        case "Keep":
          if (current !== h) yield* repo.put(current)
          break
        case "Cancel":
          yield* repo.put({ ...current, expiresAt: undefined })
          break
        case "Warn":
          yield* repo.put({ ...current, expiresAt: step.expiresAt })
          yield* Effect.logInfo(`home unused since ${h.lastUsedAt.toISOString()}; deleted at ${step.expiresAt.toISOString()} unless used`).pipe(
            Effect.annotateLogs({ home_id: h.id, agent_id: h.agentId, user_id: h.userId })
          )
          break
        case "Delete":
          yield* destroy(h).pipe(Effect.catch((e) => Effect.logWarning(`retention: home ${h.id} not deleted: ${e.message}`)))
          break
      }
    }
  }).pipe(Effect.withSpan("Homes.sweep"))

  const scan = Effect.gen(function*() {
    for (const a of yield* hub.list) {
      if (a.connected && a.enrollment === "approved") yield* refresh(a.id).pipe(Effect.catch((e) => Effect.logWarning(`homes of agent ${a.id}: ${e.message}`)))
    }
    yield* sweep.pipe(Effect.catch((e) => Effect.logWarning(`home retention: ${e.message}`)))
  })

  // Listing waits for the agent's answer, which arrives through the same report queue: never block it.
  yield* hub.subscribe({
    onConnected: (agentId) => FiberSet.run(fibers, refresh(agentId).pipe(Effect.catch((e) => Effect.logWarning(`homes of agent ${agentId}: ${e.message}`)))).pipe(Effect.asVoid)
  })
  // One replica scans and applies the retention (the leader of home-retention; with one process, this one).
  yield* (yield* currentReplicas).asLeader("home-retention", Effect.asVoid(Effect.repeat(Effect.delay(scan, config.homeScanInterval), Schedule.forever)))

  return Homes.of({ list, remove, refresh, sweep })
})

export class Homes extends Context.Service<Homes, HomesShape>()("control-plane/Homes") {
  /** Records in the Store. Needs ControlPlaneConfig, AgentHub, CommandDispatcher, Sessions and Store. */
  static readonly layer = Layer.effect(Homes, Effect.flatMap(Store, (store) => makeWith(onStore(store))))
  /** Records in memory (tests). */
  static readonly layerMemory = (repo: HomesRepo = makeMemoryRepo()) => Layer.effect(Homes, makeWith(repo))
}
