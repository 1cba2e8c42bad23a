// The `templates` table: what a session is made from. A change (`update`) applies to sessions created after it;
// a session keeps the spec it was created with. A deleted template keeps its row, marked `deleted_at`, because
// sessions refer to it: `get` and `list` no longer see it, and `insert` of the same name takes the row over.
import type { Resources, TemplateName } from "@streamspace/protocol"
import { Effect } from "effect"
import { date, type Db, type Row } from "./db.ts"
import { StoreError } from "./error.ts"

export interface TemplateRecord {
  readonly name: TemplateName
  readonly displayName: string
  readonly image: string
  /** Default requests as Kubernetes quantities (`500m`, `512Mi`); both are always set once stored. */
  readonly resources: Resources
  readonly env: Readonly<Record<string, string>>
  readonly vncPort: number
  readonly persistentHome: boolean
  readonly sharedHome: boolean
  /** Lifecycle policy as written (`30m`); undefined takes the control plane's default. */
  readonly idleTimeout?: string | undefined
  readonly maxLifetime?: string | undefined
  readonly idleAction?: "hibernate" | "delete" | undefined
  readonly warnBefore?: string | undefined
  /** Bounds on what a session made from it may request; what is left out takes the control plane's SESSION_MIN_/MAX_ settings. */
  readonly resourceBounds?: TemplateResourceBounds | undefined
  /** Warm pods each eligible agent keeps started for this template (never with a persistent home). */
  readonly warmPool: number
  /** Clipboard directions the VNC proxy lets through: upload (viewer -> desktop), download (desktop -> viewer). */
  readonly clipboard: TemplateClipboard
  readonly createdAt: Date
  readonly updatedAt: Date
}

/** A new template; resources left out get DEFAULT_RESOURCES, flags default to false, env to none. */
export interface NewTemplate {
  readonly name: TemplateName
  readonly displayName: string
  readonly image: string
  readonly resources?: Resources | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly vncPort: number
  readonly persistentHome?: boolean | undefined
  readonly sharedHome?: boolean | undefined
  readonly idleTimeout?: string | undefined
  readonly maxLifetime?: string | undefined
  readonly idleAction?: "hibernate" | "delete" | undefined
  readonly warnBefore?: string | undefined
  readonly resourceBounds?: TemplateResourceBounds | undefined
  readonly warmPool?: number | undefined
  /** Left out: both directions allowed. */
  readonly clipboard?: Partial<TemplateClipboard> | undefined
}

export interface TemplateClipboard {
  readonly upload: boolean
  readonly download: boolean
}

/** Per-resource minimum and maximum a session may request (Kubernetes quantities). */
export interface TemplateResourceBounds {
  readonly min?: { readonly cpu?: string; readonly memory?: string }
  readonly max?: { readonly cpu?: string; readonly memory?: string }
}

/** The requests a template gets when it names none (the demo template's, which the migration seeds). */
export const DEFAULT_RESOURCES = { cpu: "500m", memory: "512Mi" } as const

/** The fields of a template an update may change; absent ones keep their value. */
export type TemplatePatch = Partial<Omit<NewTemplate, "name">>

export interface TemplatesTable {
  /** Conflict if the name exists (and is not deleted). */
  readonly insert: (template: NewTemplate) => Effect.Effect<TemplateRecord, StoreError>
  readonly get: (name: string) => Effect.Effect<TemplateRecord, StoreError>
  readonly list: () => Effect.Effect<ReadonlyArray<TemplateRecord>, StoreError>
  /** Writes the fields given (resources left out of `resources` get DEFAULT_RESOURCES); NotFound if absent or deleted. */
  readonly update: (name: string, patch: TemplatePatch) => Effect.Effect<TemplateRecord, StoreError>
  /** Marks the template deleted; NotFound if absent or already deleted. */
  readonly remove: (name: string) => Effect.Effect<void, StoreError>
}

/** The record `patch` makes of `t` at `at`. */
export const patchedTemplate = (t: TemplateRecord, patch: TemplatePatch, at: Date): TemplateRecord => ({
  ...templateRecord({
    name: t.name,
    displayName: patch.displayName ?? t.displayName,
    image: patch.image ?? t.image,
    resources: patch.resources ?? t.resources,
    env: patch.env ?? t.env,
    vncPort: patch.vncPort ?? t.vncPort,
    persistentHome: patch.persistentHome ?? t.persistentHome,
    sharedHome: patch.sharedHome ?? t.sharedHome,
    warmPool: patch.warmPool ?? t.warmPool,
    idleTimeout: patch.idleTimeout ?? t.idleTimeout,
    maxLifetime: patch.maxLifetime ?? t.maxLifetime,
    idleAction: patch.idleAction ?? t.idleAction,
    warnBefore: patch.warnBefore ?? t.warnBefore,
    resourceBounds: patch.resourceBounds ?? t.resourceBounds,
    clipboard: { ...t.clipboard, ...patch.clipboard }
  }, at),
  createdAt: t.createdAt
})

