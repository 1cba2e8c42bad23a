// Sessions: session records and their state machine, and the templates sessions are made from.
//
// create = validate against the template, place (Placement), persist `pending`, dispatch `create_session`
// (`creating`); the command's outcome and the agent's `session_status` reports move it on. delete =
// `delete_session` (`terminating`, then `terminated`). Sessions is the one consumer of agents' session reports
// and hello inventories (AgentHub routes them here).
//
// Modules (internal/sessions/): book (the records in memory and the state machine), lifecycle (command
// outcomes, reconcile on connect), repo (the Store or memory), usage (per-agent usage for placement),
// templates (what a template change means for existing sessions: `resumeSpec`), templateOps (reading templates
// for creates, the admin's template operations), requests (the API's request schemas), warmPools (the
// templates' warm pools, sent to the agents). Creates are written with group commit (internal/groupCommit.ts).
import type { AgentId, SessionId, SessionSpec, SessionStatus } from "@streamspace/protocol"
import { parseDuration, parseQuantity } from "@streamspace/protocol"
import { Array as Arr, Clock, Context, Duration, Effect, FiberSet, Layer, Option, Result, Schedule, Stream } from "effect"
import { randomBytes } from "node:crypto"
import { AgentHub } from "./AgentHub.ts"
import type { User } from "./Auth.ts"
import { CommandDispatcher } from "./CommandDispatcher.ts"
import { ControlPlaneConfig, type ControlPlaneConfigShape, DEFAULT_SESSION_RESOURCE_BOUNDS, DEFAULT_USER_LIMITS } from "./ControlPlaneConfig.ts"
import { announcing, followOtherReplicas, makeActivitySharing, policyLeadership } from "./internal/sessions/coherence.ts"
import { applyStatus, type Book, ended, fromRepo, liveCount, makeBook, put, reserve, SessionsError, transition, unreserve, userActor } from "./internal/sessions/book.ts"
import { hibernate, resume } from "./internal/sessions/hibernation.ts"
import {
  DEFAULT_POLICY,
  due,
  lifecycleJson,
  type LifecycleJson,
  logExpiry,
  makePolicyBook,
  noteInput,
  noteKeepalive,
  type PolicyDefaults,
  resolvePolicy
} from "./internal/sessions/policy.ts"
import { GROUP_COMMIT_MAX, makeGroupCommit } from "./internal/groupCommit.ts"
import { follow, followOpenCommands, reconcile } from "./internal/sessions/lifecycle.ts"
import { makeMemoryRepo, type MemoryRepo, onStore, type SessionRepo } from "./internal/sessions/repo.ts"
import { pushWarmPools } from "./internal/sessions/warmPools.ts"
import { type LimitRefusal, makeCreateRate, resourcesIssue, sessionsRefusal } from "./internal/sessions/userLimits.ts"
import { chargedTeam, liveRecords, quotaRefusal, storageRefusal, teamAgents, teamOf } from "./internal/sessions/teamCharge.ts"
import { place } from "./Placement.ts"
import { Teams } from "./Teams.ts"
import { currentReplicas } from "./Replicas.ts"
import { type Actor, type SessionEvent, type SessionKey, type SessionRecord, Store, type TemplateRecord } from "./Store.ts"

export { SESSION_STATES, SessionsError } from "./internal/sessions/book.ts"
export { CreateSessionRequest, CreateTemplateRequest, PatchTemplateRequest } from "./internal/sessions/requests.ts"
import type { CreateSessionRequest, CreateTemplateRequest, PatchTemplateRequest } from "./internal/sessions/requests.ts"
import { groupedTemplateReads, makeTemplateOps } from "./internal/sessions/templateOps.ts"
export { makeMemoryRepo, type MemoryRepo, RepoError, type SessionRepo } from "./internal/sessions/repo.ts"
export type { Actor, SessionEvent, SessionRecord, TemplateRecord } from "./Store.ts"

