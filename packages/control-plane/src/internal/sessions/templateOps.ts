// Sessions' templates: reading one (for creates, grouped), and the admin's create, change and delete, each
// checked as a whole before it is stored. A change applies to the sessions created from then on.
import type { TemplateName } from "@streamspace/protocol"
import { Effect } from "effect"
import type { AgentHubShape } from "../../AgentHub.ts"
import { DEFAULT_RESOURCES, type TemplateRecord } from "../../Store.ts"
import { GROUP_COMMIT_MAX, makeGroupCommit } from "../groupCommit.ts"
import { type Book, fromRepo, SessionsError } from "./book.ts"
import type { CreateTemplateRequest, PatchTemplateRequest } from "./requests.ts"
import { resourcesIssue } from "./userLimits.ts"
import { pushWarmPools } from "./warmPools.ts"
import type { ControlPlaneConfigShape } from "../../ControlPlaneConfig.ts"

/** A template as stored now (read each time: an admin may change it, on any replica). */
export const findTemplate = (book: Book, name: TemplateName) => book.repo.getTemplate(name).pipe(Effect.mapError(fromRepo))

/**
 * `findTemplate` for creates: those made while a read is in flight share the next read of each name (a burst of
 * creates from one template reads it once per batch, never a version older than the create).
 */
export const groupedTemplateReads = (book: Book) =>
  makeGroupCommit({
    one: (name: TemplateName) => findTemplate(book, name),
    many: (names) =>
      Effect.gen(function*() {
        const read = new Map<TemplateName, TemplateRecord | undefined>()
        for (const name of names) if (!read.has(name)) read.set(name, yield* findTemplate(book, name))
        return names.map((name) => read.get(name))
      }),
    max: GROUP_COMMIT_MAX
  })

