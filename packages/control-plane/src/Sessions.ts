// Sessions: session records and their state machine, and the templates sessions are made from.
//
//   pending -> creating -> running -> terminating -> terminated      (any live state -> failed, with a reason)
//
// create = validate against the template, place (Placement), persist `pending`, dispatch `create_session`
// (`creating`); the command's outcome and the agent's `session_status` reports move it on. delete =
// `delete_session` (`terminating`, then `terminated`). When an agent connects, its hello inventory reconciles
// the records: a running session it no longer has becomes `terminated` (reason `lost_on_agent`); a session it
// has that the control plane does not know is reported (log, metric, `unknownSessions`), never deleted.
import type {
  AgentId,
  CommandId,
  PayloadOf,
  Resources,
  SessionId,
  SessionPhase,
  SessionSpec,
  SessionStatus,
  TemplateName,
  UserId
} from "@streamspace/protocol"
import { parseQuantity } from "@streamspace/protocol"
import { Clock, Context, Effect, FiberSet, Layer, Metric, Result, Schema, Semaphore, Stream } from "effect"
import { randomBytes } from "node:crypto"
import { AgentHub } from "./AgentHub.ts"
import type { User } from "./Auth.ts"
import { CommandDispatcher, type CommandOutcome, type CommandRecord } from "./CommandDispatcher.ts"
import { type MemoryRepo, makeMemoryRepo, RepoError, type SessionRecord, type SessionRepo, type TemplateRecord } from "./internal/sessionRepo.ts"
import { recordCommand, sessionTransitionsTotal, unknownSessionsTotal } from "./Observability.ts"
import { makeStoreRepo } from "./internal/sessionStore.ts"
import { makeUsageCounters } from "./internal/sessionUsage.ts"
import { type Candidate, place } from "./Placement.ts"
import { Store } from "./Store.ts"

export type { SessionRecord, TemplateRecord } from "./internal/sessionRepo.ts"

export class SessionsError extends Schema.TaggedError<SessionsError>()("SessionsError", {
  reason: Schema.Literals(["NotFound", "TemplateNotFound", "TemplateExists", "NoEligibleAgent", "InvalidRequest", "Store"]),
  message: Schema.String,
  /** The request field at fault (TemplateNotFound, InvalidRequest). */
  field: Schema.optionalKey(Schema.String)
}) {}

export interface CreateSessionRequest {
  readonly template: TemplateName
  readonly region?: string | undefined
  readonly resources?: Resources | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly persistent_home?: boolean | undefined
}

export interface CreateTemplateRequest {
  readonly name: TemplateName
  readonly display_name?: string | undefined
  readonly image: string
  readonly resources?: Resources | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly vnc_port?: number | undefined
  readonly persistent_home?: boolean | undefined
}

export interface SessionsShape {
  readonly create: (user: User, request: CreateSessionRequest) => Effect.Effect<SessionRecord, SessionsError>
  /** The user's sessions; all sessions for an admin. Newest first. */
  readonly list: (user: User) => Effect.Effect<ReadonlyArray<SessionRecord>>
  /** NotFound also when the session belongs to someone else (no existence leak). */
  readonly get: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  readonly remove: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  readonly listTemplates: Effect.Effect<ReadonlyArray<TemplateRecord>, SessionsError>
  readonly getTemplate: (name: string) => Effect.Effect<TemplateRecord, SessionsError>
  readonly createTemplate: (request: CreateTemplateRequest) => Effect.Effect<TemplateRecord, SessionsError>
  /** Sessions the agent reported in its last hello that the control plane has no record of. */
  readonly unknownSessions: (agentId: AgentId) => ReadonlyArray<SessionStatus>
  /** Session records by state. */
  readonly stateCounts: Effect.Effect<ReadonlyMap<string, number>>
}

export const SESSION_STATES: ReadonlyArray<SessionPhase> = ["pending", "creating", "running", "terminating", "terminated", "failed"]

const ended = (s: SessionPhase) => s === "terminated" || s === "failed"

/**
 * The transitions the state machine allows: forward only (steps may be skipped), `failed` from any live
 * state; `terminated` and `failed` are final (a failed session's delete still cleans up on the agent).
 */
const allowed = (from: SessionPhase, to: SessionPhase): boolean => {
  switch (from) {
    case "pending":
      return to !== "pending"
    case "creating":
      return to === "running" || to === "terminating" || to === "terminated" || to === "failed"
    case "running":
      return to === "terminating" || to === "terminated" || to === "failed"
    case "terminating":
      return to === "terminated" || to === "failed"
    case "failed":
    case "terminated":
      return false
  }
}