export interface SessionsShape {
  readonly create: (user: User, request: CreateSessionRequest) => Effect.Effect<SessionRecord, SessionsError>
  /** The user's sessions; all sessions for an admin. Newest first (created, then id, descending). */
  readonly list: (user: User) => Effect.Effect<ReadonlyArray<SessionRecord>, SessionsError>
  /** One page of `list`: at most `limit` sessions after `after` (the last one of the previous page). */
  readonly page: (user: User, limit: number | undefined, after: SessionKey | undefined) => Effect.Effect<ReadonlyArray<SessionRecord>, SessionsError>
  /** NotFound also when the session belongs to someone else (no existence leak). */
  readonly get: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  readonly remove: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  /** Deletes the pod, keeps the home: `hibernating`, then `hibernated`. Conflict unless running with a persistent home. */
  readonly hibernate: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  /** A new pod on the same home and agent: `creating`, then `running`. Conflict unless hibernated. */
  readonly resume: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  readonly listTemplates: Effect.Effect<ReadonlyArray<TemplateRecord>, SessionsError>
  readonly getTemplate: (name: string) => Effect.Effect<TemplateRecord, SessionsError>
  readonly createTemplate: (request: CreateTemplateRequest) => Effect.Effect<TemplateRecord, SessionsError>
  /** Counts as activity for the idle limit (capped by max_lifetime); Conflict unless running. */
  readonly keepalive: (user: User, id: string) => Effect.Effect<SessionRecord, SessionsError>
  /** User input (key, pointer, clipboard) a viewer sent to a session: activity for the idle limit. */
  readonly noteInput: (sessionId: string, viewer: string) => Effect.Effect<void>
  /** The session's limits, warning and activity, as the API shows them. */
  readonly lifecycle: (session: SessionRecord) => LifecycleJson
  /** The session's state changes, oldest first, with reasons and who made them (same visibility as `get`). */
  readonly history: (user: User, id: string) => Effect.Effect<ReadonlyArray<SessionEvent>, SessionsError>
  /** Changes a template for the sessions created from now on (and resumes); NotFound if there is none. */
  readonly updateTemplate: (name: string, request: PatchTemplateRequest) => Effect.Effect<TemplateRecord, SessionsError>
  /** Removes a template; its sessions keep running with the spec they were created with. NotFound if there is none. */
  readonly deleteTemplate: (name: string) => Effect.Effect<void, SessionsError>
  /** Sessions the agent reported in its last hello that the control plane has no record of. */
  readonly unknownSessions: (agentId: AgentId) => ReadonlyArray<SessionStatus>
  /** The live records (not ended) and the creates placed but not yet written: for usage figures. */
  readonly live: Effect.Effect<ReadonlyArray<SessionRecord>>
  /** Session records by state. */
  readonly stateCounts: Effect.Effect<ReadonlyMap<string, number>>
}

const newSessionId = (): SessionId => `s-${randomBytes(6).toString("hex")}` as SessionId

const visible = (user: User, s: SessionRecord | undefined): s is SessionRecord => s !== undefined && (user.role === "admin" || s.userId === user.id)

/** Writes the user row when it is new or its role changed (sessions refer to it). */
const ensureUser = (book: Book, user: User) =>
  book.usersWritten.get(user.id) === user.role
    ? Effect.void
    : book.repo.ensureUser(user.id, user.role).pipe(
      Effect.tap(() => Effect.sync(() => book.usersWritten.set(user.id, user.role))),
      Effect.mapError(fromRepo)
    )

/** The spec sent to the agent: the template's, with what the request overrides. */
const specOf = (user: User, template: TemplateRecord, request: CreateSessionRequest): SessionSpec => {
  const resources = { ...template.resources, ...request.resources }
  const env = { ...template.env, ...request.env }
  return {
    user_id: user.id,
    template: template.name,
    image: template.image,
    ...(Object.keys(resources).length > 0 ? { resources } : {}),
    ...(Object.keys(env).length > 0 ? { env } : {}),
    persistent_home: request.persistent_home ?? template.persistentHome,
    vnc_port: template.vncPort
  }
}

/** What Sessions enforces on requests: the per-user limits and the default resource bounds. */
export type SessionRules = Pick<ControlPlaneConfigShape, "userLimits" | "sessionResourceBounds">

export const DEFAULT_SESSION_RULES: SessionRules = { userLimits: DEFAULT_USER_LIMITS, sessionResourceBounds: DEFAULT_SESSION_RESOURCE_BOUNDS }

/** The rules from ControlPlaneConfig when it is provided (it always is in the control plane), else the defaults. */
const rulesFromConfig = Effect.map(Effect.serviceOption(ControlPlaneConfig), Option.match({ onNone: () => DEFAULT_SESSION_RULES, onSome: (c): SessionRules => c }))

const refused = (r: LimitRefusal) =>
  new SessionsError({ reason: "LimitExceeded", message: r.message, limit: r.limit, ...(r.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: r.retryAfterSeconds }) })

/** How often the lifecycle policy looks at the running sessions, unless SESSION_POLICY_INTERVAL says otherwise. */
export const POLICY_TICK = Duration.seconds(1)

