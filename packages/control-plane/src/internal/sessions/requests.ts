// What the API accepts for sessions and templates (Sessions validates the rest: limits, bounds, quotas).
import { MAX_WARM_POOL, parseDuration, Port, TemplateName as TemplateNameSchema } from "@streamspace/protocol"
import { Schema } from "effect"
import { RequestResources, ResourceBounds, TemplateEnv, UserEnv } from "./requestRules.ts"
import { TeamName } from "../teams/requests.ts"

const Name = (what: string, max: number) =>
  Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: `${what} must not be empty` }), Schema.isMaxLength(max, { message: `${what} must be at most ${max} characters` })))

/** Warm pods per agent for a template. */
const WarmPoolSize = Schema.Number.pipe(Schema.check(
  Schema.isInt({ message: "warm_pool must be a whole number" }),
  Schema.isBetween({ minimum: 0, maximum: MAX_WARM_POOL }, { message: `warm_pool must be between 0 and ${MAX_WARM_POOL}` })
))

/** What a user asks for (POST /api/v1/sessions); what is left out comes from the template. */
export const CreateSessionRequest = Schema.Struct({
  template: TemplateNameSchema,
  region: Schema.optionalKey(Name("region", 63)),
  resources: Schema.optionalKey(RequestResources),
  env: Schema.optionalKey(UserEnv),
  persistent_home: Schema.optionalKey(Schema.Boolean),
  /** The team that pays (issue 18); absent: the first of the user's teams that allows the template and region. */
  team: Schema.optionalKey(TeamName)
})
export type CreateSessionRequest = typeof CreateSessionRequest.Type

/** A duration as written everywhere in the project (`30s`, `5m`, `1h30m`), kept as written. */
const DurationText = (what: string) =>
  Schema.String.pipe(Schema.check(Schema.makeFilter((s: string) =>
    parseDuration(s) !== undefined ? undefined : `${what}: invalid duration "${s.slice(0, 40)}": use forms like 30s, 5m, 1h or 1h30m (0s: no limit)`
  )))

/** A new template (POST /api/v1/templates). */
export const CreateTemplateRequest = Schema.Struct({
  name: TemplateNameSchema,
  display_name: Schema.optionalKey(Name("display_name", 200)),
  image: Name("image", 512),
  resources: Schema.optionalKey(RequestResources),
  /** Bounds on what a session made from this template may request; left out: SESSION_MIN_/MAX_ settings. */
  resource_bounds: Schema.optionalKey(ResourceBounds),
  env: Schema.optionalKey(TemplateEnv),
  vnc_port: Schema.optionalKey(Port),
  persistent_home: Schema.optionalKey(Schema.Boolean),
  /** No user input for this long -> idle_action (absent: the control plane's SESSION_IDLE_TIMEOUT; `0s`: none). */
  idle_timeout: Schema.optionalKey(DurationText("idle_timeout")),
  /** Hard limit from creation -> delete (absent: SESSION_MAX_LIFETIME; `0s`: none). */
  max_lifetime: Schema.optionalKey(DurationText("max_lifetime")),
  /** `hibernate` (only with a persistent home) or `delete` (absent: SESSION_IDLE_ACTION). */
  idle_action: Schema.optionalKey(Schema.Literals(["hibernate", "delete"])),
  /** Warning time before an automatic action (absent: SESSION_WARN_BEFORE). */
  warn_before: Schema.optionalKey(DurationText("warn_before")),
  warm_pool: Schema.optionalKey(WarmPoolSize),
  /** Clipboard directions the VNC proxy lets through (absent: both allowed; on PATCH, a direction left out is kept). */
  clipboard: Schema.optionalKey(Schema.Struct({ upload: Schema.optionalKey(Schema.Boolean), download: Schema.optionalKey(Schema.Boolean) }))
})
export type CreateTemplateRequest = typeof CreateTemplateRequest.Type

/**
 * A change to a template (PATCH /api/v1/templates/:name): the fields of a create but the name, each optional and
 * validated as on create; a field given replaces the stored one. Sessions created before keep their spec.
 */
const { name: _name, ...templateFields } = CreateTemplateRequest.fields
export const PatchTemplateRequest = Schema.Struct({ ...templateFields, image: Schema.optionalKey(Name("image", 512)) })
export type PatchTemplateRequest = typeof PatchTemplateRequest.Type
