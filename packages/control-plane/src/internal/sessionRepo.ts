// The persistence Sessions needs, as a narrow interface: the Store implements it for real, the in-memory
// version serves unit tests. Records are plain data; Sessions owns every rule about them.
import type { AgentId, CommandId, Resources, SessionId, SessionPhase, SessionSpec, TemplateName, UserId } from "@streamspace/protocol"
import { Effect, Schema } from "effect"

export class RepoError extends Schema.TaggedError<RepoError>()("RepoError", {
  reason: Schema.Literals(["Conflict", "Unavailable"]),
  message: Schema.String
}) {}

export interface SessionRecord {
  readonly id: SessionId
  readonly userId: UserId
  readonly template: TemplateName
  readonly agentId: AgentId
  /** The region the user asked for, if any. */
  readonly region: string | undefined
  readonly state: SessionPhase
  /** Short machine-readable cause of the current state (failed, terminated). */
  readonly reason: string | undefined
  readonly message: string | undefined
  readonly spec: SessionSpec
  readonly createCommandId: CommandId | undefined
  readonly deleteCommandId: CommandId | undefined
  readonly createdAt: Date
  readonly updatedAt: Date
}

export interface TemplateRecord {
  readonly name: TemplateName
  readonly displayName: string
  readonly image: string
  readonly resources: Resources | undefined
  readonly env: Readonly<Record<string, string>>
  readonly vncPort: number
  readonly persistentHome: boolean
  readonly createdAt: Date
}

export interface SessionRepo {
  /** Makes sure the user row exists (sessions refer to it); keeps the role current. */
  readonly ensureUser: (id: UserId, role: "admin" | "user") => Effect.Effect<void, RepoError>
  /** Every session record, for the in-memory view at start. */
  readonly loadSessions: Effect.Effect<ReadonlyArray<SessionRecord>, RepoError>
  readonly insertSession: (record: SessionRecord) => Effect.Effect<void, RepoError>
  /** Writes the new record; `from` is the state it had, for the state history. */
  readonly updateSession: (record: SessionRecord, from: SessionPhase) => Effect.Effect<void, RepoError>
  readonly listTemplates: Effect.Effect<ReadonlyArray<TemplateRecord>, RepoError>
  readonly getTemplate: (name: TemplateName) => Effect.Effect<TemplateRecord | undefined, RepoError>
  /** Fails with Conflict when the name is taken. */
  readonly insertTemplate: (template: TemplateRecord) => Effect.Effect<void, RepoError>
}

/** The template every install starts with (the same one the Store's migration seeds). */
export const demoTemplate = (createdAt: Date): TemplateRecord => ({
  name: "demo" as TemplateName,
  displayName: "Demo desktop",
  image: "streamspace/demo-desktop:latest",
  resources: { cpu: "500m", memory: "512Mi" },
  env: {},
  vncPort: 5900,
  persistentHome: false,
  createdAt
})

export interface MemoryRepo extends SessionRepo {
  /** State history per session, oldest first: [from, to]. */
  readonly history: Map<string, Array<readonly [SessionPhase, SessionPhase]>>
  readonly sessions: Map<string, SessionRecord>
}

export const makeMemoryRepo = (seed: ReadonlyArray<TemplateRecord> = [demoTemplate(new Date(0))]): MemoryRepo => {
  const sessions = new Map<string, SessionRecord>()
  const templates = new Map<string, TemplateRecord>(seed.map((t) => [t.name, t]))
  const history = new Map<string, Array<readonly [SessionPhase, SessionPhase]>>()
  return {
    sessions,
    history,
    ensureUser: () => Effect.void,
    loadSessions: Effect.sync(() => [...sessions.values()]),
    insertSession: (r) =>
      Effect.suspend(() => {
        if (sessions.has(r.id)) return Effect.fail(new RepoError({ reason: "Conflict", message: `session ${r.id} exists` }))
        sessions.set(r.id, r)
        history.set(r.id, [])
        return Effect.void
      }),
    updateSession: (r, from) =>
      Effect.sync(() => {
        sessions.set(r.id, r)
        if (from !== r.state) history.get(r.id)?.push([from, r.state])
      }),
    listTemplates: Effect.sync(() => [...templates.values()].sort((a, b) => (a.name < b.name ? -1 : 1))),
    getTemplate: (name) => Effect.sync(() => templates.get(name)),
    insertTemplate: (t) =>
      Effect.suspend(() => {
        if (templates.has(t.name)) return Effect.fail(new RepoError({ reason: "Conflict", message: `template ${t.name} exists` }))
        templates.set(t.name, t)
        return Effect.void
      })
  }
}