export const makeWith = Effect.fnUntraced(function*(ownRepo: SessionRepo, rules: SessionRules = DEFAULT_SESSION_RULES) {
  const hub = yield* AgentHub
  const dispatcher = yield* CommandDispatcher
  // With replicas, every replica's book follows the others' session writes (internal/sessions/coherence.ts).
  const replicas = yield* currentReplicas
  const repo = replicas.clustered ? announcing(ownRepo, replicas) : ownRepo
  const book = yield* makeBook(repo, dispatcher)
  if (replicas.clustered) yield* followOtherReplicas(book, replicas)
  const policyBook = makePolicyBook()
  const config = yield* Effect.serviceOption(ControlPlaneConfig)
  const defaults: PolicyDefaults = Option.match(config, {
    onNone: () => DEFAULT_POLICY,
    onSome: (c) => ({ idleTimeout: c.sessionIdleTimeout, maxLifetime: c.sessionMaxLifetime, idleAction: c.sessionIdleAction, warnBefore: c.sessionWarnBefore })
  })
  const createRate = makeCreateRate(rules.userLimits.createsPerMinute)
  const templateForCreate = yield* groupedTemplateReads(book)
  const templates = makeTemplateOps(book, hub, rules)
  // Creates written while others are being written go together, in one statement (group commit). A session
  // charged to a team is written alone, in the transaction that checks the team's quota in the database.
  const insertUncharged = yield* makeGroupCommit({
    one: ({ actor, record }: { readonly record: SessionRecord; readonly actor: Actor }) => repo.insertSession(record, actor),
    many: (records) => Effect.as(repo.insertSessions(records), Arr.map(records, () => undefined)),
    max: GROUP_COMMIT_MAX
  })
  const teams = yield* Effect.serviceOption(Teams)

  const create = Effect.fn("Sessions.create")(function*(user: User, request: CreateSessionRequest) {
    const limited = user.role !== "admin"
    if (limited) {
      const rate = createRate.admit(user.id, yield* Clock.currentTimeMillis)
      if (rate !== undefined) return yield* refused(rate)
    }
    yield* ensureUser(book, user)
    const template = yield* templateForCreate(request.template)
    if (template === undefined) {
      return yield* new SessionsError({ reason: "TemplateNotFound", field: "template", message: `template: no template named "${request.template}"` })
    }
    const spec = specOf(user, template, request)
    const bad = resourcesIssue(spec.resources ?? {}, template, rules.sessionResourceBounds)
    if (bad !== undefined) return yield* new SessionsError({ reason: "InvalidRequest", field: bad.field, message: bad.message })
    const team = yield* chargedTeam(teams, user, request)
    yield* storageRefusal(teams, team, user, spec.persistent_home)
    // Placement and the reservation under one lock, so two creates cannot both take the last slot. The
    // record is written outside it (many creates write at once); a failed write gives the slot back.
    const record = yield* book.placement.withPermits(1)(Effect.gen(function*() {
      const tooMany = limited ? sessionsRefusal(liveCount(book, user.id), rules.userLimits.sessionsPerUser) : undefined
      if (tooMany !== undefined) return yield* refused(tooMany)
      const overQuota = quotaRefusal(book, team, spec.resources)
      if (overQuota !== undefined) return yield* overQuota
      const placed = place(teamAgents(yield* hub.list, team), book.usage.get, {
        region: request.region,
        cpu: parseQuantity(spec.resources?.cpu ?? "0") ?? 0,
        memory: parseQuantity(spec.resources?.memory ?? "0") ?? 0
      })
      if (Result.isFailure(placed)) return yield* new SessionsError({ reason: "NoEligibleAgent", message: placed.failure.message })
      const at = new Date(yield* Clock.currentTimeMillis)
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
        policy: resolvePolicy(template, defaults, spec.persistent_home, parseDuration),
        ...(team === undefined ? {} : { team: team.name }),
        createCommandId: undefined,
        deleteCommandId: undefined,
        createdAt: at,
        updatedAt: at
      }
      reserve(book, record)
      return record
    }))
    yield* (record.team === undefined ? insertUncharged({ record, actor: userActor(user.id) }) : repo.insertSession(record, userActor(user.id))).pipe(
      Effect.mapError(fromRepo),
      Effect.onExit((exit) => Effect.sync(() => (exit._tag === "Success" ? put(book, record) : unreserve(book, record))))
    )
    yield* Effect.annotateCurrentSpan({ session_id: record.id, agent_id: record.agentId })
    yield* Effect.logInfo("session placed").pipe(Effect.annotateLogs({ session_id: record.id, agent_id: record.agentId, user_id: user.id, template: template.name }))
    const command = yield* dispatcher.dispatch(record.agentId, { action: "create_session", args: { session_id: record.id, spec } }, { sessionId: record.id }).pipe(
      Effect.catch((e) =>
        transition(book, record.id, "failed", { reason: "dispatch_failed", message: e.message }).pipe(
          Effect.andThen(Effect.fail(new SessionsError({ reason: "Store", message: `could not dispatch create_session: ${e.message}` })))
        )
      )
    )
    const creating = yield* transition(book, record.id, "creating", { actor: userActor(user.id) }, { createCommandId: command.id })
    yield* follow(book, record, command)
    return creating ?? record
  })

  const get = Effect.fn("Sessions.get")(function*(user: User, id: string) {
    // Live sessions from memory; ended ones (no longer kept in memory) from the repository.
    const s = book.sessions.get(id) ?? (yield* repo.getSession(id).pipe(Effect.mapError(fromRepo)))
    if (!visible(user, s)) return yield* new SessionsError({ reason: "NotFound", message: `no session "${id.slice(0, 80)}"` })
    return s
  })

  const remove = Effect.fn("Sessions.remove")(function*(user: User, id: string) {
    return yield* removeRecord(yield* get(user, id), undefined, userActor(user.id))
  })

  /** Deletes a session; `reason` says why when the control plane decided it (idle_timeout, max_lifetime). */
  const removeRecord = Effect.fnUntraced(function*(s: SessionRecord, reason?: string, actor: Actor = "system") {
    // Already deleted, or on its way: nothing to send. Any other end (`lost_on_agent`, a pod that stopped) may
    // still leave a pod on the agent, so the delete goes to the agent all the same (it is idempotent there).
    if (s.state === "terminating" || s.deleteCommandId !== undefined || (s.state === "terminated" && s.reason === "deleted")) return s
    yield* Effect.annotateCurrentSpan({ session_id: s.id, agent_id: s.agentId })
    // The agent's report of the deleted pod can come back before `terminating` is recorded below.
    book.deleting.add(s.id)
    const { command, next } = yield* Effect.gen(function*() {
      const command = yield* dispatcher.dispatch(s.agentId, { action: "delete_session", args: { session_id: s.id } }, { sessionId: s.id }).pipe(
        Effect.mapError((e) => new SessionsError({ reason: "Store", message: `could not dispatch delete_session: ${e.message}` }))
      )
      // A failed or terminated session stays so (final); its delete still removes what is left on the agent.
      const next = yield* transition(book, s.id, ended(s.state) ? s.state : "terminating", { reason, actor }, { deleteCommandId: command.id })
      return { command, next }
    }).pipe(Effect.ensuring(Effect.sync(() => book.deleting.delete(s.id))))
    yield* follow(book, s, command)
    if (next !== undefined) return next
    if (!ended(s.state)) return (yield* repo.getSession(s.id).pipe(Effect.mapError(fromRepo))) ?? s // it ended meanwhile
    // An ended session is not in memory: its record takes the delete command id through the repository.
    const patched: SessionRecord = { ...s, deleteCommandId: command.id }
    yield* repo.updateSession(patched, s.state, actor).pipe(Effect.mapError(fromRepo))
    return patched
  })

  const history = Effect.fn("Sessions.history")(function*(user: User, id: string) {
    const s = yield* get(user, id)
    return yield* repo.loadHistory(s.id).pipe(Effect.mapError(fromRepo))
  })

  const page = Effect.fn("Sessions.page")(function*(user: User, limit: number | undefined, after: SessionKey | undefined) {
    return yield* repo.pageSessions(user.role === "admin" ? undefined : user.id, limit, after).pipe(Effect.mapError(fromRepo))
  })

  const keepalive = Effect.fn("Sessions.keepalive")(function*(user: User, id: string) {
    const s = yield* get(user, id)
    if (s.state !== "running") {
      return yield* new SessionsError({ reason: "Conflict", message: `session ${s.id} is ${s.state}; only a running session can be kept alive` })
    }
    const now = yield* Clock.currentTimeMillis
    noteKeepalive(policyBook, s, user.id, now)
    yield* activity.share("keepalive", s.id, user.id, now)
    return s
  })

  // With replicas: activity seen here is shared, and only the leader of session-policy acts on deadlines.
  const activity = makeActivitySharing(replicas, (kind, id, by) =>
    Effect.map(Clock.currentTimeMillis, (now) => {
      const s = book.sessions.get(id)
      if (kind === "input") noteInput(policyBook, s, by, now)
      else if (s !== undefined) noteKeepalive(policyBook, s, by, now)
    }))
  yield* activity.listen
  const leading = yield* policyLeadership(replicas)

  /** Runs what the policy says is due: the idle action, or a delete at max_lifetime. */
  const enforce = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const dueNow = due(policyBook, book.sessions.values(), now)
    if (!leading()) {
      // The warnings are shown here too; the action is the leader's (this replica acts if it becomes leader).
      for (const [s] of dueNow) delete policyBook.activity.get(s.id)?.acting
      return
    }
    for (const [s, deadline] of dueNow) {
      yield* logExpiry(s, deadline)
      yield* (deadline.action === "hibernate" ? hibernate(book, s, deadline.reason) : removeRecord(s, deadline.reason)).pipe(
        Effect.catch((e) =>
          Effect.sync(() => policyBook.activity.delete(s.id)).pipe(
            Effect.andThen(Effect.logWarning(`session ${s.id}: ${deadline.action} at ${deadline.reason} failed: ${e.message}`))
          )
        )
      )
    }
  })
  yield* FiberSet.run(book.fibers, enforce.pipe(
    Effect.catchCause((cause) => Effect.logError("Sessions: the lifecycle policy pass failed", cause)),
    Effect.repeat(Schedule.spaced(Option.match(config, { onNone: () => POLICY_TICK, onSome: (c) => c.sessionPolicyInterval ?? POLICY_TICK })))
  ))

  // A drained agent frees its warm pods; undrained, it gets the pools again.
  const draining = new Map<AgentId, boolean>()
  yield* Effect.forkScoped(Stream.runForEach(hub.presence, (e) => {
    if (e._tag !== "StatusChanged") return Effect.void
    const now = e.status === "draining"
    const was = draining.get(e.agentId) ?? false
    draining.set(e.agentId, now)
    return now === was ? Effect.void : pushWarmPools(book, hub, e.agentId)
  }))

  yield* followOpenCommands(book)
  yield* hub.subscribe({
    onConnected: (agentId, hello) =>
      reconcile(book, agentId, hello).pipe(
        Effect.catch((e) => Effect.logError("Sessions: reconcile failed", e)),
        Effect.andThen(pushWarmPools(book, hub, agentId))
      ),
    onSessionStatus: (agentId, status) => applyStatus(book, agentId, status).pipe(Effect.catch((e) => Effect.logError("Sessions: a session report failed", e)))
  })

  return Sessions.of({
    create,
    list: (user) => page(user, undefined, undefined),
    page,
    get,
    remove,
    hibernate: Effect.fn("Sessions.hibernate")(function*(user: User, id: string) {
      return yield* hibernate(book, yield* get(user, id), "requested", userActor(user.id))
    }),
    resume: Effect.fn("Sessions.resume")(function*(user: User, id: string) {
      const s = yield* get(user, id)
      const team = yield* teamOf(teams, s)
      return yield* resume(book, hub, s, userActor(user.id), (r) => quotaRefusal(book, team, r.spec.resources))
    }),
    keepalive,
    noteInput: (sessionId, viewer) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        noteInput(policyBook, book.sessions.get(sessionId), viewer, now)
        return activity.share("input", sessionId as SessionId, viewer, now)
      }),
    lifecycle: (s) => lifecycleJson(s, policyBook.activity.get(s.id)),
    history,
    listTemplates: repo.listTemplates.pipe(Effect.mapError(fromRepo), Effect.withSpan("Sessions.listTemplates")),
    ...templates,
    live: Effect.sync(() => liveRecords(book)),
    unknownSessions: (agentId) => book.unknownByAgent.get(agentId) ?? [],
    stateCounts: Effect.sync(() => {
      const m = new Map<string, number>(book.endedCounts)
      for (const s of book.sessions.values()) m.set(s.state, (m.get(s.state) ?? 0) + 1)
      return m as ReadonlyMap<string, number>
    })
  })
})

export class Sessions extends Context.Service<Sessions, SessionsShape>()("control-plane/Sessions") {
  /** Sessions persisted through the Store. Needs Store, AgentHub and CommandDispatcher. */
  static readonly layer = Layer.effect(Sessions, Effect.flatMap(Effect.zip(Store, rulesFromConfig), ([store, rules]) => makeWith(onStore(store), rules)))
  /** Sessions over the in-memory repository (tests, throwaway demos). Needs AgentHub and CommandDispatcher. */
  static readonly layerMemory = (repo: MemoryRepo = makeMemoryRepo()) => Layer.effect(Sessions, Effect.flatMap(rulesFromConfig, (rules) => makeWith(repo, rules)))
}
