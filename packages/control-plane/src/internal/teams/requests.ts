// The bodies of the team endpoints (POST and PATCH /api/v1/teams), decoded strictly: every message names the field.
import { Quantity, TemplateName } from "@streamspace/protocol"
import { Schema } from "effect"

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/

/** Sessions of no team show as this name in usage and metrics, so no team may take it. */
export const NO_TEAM = "none"

/** A team's name: a DNS-1123 label (it becomes a metric label), not `none`. */
export const TeamName = Schema.String.pipe(Schema.check(
  Schema.isMaxLength(63, { message: "name must be at most 63 characters" }),
  Schema.isPattern(DNS_LABEL, { message: "name must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit" }),
  Schema.makeFilter((s: string) => (s === NO_TEAM ? `name "${NO_TEAM}" is reserved (usage and metrics show sessions of no team under it)` : undefined))
))

const Group = Schema.String.pipe(Schema.check(
  Schema.isMinLength(1, { message: "group must not be empty" }),
  Schema.isMaxLength(256, { message: "group must be at most 256 characters" })
))

const Region = Schema.String.pipe(Schema.check(
  Schema.isMinLength(1, { message: "a region must not be empty" }),
  Schema.isMaxLength(63, { message: "a region must be at most 63 characters" })
))

const unique = (what: string) => Schema.makeFilter((xs: ReadonlyArray<string>) => (new Set(xs).size === xs.length ? undefined : `${what} must not repeat a name`))

/** Each limit absent: none. */
export const QuotaBody = Schema.Struct({
  max_sessions: Schema.optionalKey(Schema.Int.pipe(Schema.check(
    Schema.isBetween({ minimum: 0, maximum: 100_000 }, { message: "max_sessions must be a whole number from 0 to 100000" })
  ))),
  cpu: Schema.optionalKey(Quantity),
  memory: Schema.optionalKey(Quantity),
  storage: Schema.optionalKey(Quantity)
})

const Templates = Schema.Array(TemplateName).pipe(Schema.check(Schema.isMaxLength(500, { message: "templates: at most 500" }), unique("templates")))
const Regions = Schema.Array(Region).pipe(Schema.check(Schema.isMaxLength(100, { message: "regions: at most 100" }), unique("regions")))

export const CreateTeamRequest = Schema.Struct({
  name: TeamName,
  group: Group,
  quota: Schema.optionalKey(QuotaBody),
  /** Absent: every template. */
  templates: Schema.optionalKey(Templates),
  /** Absent: every region. */
  regions: Schema.optionalKey(Regions)
})
export type CreateTeamRequest = typeof CreateTeamRequest.Type

/** A change: fields given replace the stored ones (`quota` as a whole); `null` lifts an allow-list. */
export const PatchTeamRequest = Schema.Struct({
  group: Schema.optionalKey(Group),
  quota: Schema.optionalKey(QuotaBody),
  templates: Schema.optionalKey(Schema.NullOr(Templates)),
  regions: Schema.optionalKey(Schema.NullOr(Regions))
})
export type PatchTeamRequest = typeof PatchTeamRequest.Type
