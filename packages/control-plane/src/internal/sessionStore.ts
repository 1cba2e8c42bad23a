// The SessionRepo on the Store: sessions with their state history, templates and users in the database.
// The Store's state machine (forward only, terminated/failed final) is the same one Sessions enforces, so a
// transition Sessions makes is one the Store accepts. Command ids are not columns of a session: they are
// recovered from the session's commands when the records are loaded.
import type { CommandId, SessionId, SessionSpec, TemplateName, UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import type { StoreError, StoreShape, Template } from "../Store.ts"
import { RepoError, type SessionRecord, type SessionRepo, type TemplateRecord } from "./sessionRepo.ts"

const unavailable = (e: StoreError) =>
  new RepoError({ reason: e.reason._tag === "Conflict" ? "Conflict" : "Unavailable", message: e.message })

const templateOf = (t: Template): TemplateRecord => ({
  name: t.name as TemplateName,
  displayName: t.displayName,
  image: t.image,
  resources: { cpu: t.cpu, memory: t.memory },
  env: t.env,
  vncPort: t.vncPort,
  persistentHome: t.persistentHome,
  createdAt: t.createdAt
})

/** Resources a template leaves out get these (the demo template's), because the Store keeps both columns. */
const DEFAULT_CPU = "500m"
const DEFAULT_MEMORY = "512Mi"

export const makeStoreRepo = (store: StoreShape): SessionRepo => ({
  ensureUser: (id, role) => store.users.upsert({ id, name: id, role }).pipe(Effect.asVoid, Effect.mapError(unavailable)),
  loadSessions: Effect.gen(function*() {
    const rows = yield* store.sessions.list()
    const out: Array<SessionRecord> = []
    for (const row of rows) {
      if (row.agentId === null) continue // never placed: Sessions only writes placed ones
      const live = row.state !== "terminated" && row.state !== "failed"
      const commands = live ? yield* store.commands.listBySession(row.id) : []
      const last = (action: string) => [...commands].reverse().find((c) => c.action === action)?.id as CommandId | undefined
      out.push({
        id: row.id as SessionId,
        userId: row.userId as UserId,
        template: row.template as TemplateName,
        agentId: row.agentId as SessionRecord["agentId"],
        region: row.region ?? undefined,
        state: row.state,
        reason: row.reason ?? undefined,
        message: row.message ?? undefined,
        spec: row.spec as SessionSpec,
        createCommandId: last("create_session"),
        deleteCommandId: last("delete_session"),
        createdAt: row.createdAt,
        updatedAt: row.updatedAt
      })
    }
    return out
  }).pipe(Effect.mapError(unavailable)),
  insertSession: (r) =>
    store.sessions.insert({ id: r.id, userId: r.userId, template: r.template, agentId: r.agentId, spec: r.spec, region: r.region ?? null }).pipe(
      Effect.asVoid,
      Effect.mapError(unavailable)
    ),
  updateSession: (r, from) =>
    r.state === from || r.state === "pending"
      ? Effect.void
      : store.sessions.transition(r.id, r.state, { reason: r.reason, message: r.message }).pipe(
        Effect.flatMap((t) =>
          t.changed
            ? Effect.void
            : Effect.fail(new RepoError({ reason: "Conflict", message: `session ${r.id} is ${t.row.state} in the store; cannot move it to ${r.state}` }))
        ),
        Effect.mapError((e) => (e._tag === "RepoError" ? e : unavailable(e)))
      ),
  listTemplates: store.templates.list().pipe(Effect.map((ts) => ts.map(templateOf)), Effect.mapError(unavailable)),
  getTemplate: (name) =>
    store.templates.get(name).pipe(
      Effect.map(templateOf),
      Effect.catchIf((e) => e.reason._tag === "NotFound", () => Effect.succeed(undefined)),
      Effect.mapError(unavailable)
    ),
  insertTemplate: (t) =>
    store.templates.insert({
      name: t.name,
      displayName: t.displayName,
      image: t.image,
      cpu: t.resources?.cpu ?? DEFAULT_CPU,
      memory: t.resources?.memory ?? DEFAULT_MEMORY,
      env: t.env,
      vncPort: t.vncPort,
      persistentHome: t.persistentHome
    }).pipe(Effect.asVoid, Effect.mapError(unavailable))
})
