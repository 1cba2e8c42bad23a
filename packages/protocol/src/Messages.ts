// Text frames: one JSON object per WebSocket text frame, `{ "type", "id", "ts", "payload" }`.
// Decoding is two steps (envelope, then the payload of that type) so that every error can name the
// frame id and the field at fault, and an unknown `type` is told apart from a bad payload.
import { Result, Schema } from "effect"
import { Command, CommandAction, CommandError, CommandResult, isCommandAction } from "./Command.ts"
import { AgentId, CommandId, MessageId, SessionId, Timestamp, TunnelId } from "./Ids.ts"
import { MAX_LINK_WINDOW_BYTES, MAX_SESSIONS_PER_MESSAGE, MAX_TEXT_FRAME_BYTES, MAX_TUNNELS_PER_CONNECTION, MIN_LINK_WINDOW_BYTES } from "./Limits.ts"
import { ProtocolError, ProtocolErrorReason } from "./ProtocolError.ts"
import { AgentStatus, Capacity, Platform, SessionStatus } from "./Session.ts"

const Sessions = Schema.Array(SessionStatus).pipe(
  Schema.check(Schema.isMaxLength(MAX_SESSIONS_PER_MESSAGE, { message: `at most ${MAX_SESSIONS_PER_MESSAGE} sessions per message` }))
)

// ---- payloads, one per message type -------------------------------------------------------------

/** agent -> control plane, first frame on every connection. */
export const Hello = Schema.Struct({
  agent_id: AgentId,
  platform: Platform,
  region: Schema.String,
  /** The agent software version (semver). */
  version: Schema.String,
  /** Protocol versions the agent speaks, preferred first. */
  protocol_versions: Schema.Array(Schema.String).pipe(Schema.check(Schema.isMinLength(1, { message: "must list at least one protocol version" }))),
  capacity: Capacity,
  /** Every session the agent runs right now, so the control plane can reconcile. */
  sessions: Sessions
})

export const Enrollment = Schema.Literals(["approved", "pending"])
export type Enrollment = typeof Enrollment.Type

/** control plane -> agent, the answer to `hello`. */
export const Welcome = Schema.Struct({
  protocol_version: Schema.String,
  /** `pending`: connected with the bootstrap token and waiting for an admin; no commands arrive until `credential`. */
  enrollment: Enrollment,
  /** True when an operator drained this agent: it keeps its sessions but gets no new ones. */
  draining: Schema.Boolean,
  /**
   * The heartbeat interval the control plane expects (ms): it declares an agent offline after a few missed
   * intervals of this length, so an agent configured with a longer HEARTBEAT_INTERVAL beats at this one instead.
   * Absent (older control planes): the agent keeps its own.
   */
  heartbeat_interval_ms: Schema.optionalKey(Schema.Number.pipe(Schema.check(
    Schema.isInt({ message: "heartbeat_interval_ms must be an integer" }),
    Schema.isGreaterThanOrEqualTo(100, { message: "heartbeat_interval_ms must be at least 100" })
  ))),
  /**
   * Link credit: the agent keeps at most this many tunnel data bytes sent and not yet credited back by `link_window`
   * frames (window frames naming tunnel 0), across all tunnels. Absent: no link credit, per-tunnel windows only.
   */
  link_window: Schema.optionalKey(Schema.Number.pipe(Schema.check(
    Schema.isInt(),
    Schema.isBetween({ minimum: MIN_LINK_WINDOW_BYTES, maximum: MAX_LINK_WINDOW_BYTES }, {
      message: `link_window must be between ${MIN_LINK_WINDOW_BYTES} and ${MAX_LINK_WINDOW_BYTES} bytes`
    })
  )))
})

/** control plane -> agent: the per-agent credential, sent on approval and on rotation. The agent stores it and uses it from then on. */
export const Credential = Schema.Struct({
  token: Schema.String.pipe(Schema.check(Schema.isMinLength(16, { message: "credential token too short" })))
})

/** agent -> control plane, every HEARTBEAT_INTERVAL. */
export const Heartbeat = Schema.Struct({
  status: AgentStatus,
  capacity: Capacity,
  active_sessions: Schema.Number.pipe(Schema.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))),
  active_tunnels: Schema.Number.pipe(Schema.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0))),
  /** Why the status is not `online`, in words. */
  message: Schema.optionalKey(Schema.String),
  /**
   * The ids of the tunnels open on the agent when it sent the beat. The control plane reconciles with it: it
   * closes (`vnc_disconnect`) an id it does not know, and ends a viewer whose tunnel the agent no longer has.
   * Absent (older agents): no reconciliation.
   */
  tunnel_ids: Schema.optionalKey(Schema.Array(TunnelId).pipe(
    Schema.check(Schema.isMaxLength(MAX_TUNNELS_PER_CONNECTION, { message: `at most ${MAX_TUNNELS_PER_CONNECTION} tunnel ids` }))
  ))
})

