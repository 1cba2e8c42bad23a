// Branded identifiers. Each one is validated where it enters the system, so code past the decoder
// can use it as a Kubernetes name, a label value or a header byte without checking again.
import { Schema } from "effect"

const DNS_1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/
const DNS_1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/
// A Kubernetes label value: at most 63 characters, alphanumeric at both ends, `-`, `_` and `.` inside.
const LABEL_VALUE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/
const TOKEN_ID = /^[A-Za-z0-9][-A-Za-z0-9_.:]*$/

const dnsLabel = (what: string) =>
  Schema.String.pipe(
    Schema.check(
      Schema.isMaxLength(63, { message: `${what} must be at most 63 characters` }),
      Schema.isPattern(DNS_1123_LABEL, {
        message: `${what} must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit`
      })
    )
  )

/** An agent id: unique per control plane and a DNS-1123 label, because it becomes the `agent` label on every object. */
export const AgentId = dnsLabel("agent id").pipe(Schema.brand("AgentId"))
export type AgentId = typeof AgentId.Type

/**
 * A session id. It names the session's pod and service, so it is a DNS-1123 label of at most 63 characters
 * that also starts with a letter (Service names must be DNS-1035 labels).
 */
export const SessionId = Schema.String.pipe(
  Schema.check(
    Schema.isMaxLength(63, { message: "session id must be at most 63 characters" }),
    Schema.isPattern(DNS_1035_LABEL, {
      message: "session id must be a DNS label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit"
    })
  ),
  Schema.brand("SessionId")
)
export type SessionId = typeof SessionId.Type

/** A user id: a valid Kubernetes label value, because it becomes the `streamspace.io/user` label. */
export const UserId = Schema.String.pipe(
  Schema.check(
    Schema.isMaxLength(63, { message: "user id must be at most 63 characters" }),
    Schema.isPattern(LABEL_VALUE, {
      message: "user id must be a label value: letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    })
  ),
  Schema.brand("UserId")
)
export type UserId = typeof UserId.Type

/** A template name: a DNS-1123 label, because it becomes the `streamspace.io/template` label. */
export const TemplateName = dnsLabel("template name").pipe(Schema.brand("TemplateName"))
export type TemplateName = typeof TemplateName.Type

const tokenId = (what: string) =>
  Schema.String.pipe(
    Schema.check(
      Schema.isMaxLength(128, { message: `${what} must be at most 128 characters` }),
      Schema.isPattern(TOKEN_ID, {
        message: `${what} must be letters, digits, '-', '_', '.' or ':', starting with a letter or digit`
      })
    )
  )

/** A command id, chosen by the control plane; the agent dedupes re-deliveries by it. */
export const CommandId = tokenId("command id").pipe(Schema.brand("CommandId"))
export type CommandId = typeof CommandId.Type

/** The id of one text frame, so that an `error` reply can name the frame it answers. */
export const MessageId = tokenId("message id").pipe(Schema.brand("MessageId"))
export type MessageId = typeof MessageId.Type

/** The largest tunnel id: it travels as an unsigned 32-bit integer in every binary frame header. */
export const MAX_TUNNEL_ID = 0xffff_ffff

/** A tunnel id: a positive 32-bit integer chosen by the control plane, unique per agent connection. */
export const TunnelId = Schema.Number.pipe(
  Schema.check(
    Schema.isInt({ message: "tunnel id must be an integer" }),
    Schema.isBetween({ minimum: 1, maximum: MAX_TUNNEL_ID }, { message: `tunnel id must be between 1 and ${MAX_TUNNEL_ID}` })
  ),
  Schema.brand("TunnelId")
)
export type TunnelId = typeof TunnelId.Type

/** A W3C trace context `traceparent` header value (version 00 format). */
export const Traceparent = Schema.String.pipe(
  Schema.check(
    Schema.isPattern(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/, {
      message: "traceparent must be a W3C trace context value like 00-<32 hex>-<16 hex>-<2 hex>"
    })
  )
)

/** An ISO 8601 timestamp with a zone, as `Date.prototype.toISOString` writes it. */
export const Timestamp = Schema.String.pipe(
  Schema.check(
    Schema.isPattern(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/, {
      message: "must be an ISO 8601 timestamp such as 2026-01-02T03:04:05.678Z"
    })
  )
)
