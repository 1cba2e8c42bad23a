// Sessions on the wire: what the control plane asks for (spec) and what the agent observes (status),
// plus the agent's capacity and status, which placement reads.
import { Schema } from "effect"
import { SessionId, TemplateName, UserId } from "./Ids.ts"
import { Quantity } from "./Quantity.ts"

/**
 * `hibernating` and `hibernated` are the control plane's states of a session whose pod is being removed or
 * is gone while its home volume stays (resume starts a new pod on it); agents never report them.
 */
export const SessionPhase = Schema.Literals(["pending", "creating", "running", "terminating", "terminated", "failed", "hibernating", "hibernated"])
export type SessionPhase = typeof SessionPhase.Type

export const Resources = Schema.Struct({
  cpu: Schema.optionalKey(Quantity),
  memory: Schema.optionalKey(Quantity)
})
export type Resources = typeof Resources.Type

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
/**
 * Environment variables injected into the session container. The names are checked on the whole record:
 * a key schema on Schema.Record would silently drop bad names instead of rejecting them.
 */
export const EnvVars = Schema.Record(Schema.String, Schema.String).pipe(
  Schema.check(
    Schema.makeFilter((env: { readonly [k: string]: string }) => {
      const bad = Object.keys(env).find((k) => !ENV_NAME.test(k))
      return bad === undefined
        ? undefined
        : { path: [bad], issue: `environment variable name "${bad.slice(0, 64)}" must match [A-Za-z_][A-Za-z0-9_]*` }
    })
  )
)

export const Port = Schema.Number.pipe(
  Schema.check(
    Schema.isInt({ message: "port must be an integer" }),
    Schema.isBetween({ minimum: 1, maximum: 65535 }, { message: "port must be between 1 and 65535" })
  )
)

/** What to run for one session. Resources left out take the agent's defaults. */
export const SessionSpec = Schema.Struct({
  user_id: UserId,
  template: TemplateName,
  image: Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: "image must not be empty" }))),
  resources: Schema.optionalKey(Resources),
  env: Schema.optionalKey(EnvVars),
  /** Mount the user's persistent home volume (reused by that user's later sessions). */
  persistent_home: Schema.Boolean,
  /** Ask for a ReadWriteMany home, so several sessions of the user can mount it at once. */
  shared_home: Schema.optionalKey(Schema.Boolean),
  vnc_port: Port
})
export type SessionSpec = typeof SessionSpec.Type

/** Most warm pods one template may keep per agent. */
export const MAX_WARM_POOL = 50

/**
 * A template's warm pool on an agent: `size` pods of this spec kept started and unassigned, so a create of a
 * matching session (same image, resources, env and port, no persistent home) takes one instead of starting a pod.
 */
export const WarmPool = Schema.Struct({
  template: TemplateName,
  size: Schema.Number.pipe(Schema.check(
    Schema.isInt({ message: "size must be a whole number" }),
    Schema.isBetween({ minimum: 0, maximum: MAX_WARM_POOL }, { message: `size must be between 0 and ${MAX_WARM_POOL}` })
  )),
  image: Schema.String.pipe(Schema.check(Schema.isMinLength(1, { message: "image must not be empty" }))),
  resources: Schema.optionalKey(Resources),
  env: Schema.optionalKey(EnvVars),
  vnc_port: Port
})
export type WarmPool = typeof WarmPool.Type

/** What the agent observes about one session. */
export const SessionStatus = Schema.Struct({
  session_id: SessionId,
  phase: SessionPhase,
  /** Short machine-readable cause, e.g. `ImagePullBackOff`, `PodDeleted`, `CrashLoopBackOff`. */
  reason: Schema.optionalKey(Schema.String),
  message: Schema.optionalKey(Schema.String),
  user_id: Schema.optionalKey(UserId),
  template: Schema.optionalKey(TemplateName),
  pod_ip: Schema.optionalKey(Schema.String),
  /** When the agent saw this state, ISO 8601. */
  observed_at: Schema.String
})
export type SessionStatus = typeof SessionStatus.Type

/** Allocatable capacity as the agent guide shows it: `{"cpu": "8000m", "memory": "16Gi", "max_sessions": 100}`. */
export const Capacity = Schema.Struct({
  cpu: Quantity,
  memory: Quantity,
  max_sessions: Schema.Number.pipe(
    Schema.check(Schema.isInt({ message: "max_sessions must be an integer" }), Schema.isGreaterThanOrEqualTo(0))
  )
})
export type Capacity = typeof Capacity.Type

/** Status an agent reports about itself. `offline` is only ever set by the control plane. */
export const AgentStatus = Schema.Literals(["online", "offline", "warning", "error"])
export type AgentStatus = typeof AgentStatus.Type

export const Platform = Schema.Literals(["kubernetes", "docker"])
export type Platform = typeof Platform.Type