export const CommandAck = Schema.Struct({ command_id: CommandId })
export const CommandCompleted = Schema.Struct({ command_id: CommandId, result: CommandResult })
export const CommandFailed = Schema.Struct({ command_id: CommandId, action: CommandAction, error: CommandError })

export const VncCloseReason = Schema.Literals([
  "disconnect", // vnc_disconnect asked for it
  "idle_timeout", // no bytes either way for VNC_TUNNEL_TIMEOUT
  "pod_gone", // the session pod died or was deleted
  "upstream_closed", // the VNC server closed the connection
  "shutdown", // the agent is stopping
  "error" // the port-forward failed; `message` says how
])
export const VncClosed = Schema.Struct({
  tunnel_id: TunnelId,
  session_id: Schema.optionalKey(SessionId),
  reason: VncCloseReason,
  message: Schema.optionalKey(Schema.String)
})

export const Ping = Schema.Struct({ nonce: Schema.String })
export const Pong = Schema.Struct({ nonce: Schema.String })
export const Drain = Schema.Struct({ draining: Schema.Boolean })
/**
 * control plane -> agent: this replica is stopping; reconnect now, without backoff (the balancer sends the new
 * connection to another replica). The socket then closes with CloseCode.reconnect.
 */
export const GoAway = Schema.Struct({ reason: Schema.String })
/** agent -> control plane, last frame before a graceful close. */
export const Goodbye = Schema.Struct({ reason: Schema.String })

export const ErrorCode = Schema.Union([ProtocolErrorReason, Schema.Literals(["Unauthorized", "Internal", "AlreadyConnected"])])
/** Either direction: the answer to a frame that could not be used. The connection stays up. */
export const ErrorPayload = Schema.Struct({
  code: ErrorCode,
  message: Schema.String,
  /** The `id` of the frame this answers, when it could be read. */
  ref_id: Schema.optionalKey(Schema.String)
})

/** Every message type and its payload schema. */
export const Payloads = {
  hello: Hello,
  welcome: Welcome,
  credential: Credential,
  heartbeat: Heartbeat,
  command: Command,
  command_ack: CommandAck,
  command_completed: CommandCompleted,
  command_failed: CommandFailed,
  session_status: SessionStatus,
  vnc_closed: VncClosed,
  ping: Ping,
  pong: Pong,
  drain: Drain,
  goaway: GoAway,
  goodbye: Goodbye,
  error: ErrorPayload
} as const

export type MessageType = keyof typeof Payloads
export type PayloadOf<T extends MessageType> = (typeof Payloads)[T]["Type"]
export interface Message<T extends MessageType> {
  readonly type: T
  readonly id: MessageId
  readonly ts: string
  readonly payload: PayloadOf<T>
}
export type AnyMessage<T extends MessageType = MessageType> = { [K in T]: Message<K> }[T]

/** Types an agent may send. */
export const AGENT_MESSAGE_TYPES = [
  "hello", "heartbeat", "command_ack", "command_completed", "command_failed", "session_status", "vnc_closed", "pong", "goodbye", "error"
] as const satisfies ReadonlyArray<MessageType>
/** Types a control plane may send. */
export const CONTROL_PLANE_MESSAGE_TYPES = [
  "welcome", "credential", "command", "ping", "drain", "goaway", "error"
] as const satisfies ReadonlyArray<MessageType>

export type AgentMessage = AnyMessage<(typeof AGENT_MESSAGE_TYPES)[number]>
export type ControlPlaneMessage = AnyMessage<(typeof CONTROL_PLANE_MESSAGE_TYPES)[number]>

// ---- decode ------------------------------------------------------------------------------------

const Envelope = Schema.Struct({
  type: Schema.String,
  id: MessageId,
  ts: Timestamp,
  payload: Schema.Unknown
})
const decodeEnvelope = Schema.decodeUnknownResult(Envelope)
const payloadDecoders = Object.fromEntries(
  Object.entries(Payloads).map(([type, schema]) => [type, Schema.decodeUnknownResult(schema as Schema.Codec<unknown, unknown>)])
) as { readonly [K in MessageType]: (input: unknown) => Result.Result<PayloadOf<K>, Schema.SchemaError> }

/** UTF-8 length of a string, without allocating. */
export const utf8Length = (s: string): number => {
  let n = 0
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4
      i++
    } else n += 3
  }
  return n
}

/** Turns a SchemaError into one line per issue: `payload.capacity.cpu: must be a Kubernetes quantity ...`. */
export const formatSchemaError = (error: Schema.SchemaError, prefix?: string): string => {
  const lines = error.message.split("\n")
  const out: Array<string> = []
  for (let i = 0; i < lines.length; i++) {
    const text = lines[i]!.trim()
    const next = lines[i + 1]?.trim()
    if (next !== undefined && next.startsWith("at [")) {
      const path = [...next.matchAll(/\["?([^"\]]*)"?\]/g)].map((m) => m[1]).join(".")
      out.push(`${[prefix, path].filter((p) => p).join(".")}: ${text}`)
      i++
    } else if (text !== "") {
      out.push(prefix ? `${prefix}: ${text}` : text)
    }
  }
  return out.join("; ")
}

