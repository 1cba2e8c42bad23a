// Home volumes: the persistent home an agent keeps per user (a PVC on Kubernetes), as listed by `list_homes`
// and removed by `delete_home`.
import { Schema } from "effect"
import { Timestamp, UserId } from "./Ids.ts"
import { MAX_SESSIONS_PER_MESSAGE } from "./Limits.ts"

/** A home's name on the agent (the PVC name: a DNS-1123 subdomain). */
export const HomeName = Schema.String.pipe(
  Schema.check(
    Schema.isMinLength(1, { message: "home name must not be empty" }),
    Schema.isMaxLength(253, { message: "home name must be at most 253 characters" }),
    Schema.isPattern(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, { message: "home name must be a DNS-1123 subdomain (lower case letters, digits, '-', '.')" })
  )
)

/** One home volume, as the agent sees it. */
export const HomeVolume = Schema.Struct({
  name: HomeName,
  user_id: UserId,
  /** The storage requested, as a Kubernetes quantity (`10Gi`). */
  size: Schema.optionalKey(Schema.String),
  created_at: Timestamp,
  /** True while a pod of the agent mounts it. */
  in_use: Schema.Boolean
})
export type HomeVolume = typeof HomeVolume.Type

/** The homes of one `list_homes` answer (as many as sessions fit in a message). */
export const HomeVolumes = Schema.Array(HomeVolume).pipe(
  Schema.check(Schema.isMaxLength(MAX_SESSIONS_PER_MESSAGE, { message: `at most ${MAX_SESSIONS_PER_MESSAGE} homes per message` }))
)