/** Where an agent's report moves a session (the agent's own pending/creating both mean "being created"). */
const targetOf = (phase: SessionPhase): SessionPhase => (phase === "pending" ? "creating" : phase)

const newSessionId = (): SessionId => `s-${randomBytes(6).toString("hex")}` as SessionId

const fromRepo = (e: RepoError) => new SessionsError({ reason: "Store", message: `session store: ${e.message}` })

export const makeWith = Effect.fnUntraced(function*(repo: SessionRepo) {
  const hub = yield* AgentHub
  const dispatcher = yield* CommandDispatcher
  const fibers = yield* FiberSet.make()
  // `lock` covers placement and the reservation it makes (a few microseconds, never a database write), so two
  // creates cannot both take the last slot. Each session's own lock orders that session's transitions and
  // their writes; different sessions are written concurrently.
  const lock = yield* Semaphore.make(1)
  const sessionLocks = new Map<string, { readonly semaphore: Semaphore.Semaphore; users: number }>()
  const withSessionLock = (id: string) => <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.suspend(() => {
      let entry = sessionLocks.get(id)
      if (entry === undefined) {
        entry = { semaphore: Semaphore.makeUnsafe(1), users: 0 }
        sessionLocks.set(id, entry)
      }
      const held = entry
      held.users++
      return held.semaphore.withPermits(1)(effect).pipe(
        Effect.ensuring(Effect.sync(() => {
          if (--held.users === 0) sessionLocks.delete(id)
        }))
      )
    })
  const sessions = new Map<string, SessionRecord>()
  // Per-agent usage of the live records, kept in step with `sessions` by `put` (placement reads it per create).
  // A placed session counts from its placement on (`reserved`), before its record is written and visible.
  const usage = makeUsageCounters()
  const reserved = new Map<string, SessionRecord>()
  /** The only way a record enters or changes in `sessions`. */
  const put = (next: SessionRecord) => {
    usage.replace(sessions.get(next.id) ?? reserved.get(next.id), next)
    reserved.delete(next.id)
    sessions.set(next.id, next)
  }
  const reserve = (record: SessionRecord) => {
    usage.replace(undefined, record)
    reserved.set(record.id, record)
  }
  const unreserve = (record: SessionRecord) => {
    if (reserved.delete(record.id)) usage.replace(record, { ...record, state: "failed" })
  }
  for (const s of yield* repo.loadSessions.pipe(Effect.mapError(fromRepo), Effect.orDie)) put(s)
  const unknownByAgent = new Map<string, ReadonlyArray<SessionStatus>>()
  const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

  /** Moves a session to `to` if the machine allows it; returns the record as it is afterwards. */
  const transition = Effect.fnUntraced(function*(
    id: SessionId,
    to: SessionPhase,
    detail: { readonly reason?: string | undefined; readonly message?: string | undefined } = {},
    patch: Partial<Pick<SessionRecord, "createCommandId" | "deleteCommandId">> = {}
  ) {
    const current = sessions.get(id)
    if (current === undefined) return undefined
    const same = current.state === to
    if (!same && !allowed(current.state, to)) {
      yield* Effect.logDebug("session transition ignored").pipe(Effect.annotateLogs({ session_id: id, from: current.state, to }))
      // The agent's report can overtake the dispatch (running before creating is recorded): the command id
      // is still the session's, even though the state stays. (Command ids live in the commands table.)
      if (Object.keys(patch).length === 0) return current
      const patched: SessionRecord = { ...current, ...patch }
      put(patched)
      return patched
    }
    if (same && Object.keys(patch).length === 0 && detail.reason === undefined) return current
    const next: SessionRecord = {
      ...current,
      ...patch,
      state: to,
      reason: same ? detail.reason ?? current.reason : detail.reason,
      message: same ? detail.message ?? current.message : detail.message,
      updatedAt: yield* now
    }
    yield* repo.updateSession(next, current.state).pipe(Effect.mapError(fromRepo))
    put(next)
    if (!same) {
      yield* Metric.update(Metric.withAttributes(sessionTransitionsTotal, { state: to }), 1)
      yield* Effect.logInfo(`session ${current.state} -> ${to}${next.reason === undefined ? "" : ` (${next.reason})`}`).pipe(
        Effect.annotateLogs({ session_id: id, agent_id: next.agentId, from: current.state, to, ...(next.reason === undefined ? {} : { reason: next.reason }) })
      )
    }
    return next
  }, (effect, id) => withSessionLock(id)(effect))

  /** Applies what an agent observed about one of its sessions. */
  const applyStatus = Effect.fnUntraced(function*(agentId: AgentId, status: SessionStatus) {
    const s = sessions.get(status.session_id)
    if (s === undefined || s.agentId !== agentId) return
    const to = targetOf(status.phase)
    // Whichever comes first, the delete's outcome or the agent's report, a deletion ends as `deleted`.
    const reason = s.state === "terminating" && to === "terminated" ? "deleted" : status.reason
    yield* transition(s.id, to, { reason, message: status.message })
  })

  const awaitCommand = Effect.fnUntraced(function*(record: CommandRecord) {
    const started = yield* Clock.currentTimeMillis
    const outcome = yield* dispatcher.await(record.id).pipe(
      Effect.tapError(() => Effect.flatMap(Clock.currentTimeMillis, (t) => recordCommand(record.action, "error", started, t)))
    )
    yield* recordCommand(record.action, outcome, started, yield* Clock.currentTimeMillis)
    return outcome
  })

  const onCreateOutcome = (id: SessionId, agentId: AgentId, outcome: CommandOutcome) =>
    outcome._tag === "Completed"
      ? outcome.result.action === "create_session"
        ? applyStatus(agentId, outcome.result.session)
        : Effect.void
      : transition(id, "failed", { reason: outcome.error.code, message: outcome.error.message }).pipe(Effect.asVoid)

  const onDeleteOutcome = (id: SessionId, outcome: CommandOutcome) =>
    outcome._tag === "Completed" || outcome.error.code === "session_not_found"
      ? transition(id, "terminated", { reason: "deleted" }).pipe(Effect.asVoid)
      : transition(id, "failed", { reason: "delete_failed", message: `${outcome.error.code}: ${outcome.error.message}` }).pipe(Effect.asVoid)

  /** Follows a command to its outcome in the background; the fiber belongs to the service's scope. */
  const follow = (record: CommandRecord, onOutcome: (o: CommandOutcome) => Effect.Effect<unknown, unknown>) =>
    FiberSet.run(
      fibers,
      awaitCommand(record).pipe(
        Effect.flatMap(onOutcome),
        Effect.catchCause((cause) => Effect.logWarning("following a command failed", cause).pipe(Effect.annotateLogs({ command_id: record.id, action: record.action })))
      )
    )

  /** Each agent as placement sees it; O(agents), reading the usage counters. */
  const candidates = Effect.map(hub.list, (agents) =>
    agents.map((a): Candidate => {
      const used = usage.get(a.id)
      return {
        id: a.id,
        region: a.region,
        status: a.status,
        enrollment: a.enrollment,
        connected: a.connected,
        draining: a.draining,
        capacity: a.capacity,
        activeSessions: Math.max(used.sessions, a.activeSessions),
        used: { cpu: used.cpu, memory: used.memory }
      }
    }))

  // Templates are never changed or removed once created, and a user row only needs writing when it is new or
  // its role changed: both are remembered, so a create does not read or write them every time.
  const templates = new Map<string, TemplateRecord>()
  const findTemplate = (name: TemplateName) => {
    const known = templates.get(name)
    return known !== undefined
      ? Effect.succeed<TemplateRecord | undefined>(known)
      : repo.getTemplate(name).pipe(
        Effect.tap((t) => Effect.sync(() => t !== undefined && templates.set(t.name, t))),
        Effect.mapError(fromRepo)
      )
  }
  const usersWritten = new Map<string, User["role"]>()
  const ensureUser = (user: User) =>
    usersWritten.get(user.id) === user.role
      ? Effect.void
      : repo.ensureUser(user.id, user.role).pipe(
        Effect.tap(() => Effect.sync(() => usersWritten.set(user.id, user.role))),
        Effect.mapError(fromRepo)
      )

  const getTemplate = Effect.fn("Sessions.getTemplate")(function*(name: string) {
    const t = yield* findTemplate(name as TemplateName)
    if (t === undefined) return yield* new SessionsError({ reason: "NotFound", message: `no template named "${name}"` })
    return t
  })

  const create = Effect.fn("Sessions.create")(function*(user: User, request: CreateSessionRequest) {
    yield* ensureUser(user)
    const template = yield* findTemplate(request.template)
    if (template === undefined) {
      return yield* new SessionsError({ reason: "TemplateNotFound", field: "template", message: `template: no template named "${request.template}"` })
    }
    const resources: Resources = { ...template.resources, ...request.resources }
    const env = { ...template.env, ...request.env }
    const spec: SessionSpec = {
      user_id: user.id,
      template: template.name,
      image: template.image,
      ...(Object.keys(resources).length > 0 ? { resources } : {}),
      ...(Object.keys(env).length > 0 ? { env } : {}),
      persistent_home: request.persistent_home ?? template.persistentHome,
      vnc_port: template.vncPort
    }
    // Placement and the reservation under one lock, so two creates cannot both take the last slot. The
    // record is written outside it (many creates write at once); a failed write gives the slot back.
    const record = yield* lock.withPermits(1)(Effect.gen(function*() {
      const placed = place(yield* candidates, {
        region: request.region,
        cpu: parseQuantity(resources.cpu ?? "0") ?? 0,
        memory: parseQuantity(resources.memory ?? "0") ?? 0
      })
      if (Result.isFailure(placed)) {
        return yield* new SessionsError({ reason: "NoEligibleAgent", message: placed.failure.message })
      }
      const at = yield* now
      const record: SessionRecord = {
        id: newSessionId(),
        userId: user.id,
        template: template.name,
        agentId: placed.success.agent.id,
        region: request.region,
        state: "pending",
        reason: undefined,
        message: undefined,
        spec,
        createCommandId: undefined,
        deleteCommandId: undefined,
        createdAt: at,
        updatedAt: at
      }
      reserve(record)
      return record
    }))
    yield* repo.insertSession(record).pipe(
      Effect.mapError(fromRepo),
      Effect.onExit((exit) => Effect.sync(() => (exit._tag === "Success" ? put(record) : unreserve(record))))
    )
    yield* Effect.annotateCurrentSpan({ session_id: record.id, agent_id: record.agentId })
    yield* Effect.logInfo("session placed").pipe(Effect.annotateLogs({ session_id: record.id, agent_id: record.agentId, user_id: user.id, template: template.name }))
    const command = yield* dispatcher.dispatch(record.agentId, { action: "create_session", args: { session_id: record.id, spec } }, { sessionId: record.id }).pipe(
      Effect.catch((e) =>
        transition(record.id, "failed", { reason: "dispatch_failed", message: e.message }).pipe(
          Effect.andThen(Effect.fail(new SessionsError({ reason: "Store", message: `could not dispatch create_session: ${e.message}` })))
        )
      )
    )
    const creating = yield* transition(record.id, "creating", {}, { createCommandId: command.id })
    yield* follow(command, (o) => onCreateOutcome(record.id, record.agentId, o))
    return creating ?? record
  })

  const visible = (user: User, s: SessionRecord | undefined): s is SessionRecord => s !== undefined && (user.role === "admin" || s.userId === user.id)

  const get = Effect.fn("Sessions.get")(function*(user: User, id: string) {
    const s = sessions.get(id)
    if (!visible(user, s)) return yield* new SessionsError({ reason: "NotFound", message: `no session "${id.slice(0, 80)}"` })
    return s
  })

  const remove = Effect.fn("Sessions.remove")(function*(user: User, id: string) {
    const s = yield* get(user, id)
    if (s.state === "terminated" || s.state === "terminating" || s.deleteCommandId !== undefined) return s
    yield* Effect.annotateCurrentSpan({ session_id: s.id, agent_id: s.agentId })
    const command = yield* dispatcher.dispatch(s.agentId, { action: "delete_session", args: { session_id: s.id } }, { sessionId: s.id }).pipe(
      Effect.mapError((e) => new SessionsError({ reason: "Store", message: `could not dispatch delete_session: ${e.message}` }))
    )
    // A failed session stays failed (final); its delete still removes what is left on the agent.
    const next = yield* transition(s.id, s.state === "failed" ? "failed" : "terminating", {}, { deleteCommandId: command.id })
    yield* follow(command, (o) => onDeleteOutcome(s.id, o))
    return next ?? s
  })

  const list = Effect.fn("Sessions.list")(function*(user: User) {
    return [...sessions.values()]
      .filter((s) => visible(user, s))
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? -1 : 1))
  })

  const createTemplate = Effect.fn("Sessions.createTemplate")(function*(request: CreateTemplateRequest) {
    const t: TemplateRecord = {
      name: request.name,
      displayName: request.display_name ?? request.name,
      image: request.image,
      resources: request.resources,
      env: request.env ?? {},
      vncPort: request.vnc_port ?? 5900,
      persistentHome: request.persistent_home ?? false,
      createdAt: yield* now
    }
    yield* repo.insertTemplate(t).pipe(
      Effect.mapError((e) =>
        e.reason === "Conflict"
          ? new SessionsError({ reason: "TemplateExists", field: "name", message: `name: a template named "${t.name}" already exists` })
          : fromRepo(e)
      )
    )
    return t
  })

  /** Reconciles the records of one agent with the inventory in its hello. */
  const reconcile = Effect.fnUntraced(function*(agentId: AgentId, hello: PayloadOf<"hello">) {
    const inventory = new Map(hello.sessions.map((s) => [s.session_id as string, s]))
    for (const id of usage.liveIds(agentId)) {
      const s = sessions.get(id)
      if (s === undefined || ended(s.state)) continue
      const seen = inventory.get(s.id)
      if (seen !== undefined) {
        yield* applyStatus(agentId, seen)
        continue
      }
      // A create still on its way to the agent is not lost; only what the agent had and no longer has is.
      const createDone = s.state === "creating" && s.createCommandId !== undefined &&
        (yield* dispatcher.get(s.createCommandId).pipe(Effect.map((c) => c.state === "completed"), Effect.orElseSucceed(() => false)))
      if (s.state === "running" || createDone) {
        yield* transition(s.id, "terminated", {
          reason: "lost_on_agent",
          message: `agent ${agentId} no longer runs this session (absent from its inventory on reconnect)`
        })
      }
    }
    const unknown = hello.sessions.filter((st) => sessions.get(st.session_id)?.agentId !== agentId)
    unknownByAgent.set(agentId, unknown)
    if (unknown.length > 0) {
      yield* Metric.update(Metric.withAttributes(unknownSessionsTotal, { agent_id: agentId }), unknown.length)
      yield* Effect.logWarning("agent runs sessions the control plane does not know; leaving them alone").pipe(Effect.annotateLogs({ agent_id: agentId, session_ids: unknown.map((u) => u.session_id) }))
    }
  })

  // After a restart: follow the commands still open for live sessions again (the dispatcher redelivers them
  // and can await outcomes of commands dispatched before the restart).
  for (const s of sessions.values()) {
    const open = s.state === "terminating" ? s.deleteCommandId : s.state === "creating" ? s.createCommandId : undefined
    if (open === undefined) continue
    yield* dispatcher.get(open).pipe(
      Effect.flatMap((command) =>
        command.action === "delete_session"
          ? follow(command, (o) => onDeleteOutcome(s.id, o))
          : follow(command, (o) => onCreateOutcome(s.id, s.agentId, o))
      ),
      Effect.catch((e) => Effect.logWarning(`cannot follow command ${open} of session ${s.id} after restart: ${e.message}`))
    )
  }

  yield* hub.events.pipe(
    Stream.runForEach((event) => {
      switch (event._tag) {
        case "Connected":
          return reconcile(event.agentId, event.hello)
        case "Message":
          return event.message.type === "session_status" ? applyStatus(event.agentId, event.message.payload) : Effect.void
        default:
          return Effect.void
      }
    }),
    Effect.catchCause((cause) => Effect.logError("session event loop stopped", cause)),
    Effect.forkScoped({ startImmediately: true })
  )

  const counts = (key: (s: SessionRecord) => string | undefined) =>
    Effect.sync(() => {
      const m = new Map<string, number>()
      for (const s of sessions.values()) {
        const k = key(s)
        if (k !== undefined) m.set(k, (m.get(k) ?? 0) + 1)
      }
      return m as ReadonlyMap<string, number>
    })

  return Sessions.of({
    create,
    list,
    get,
    remove,
    listTemplates: repo.listTemplates.pipe(Effect.mapError(fromRepo), Effect.withSpan("Sessions.listTemplates")),
    getTemplate,
    createTemplate,
    unknownSessions: (agentId) => unknownByAgent.get(agentId) ?? [],
    stateCounts: counts((s) => s.state)
  })
})

export class Sessions extends Context.Service<Sessions, SessionsShape>()("control-plane/Sessions") {
  /** Sessions persisted through the Store. Needs Store, AgentHub and CommandDispatcher. */
  static readonly layer = Layer.effect(Sessions, Effect.flatMap(Store, (store) => makeWith(makeStoreRepo(store))))
  /** Sessions over the in-memory repository (tests, throwaway demos). Needs AgentHub and CommandDispatcher. */
  static readonly layerMemory = (repo: MemoryRepo = makeMemoryRepo()) => Layer.effect(Sessions, makeWith(repo))
}

/** Re-exported so tests and the Store adapter need only this module. */
export { makeMemoryRepo, RepoError }
export type { MemoryRepo, SessionRepo }