const fail = (reason: ProtocolError["reason"], message: string, extra: { frameId?: string; type?: string } = {}) =>
  Result.fail(new ProtocolError({ reason, message, ...extra }))

/**
 * Decodes one text frame. `accept` is the set of types this side may receive; a known type outside it is
 * `UnexpectedType`. Never throws.
 */
export const decodeText = <T extends MessageType>(
  raw: string,
  accept: ReadonlyArray<T>
): Result.Result<AnyMessage<T>, ProtocolError> => {
  if (raw.length > MAX_TEXT_FRAME_BYTES || (raw.length * 3 > MAX_TEXT_FRAME_BYTES && utf8Length(raw) > MAX_TEXT_FRAME_BYTES)) {
    return fail("TooLarge", `text frame is larger than ${MAX_TEXT_FRAME_BYTES} bytes`)
  }
  let json: unknown
  try {
    json = JSON.parse(raw)
  } catch (e) {
    return fail("MalformedJson", `text frame is not valid JSON: ${(e as Error).message}`)
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    return fail("MalformedJson", "text frame must be a JSON object with type, id, ts and payload")
  }
  const record = json as Record<string, unknown>
  const frameId = typeof record.id === "string" ? { frameId: record.id } : {}
  const type = record.type
  if (typeof type === "string" && !Object.hasOwn(Payloads, type)) {
    return fail("UnknownType", `unknown message type "${type.slice(0, 64)}"`, { ...frameId, type: type.slice(0, 64) })
  }
  const envelope = decodeEnvelope(json)
  if (Result.isFailure(envelope)) {
    return fail("InvalidEnvelope", formatSchemaError(envelope.failure), frameId)
  }
  const known = envelope.success.type as MessageType
  if (!(accept as ReadonlyArray<string>).includes(known)) {
    return fail("UnexpectedType", `message type "${known}" is not accepted here`, { ...frameId, type: known })
  }
  const body = envelope.success.payload
  if (known === "command" && typeof body === "object" && body !== null && !isCommandAction((body as { action?: unknown }).action)) {
    const action = String((body as { action?: unknown }).action).slice(0, 64)
    return fail("InvalidPayload", `invalid command: payload.action: unknown command action "${action}"`, { ...frameId, type: known })
  }
  const payload: Result.Result<unknown, Schema.SchemaError> = payloadDecoders[known](body)
  if (Result.isFailure(payload)) {
    return fail("InvalidPayload", `invalid ${known}: ${formatSchemaError(payload.failure, "payload")}`, { ...frameId, type: known })
  }
  return Result.succeed({ type: known, id: envelope.success.id, ts: envelope.success.ts, payload: payload.success } as AnyMessage<T>)
}

/** Decodes a frame sent by an agent (used by the control plane). */
export const decodeFromAgent = (raw: string) => decodeText(raw, AGENT_MESSAGE_TYPES)
/** Decodes a frame sent by the control plane (used by the agent). */
export const decodeFromControlPlane = (raw: string) => decodeText(raw, CONTROL_PLANE_MESSAGE_TYPES)

// ---- encode ------------------------------------------------------------------------------------

/** Builds a message; `id` and `ts` come from the caller, so this module stays free of clocks and randomness. */
export const makeMessage = <T extends MessageType>(type: T, payload: PayloadOf<T>, id: string, ts: string): Message<T> => ({
  type,
  id: id as MessageId,
  ts,
  payload
})

/**
 * Encodes a message as one text frame. Every schema here decodes to the same JSON shape it reads, so
 * encoding is JSON serialisation of a value the type system already checked.
 */
export const encodeText = (message: AnyMessage): string => JSON.stringify(message)

/** Validates a payload built at run time (for example from user input) before it is sent. */
export const validatePayload = <T extends MessageType>(type: T, payload: unknown): Result.Result<PayloadOf<T>, ProtocolError> => {
  const r: Result.Result<unknown, Schema.SchemaError> = payloadDecoders[type](payload)
  return Result.isFailure(r)
    ? fail("InvalidPayload", `invalid ${type}: ${formatSchemaError(r.failure, "payload")}`, { type })
    : Result.succeed(r.success as PayloadOf<T>)
}

/**
 * The short fingerprint of one enrolling connection: the first 12 hex digits of its `hello` frame id, in
 * groups of four. The agent sends its hello with a random id and logs this; the control plane shows it with
 * the pending agent, so an administrator can tell the real agent's socket from another one before approving.
 */
export const helloFingerprint = (helloId: string): string => {
  const hex = helloId.toLowerCase().replace(/[^0-9a-f]/g, "").slice(0, 12)
  return (hex.match(/.{1,4}/g) ?? []).join("-")
}
