// The one wire error: everything that can go wrong while decoding a frame or negotiating a version.
import { Schema } from "effect"

export const ProtocolErrorReason = Schema.Literals([
  "MalformedJson", // the text frame is not a JSON object
  "UnknownType", // the envelope's `type` names no message of this protocol version
  "UnexpectedType", // a real message, but not one this side accepts (e.g. `welcome` sent by an agent)
  "InvalidEnvelope", // `type`, `id`, `ts` or `payload` is missing or has the wrong shape
  "InvalidPayload", // the payload does not match the message's schema
  "TooLarge", // the frame is over its size limit
  "TruncatedBinary", // a binary frame shorter than its fixed header
  "UnknownBinaryKind", // a binary frame whose kind byte is not a known kind
  "NoCommonVersion" // `hello` offered no protocol version this side speaks
])
export type ProtocolErrorReason = typeof ProtocolErrorReason.Type

export class ProtocolError extends Schema.TaggedError<ProtocolError>()("ProtocolError", {
  reason: ProtocolErrorReason,
  message: Schema.String,
  /** The id of the offending frame, when it could be read (so an `error` reply can refer to it). */
  frameId: Schema.optionalKey(Schema.String),
  /** The message type, when it could be read. */
  type: Schema.optionalKey(Schema.String)
}) {}
