// Commands: what the control plane asks an agent to do, and how the agent answers.
// Lifecycle (persisted by the control plane): pending -> sent -> ack -> completed | failed.
import { Schema } from "effect"
import { HomeName, HomeVolumes } from "./Home.ts"
import { CommandId, SessionId, Timestamp, Traceparent, TunnelId, UserId } from "./Ids.ts"
import { MAX_WINDOW_BYTES, MIN_WINDOW_BYTES } from "./Limits.ts"
import { SessionSpec, SessionStatus, WarmPool } from "./Session.ts"

export const CommandState = Schema.Literals(["pending", "sent", "ack", "completed", "failed"])
export type CommandState = typeof CommandState.Type

export const CommandAction = Schema.Literals([
  "create_session",
  "delete_session",
  "list_sessions",
  "vnc_connect",
  "vnc_disconnect",
  "hibernate_session",
  "resume_session",
  "list_homes",
  "delete_home",
  "set_warm_pools"
])
export type CommandAction = typeof CommandAction.Type
export const isCommandAction = Schema.is(CommandAction)

const Window = Schema.Number.pipe(
  Schema.check(
    Schema.isInt({ message: "window must be an integer" }),
    Schema.isBetween({ minimum: MIN_WINDOW_BYTES, maximum: MAX_WINDOW_BYTES }, {
      message: `window must be between ${MIN_WINDOW_BYTES} and ${MAX_WINDOW_BYTES} bytes`
    })
  )
)

const fields = {
  command_id: CommandId,
  /** When the control plane stops waiting, ISO 8601; the agent fails the command with `timeout` past it. */
  deadline: Timestamp,
  traceparent: Schema.optionalKey(Traceparent)
}

export const CreateSession = Schema.Struct({
  ...fields,
  action: Schema.Literal("create_session"),
  args: Schema.Struct({ session_id: SessionId, spec: SessionSpec })
})
export const DeleteSession = Schema.Struct({
  ...fields,
  action: Schema.Literal("delete_session"),
  args: Schema.Struct({ session_id: SessionId })
})
export const ListSessions = Schema.Struct({
  ...fields,
  action: Schema.Literal("list_sessions"),
  args: Schema.Struct({})
})
export const VncConnect = Schema.Struct({
  ...fields,
  action: Schema.Literal("vnc_connect"),
  args: Schema.Struct({
    session_id: SessionId,
    tunnel_id: TunnelId,
    /** Credit window the control plane grants the agent for this tunnel (bytes); the protocol default when absent. */
    window: Schema.optionalKey(Window)
  })
})
export const VncDisconnect = Schema.Struct({
  ...fields,
  action: Schema.Literal("vnc_disconnect"),
  args: Schema.Struct({ tunnel_id: TunnelId })
})

/** Deletes the session's pod and service and keeps its home volume, so `resume_session` can start it again. */
export const HibernateSession = Schema.Struct({
  ...fields,
  action: Schema.Literal("hibernate_session"),
  args: Schema.Struct({ session_id: SessionId })
})
/**
 * Starts a hibernated session again: a new pod (and service) for the same session id on the same home volume.
 * Unlike `create_session`, it fails with `session_not_found` when the spec asks for a persistent home that no
 * longer exists, instead of starting on an empty one.
 */
export const ResumeSession = Schema.Struct({
  ...fields,
  action: Schema.Literal("resume_session"),
  args: Schema.Struct({ session_id: SessionId, spec: SessionSpec })
})

/** The user's home volumes on this agent. */
export const ListHomes = Schema.Struct({
  ...fields,
  action: Schema.Literal("list_homes"),
  args: Schema.Struct({})
})
/** Deletes a home volume (its data is gone); fails with `home_in_use` while a pod mounts it; a missing one succeeds. */
export const DeleteHome = Schema.Struct({
  ...fields,
  action: Schema.Literal("delete_home"),
  /** `user_id` must be the home's owner: the agent refuses to delete a volume of someone else. */
  args: Schema.Struct({ name: HomeName, user_id: UserId })
})

/** The warm pools this agent keeps from now on (the whole set: a template left out has none). */
export const SetWarmPools = Schema.Struct({
  ...fields,
  action: Schema.Literal("set_warm_pools"),
  args: Schema.Struct({ pools: Schema.Array(WarmPool).pipe(Schema.check(Schema.isMaxLength(256, { message: "at most 256 warm pools" }))) })
})

/** The payload of a `command` frame. */
export const Command = Schema.Union([CreateSession, DeleteSession, ListSessions, VncConnect, VncDisconnect, HibernateSession, ResumeSession, ListHomes, DeleteHome, SetWarmPools]).pipe(
  Schema.toTaggedUnion("action")
)
export type Command = typeof Command.Type

/** Results by action, carried by `command_completed`. */
export const CommandResult = Schema.Union([
  Schema.Struct({ action: Schema.Literal("create_session"), session: SessionStatus }),
  Schema.Struct({ action: Schema.Literal("delete_session"), session_id: SessionId }),
  Schema.Struct({ action: Schema.Literal("list_sessions"), sessions: Schema.Array(SessionStatus) }),
  Schema.Struct({
    action: Schema.Literal("vnc_connect"),
    tunnel_id: TunnelId,
    /** Credit window the agent grants the control plane for bytes towards the session. */
    window: Window
  }),
  Schema.Struct({ action: Schema.Literal("vnc_disconnect"), tunnel_id: TunnelId }),
  Schema.Struct({
    action: Schema.Literal("hibernate_session"),
    session_id: SessionId,
    /** The home volume (PVC name) kept for the resume; absent when the session had none. */
    home_claim: Schema.optionalKey(Schema.String)
  }),
  Schema.Struct({ action: Schema.Literal("resume_session"), session: SessionStatus }),
  Schema.Struct({ action: Schema.Literal("list_homes"), homes: HomeVolumes }),
  Schema.Struct({ action: Schema.Literal("delete_home"), name: HomeName }),
  Schema.Struct({ action: Schema.Literal("set_warm_pools") })
]).pipe(Schema.toTaggedUnion("action"))
export type CommandResult = typeof CommandResult.Type

/** Machine-readable failure codes of `command_failed`. */
export const CommandErrorCode = Schema.Literals([
  "invalid_command", // the command is well-formed but cannot be executed as asked
  "session_not_found", // no such session on this agent
  "session_not_running", // e.g. vnc_connect to a session whose pod is not ready
  "capacity_exceeded", // MAX_SESSIONS reached, or too many tunnels
  "timeout", // the deadline passed before the command finished
  "kubernetes_rejected", // the API server refused the objects (4xx validation); the message is the API's
  "kubernetes_unavailable", // the API server kept failing (5xx, 429, network) past the retry budget
  "forbidden", // RBAC denied the agent what the command needs
  "tunnel_failed", // the port-forward to the session could not be opened
  "shutting_down", // the agent is stopping and took no new work
  "home_in_use", // delete_home of a home a pod still mounts
  "internal" // a bug: the message says what happened
])
export type CommandErrorCode = typeof CommandErrorCode.Type

export const CommandError = Schema.Struct({
  code: CommandErrorCode,
  message: Schema.String,
  /** True when sending the same command again later may succeed. */
  retryable: Schema.Boolean
})
export type CommandError = typeof CommandError.Type