/** The admin's operations on templates. */
export const makeTemplateOps = (book: Book, hub: AgentHubShape, rules: Pick<ControlPlaneConfigShape, "sessionResourceBounds">) => {
  const repo = book.repo
  const getTemplate = Effect.fn("Sessions.getTemplate")(function*(name: string) {
    const t = yield* findTemplate(book, name as TemplateName)
    if (t === undefined) return yield* new SessionsError({ reason: "NotFound", message: `no template named "${name}"` })
    return t
  })

  /** What a template must satisfy, on create and after every change (the fields as they will be stored). */
  const checkTemplate = (t: Pick<TemplateRecord, "name" | "persistentHome" | "warmPool" | "idleAction" | "resourceBounds"> & { readonly resources?: TemplateRecord["resources"] | undefined }) =>
    Effect.gen(function*() {
      // A warm pod never has a user's home mounted, so a template with a persistent home has no pool.
      if (t.warmPool > 0 && t.persistentHome) {
        return yield* new SessionsError({
          reason: "InvalidRequest",
          field: "warm_pool",
          message: "warm_pool: a template with persistent_home cannot have a warm pool (a warm pod is started before its user is known, so it never has a home mounted)"
        })
      }
      if (t.idleAction === "hibernate" && !t.persistentHome) {
        return yield* new SessionsError({
          reason: "InvalidRequest",
          field: "idle_action",
          message: "idle_action: hibernate needs persistent_home (a session without a home cannot be resumed)"
        })
      }
      // The template's own defaults must be requests its sessions may make.
      const bad = resourcesIssue({ ...DEFAULT_RESOURCES, ...t.resources }, { name: t.name, resourceBounds: t.resourceBounds }, rules.sessionResourceBounds)
      if (bad !== undefined) return yield* new SessionsError({ reason: "InvalidRequest", field: bad.field, message: `${bad.message}: the template's own default is out of bounds` })
    })

  const createTemplate = Effect.fn("Sessions.createTemplate")(function*(request: CreateTemplateRequest) {
    yield* checkTemplate({
      name: request.name,
      persistentHome: request.persistent_home ?? false,
      warmPool: request.warm_pool ?? 0,
      idleAction: request.idle_action,
      resourceBounds: request.resource_bounds,
      resources: request.resources
    })
    const created = yield* repo.insertTemplate({
      ...(request.idle_timeout !== undefined ? { idleTimeout: request.idle_timeout } : {}),
      ...(request.max_lifetime !== undefined ? { maxLifetime: request.max_lifetime } : {}),
      ...(request.idle_action !== undefined ? { idleAction: request.idle_action } : {}),
      ...(request.warn_before !== undefined ? { warnBefore: request.warn_before } : {}),
      name: request.name,
      displayName: request.display_name ?? request.name,
      image: request.image,
      resources: request.resources,
      env: request.env,
      vncPort: request.vnc_port ?? 5900,
      persistentHome: request.persistent_home ?? false,
      resourceBounds: request.resource_bounds,
      warmPool: request.warm_pool ?? 0,
      ...(request.clipboard === undefined ? {} : { clipboard: request.clipboard })
    }).pipe(
      Effect.mapError((e) =>
        e.reason === "Conflict"
          ? new SessionsError({ reason: "TemplateExists", field: "name", message: `name: a template named "${request.name}" already exists` })
          : fromRepo(e)
      )
    )
    if (created.warmPool > 0) yield* pushWarmPools(book, hub)
    return created
  })

  const notFound = (name: string) => new SessionsError({ reason: "NotFound", message: `no template named "${name.slice(0, 80)}"` })

  const updateTemplate = Effect.fn("Sessions.updateTemplate")(function*(name: string, request: PatchTemplateRequest) {
    const before = yield* findTemplate(book, name as TemplateName)
    if (before === undefined) return yield* notFound(name)
    yield* checkTemplate({
      name: before.name,
      persistentHome: request.persistent_home ?? before.persistentHome,
      warmPool: request.warm_pool ?? before.warmPool,
      idleAction: request.idle_action ?? before.idleAction,
      resourceBounds: request.resource_bounds ?? before.resourceBounds,
      resources: request.resources ?? before.resources
    })
    const t = yield* repo.updateTemplate(name as TemplateName, {
      ...(request.display_name === undefined ? {} : { displayName: request.display_name }),
      ...(request.image === undefined ? {} : { image: request.image }),
      ...(request.resources === undefined ? {} : { resources: request.resources }),
      ...(request.env === undefined ? {} : { env: request.env }),
      ...(request.vnc_port === undefined ? {} : { vncPort: request.vnc_port }),
      ...(request.persistent_home === undefined ? {} : { persistentHome: request.persistent_home }),
      ...(request.warm_pool === undefined ? {} : { warmPool: request.warm_pool }),
      ...(request.resource_bounds === undefined ? {} : { resourceBounds: request.resource_bounds }),
      ...(request.idle_timeout === undefined ? {} : { idleTimeout: request.idle_timeout }),
      ...(request.max_lifetime === undefined ? {} : { maxLifetime: request.max_lifetime }),
      ...(request.idle_action === undefined ? {} : { idleAction: request.idle_action }),
      ...(request.warn_before === undefined ? {} : { warnBefore: request.warn_before }),
      ...(request.clipboard === undefined ? {} : { clipboard: request.clipboard })
    }).pipe(Effect.mapError(fromRepo))
    if (t === undefined) return yield* notFound(name)
    if (t.warmPool > 0 || before.warmPool > 0) yield* pushWarmPools(book, hub)
    yield* Effect.logInfo("template changed").pipe(Effect.annotateLogs({ template: name, image: t.image }))
    return t
  })

  const deleteTemplate = Effect.fn("Sessions.deleteTemplate")(function*(name: string) {
    const before = yield* findTemplate(book, name as TemplateName)
    if (!(yield* repo.deleteTemplate(name as TemplateName).pipe(Effect.mapError(fromRepo)))) return yield* notFound(name)
    if (before !== undefined && before.warmPool > 0) yield* pushWarmPools(book, hub)
    yield* Effect.logInfo("template deleted").pipe(Effect.annotateLogs({ template: name }))
  })

  return { getTemplate, createTemplate, updateTemplate, deleteTemplate }
}