/** The record a new template becomes, at `at` (the Store writes exactly this; the in-memory repository keeps it). */
export const templateRecord = (t: NewTemplate, at: Date): TemplateRecord => ({
  name: t.name,
  displayName: t.displayName,
  image: t.image,
  resources: { cpu: t.resources?.cpu ?? DEFAULT_RESOURCES.cpu, memory: t.resources?.memory ?? DEFAULT_RESOURCES.memory },
  env: t.env ?? {},
  vncPort: t.vncPort,
  persistentHome: t.persistentHome ?? false,
  sharedHome: t.sharedHome ?? false,
  ...(t.idleTimeout !== undefined ? { idleTimeout: t.idleTimeout } : {}),
  ...(t.maxLifetime !== undefined ? { maxLifetime: t.maxLifetime } : {}),
  ...(t.idleAction !== undefined ? { idleAction: t.idleAction } : {}),
  ...(t.warnBefore !== undefined ? { warnBefore: t.warnBefore } : {}),
  ...(t.resourceBounds === undefined ? {} : { resourceBounds: t.resourceBounds }),
  warmPool: t.warmPool ?? 0,
  clipboard: { upload: t.clipboard?.upload ?? true, download: t.clipboard?.download ?? true },
  createdAt: at,
  updatedAt: at
})

export const toTemplate = (r: Row): TemplateRecord => ({
  name: r.name as TemplateName,
  displayName: r.display_name as string,
  image: r.image as string,
  resources: { cpu: r.cpu as string, memory: r.memory as string },
  env: (r.env ?? {}) as Record<string, string>,
  vncPort: Number(r.vnc_port),
  persistentHome: r.persistent_home as boolean,
  sharedHome: r.shared_home as boolean,
  ...(r.idle_timeout != null ? { idleTimeout: r.idle_timeout as string } : {}),
  ...(r.max_lifetime != null ? { maxLifetime: r.max_lifetime as string } : {}),
  ...(r.idle_action != null ? { idleAction: r.idle_action as "hibernate" | "delete" } : {}),
  ...(r.warn_before != null ? { warnBefore: r.warn_before as string } : {}),
  ...(r.resource_bounds == null ? {} : { resourceBounds: r.resource_bounds as TemplateResourceBounds }),
  warmPool: Number(r.warm_pool ?? 0),
  clipboard: { upload: r.clipboard_upload !== false, download: r.clipboard_download !== false },
  createdAt: date(r.created_at),
  updatedAt: date(r.updated_at)
})

export const makeTemplates = ({ json, now, one, q, sql }: Db): TemplatesTable => {
  const get = (name: string) =>
    q("template", name, sql<Row>`SELECT * FROM templates WHERE name = ${name} AND deleted_at IS NULL`).pipe(
      Effect.flatMap((rows) => one("template", name, rows, toTemplate))
    )
  /** Every column a template's record sets (the name and created_at aside). */
  const columns = (t: TemplateRecord) => ({
    display_name: t.displayName,
    image: t.image,
    cpu: t.resources.cpu!,
    memory: t.resources.memory!,
    env: json(t.env),
    vnc_port: t.vncPort,
    persistent_home: t.persistentHome,
    shared_home: t.sharedHome,
    warm_pool: t.warmPool,
    clipboard_upload: t.clipboard.upload,
    clipboard_download: t.clipboard.download,
    idle_timeout: t.idleTimeout ?? null,
    max_lifetime: t.maxLifetime ?? null,
    idle_action: t.idleAction ?? null,
    warn_before: t.warnBefore ?? null,
    resource_bounds: t.resourceBounds === undefined ? null : json(t.resourceBounds),
    updated_at: t.updatedAt
  })
  return {
    insert: Effect.fn("Store.templates.insert")(function*(input: NewTemplate) {
      const t = templateRecord(input, yield* now)
      const values = { ...columns(t), created_at: t.createdAt }
      // A deleted template's row is taken over (sessions made from it still refer to the name); a live one conflicts.
      const rows = yield* q(
        "template",
        t.name,
        sql<Row>`INSERT INTO templates ${sql.insert({ name: t.name, ...values })}
          ON CONFLICT (name) DO UPDATE SET ${sql.update({ ...values, deleted_at: null })} WHERE templates.deleted_at IS NOT NULL
          RETURNING *`
      )
      if (rows.length === 0) return yield* StoreError.conflict("template", t.name, `template ${JSON.stringify(t.name)} already exists`)
      return toTemplate(rows[0]!)
    }),
    get: Effect.fn("Store.templates.get")(function*(name: string) {
      return yield* get(name)
    }),
    list: Effect.fn("Store.templates.list")(function*() {
      return (yield* q("template", "*", sql<Row>`SELECT * FROM templates WHERE deleted_at IS NULL ORDER BY name`)).map(toTemplate)
    }),
    update: Effect.fn("Store.templates.update")(function*(name: string, patch: TemplatePatch) {
      const t = patchedTemplate(yield* get(name), patch, yield* now)
      const rows = yield* q(
        "template",
        name,
        sql<Row>`UPDATE templates SET ${
          sql.update(columns(t))
        } WHERE name = ${name} AND deleted_at IS NULL RETURNING *`
      )
      return yield* one("template", name, rows, toTemplate)
    }),
    remove: Effect.fn("Store.templates.remove")(function*(name: string) {
      const at = yield* now
      const rows = yield* q("template", name, sql<Row>`UPDATE templates SET deleted_at = ${at}, updated_at = ${at} WHERE name = ${name} AND deleted_at IS NULL RETURNING name`)
      if (rows.length === 0) return yield* StoreError.notFound("template", name)
    })
  }
}
