// Binary frames carry tunnel bytes: [kind: u8][tunnel id: u32 big-endian][body]. VNC bytes are never base64'd.
//
// Flow control: each tunnel direction has a credit window. The sender starts with `window` bytes of credit,
// spends one byte per payload byte, and stops reading its source at zero. The receiver, once it has passed
// bytes on, returns that many bytes of credit in a `window` frame (batched, see `creditThreshold`).
//
// Link credit: when `welcome` carries `link_window`, the agent also keeps the data bytes it has sent and the
// control plane has not yet read off the socket within that window, across all tunnels. The control plane
// returns them in window frames naming tunnel 0 (`link_window` frames). Per-tunnel credit bounds what one
// viewer can pin; link credit bounds the queue on the shared socket, so one tunnel's bytes never wait behind
// every other tunnel's whole window.
import { Result } from "effect"
import type { TunnelId } from "./Ids.ts"
import { BINARY_HEADER_BYTES, MAX_BINARY_PAYLOAD_BYTES } from "./Limits.ts"
import { ProtocolError } from "./ProtocolError.ts"

export const BinaryKind = { data: 1, window: 2 } as const

export interface DataFrame {
  readonly kind: "data"
  readonly tunnelId: TunnelId
  /** A view into the received frame: no copy. */
  readonly payload: Uint8Array
}
export interface WindowFrame {
  readonly kind: "window"
  readonly tunnelId: TunnelId
  /** Bytes of credit returned to the sender. */
  readonly credit: number
}
/** Credit for the shared agent link (a window frame naming tunnel 0); only the control plane sends it. */
export interface LinkWindowFrame {
  readonly kind: "link_window"
  readonly credit: number
}
export type BinaryFrame = DataFrame | WindowFrame

const header = (buf: Uint8Array, kind: number, tunnelId: number) => {
  buf[0] = kind
  buf[1] = tunnelId >>> 24
  buf[2] = (tunnelId >>> 16) & 0xff
  buf[3] = (tunnelId >>> 8) & 0xff
  buf[4] = tunnelId & 0xff
}

/** One data frame. The payload is copied once, behind the header; callers split at MAX_BINARY_PAYLOAD_BYTES. */
export const encodeData = (tunnelId: TunnelId, payload: Uint8Array): Uint8Array => {
  if (payload.length > MAX_BINARY_PAYLOAD_BYTES) {
    throw new RangeError(`data payload of ${payload.length} bytes is over MAX_BINARY_PAYLOAD_BYTES; split it first`)
  }
  const buf = new Uint8Array(BINARY_HEADER_BYTES + payload.length)
  header(buf, BinaryKind.data, tunnelId)
  buf.set(payload, BINARY_HEADER_BYTES)
  return buf
}

/** Splits any chunk into data frames of at most MAX_BINARY_PAYLOAD_BYTES each. */
export const encodeDataFrames = (tunnelId: TunnelId, chunk: Uint8Array): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  for (let off = 0; off < chunk.length; off += MAX_BINARY_PAYLOAD_BYTES) {
    out.push(encodeData(tunnelId, chunk.subarray(off, off + MAX_BINARY_PAYLOAD_BYTES)))
  }
  return out
}

/** A credit (window update) frame returning `credit` bytes (1 .. 2^32-1). */
export const encodeWindow = (tunnelId: TunnelId, credit: number): Uint8Array => {
  const buf = new Uint8Array(BINARY_HEADER_BYTES + 4)
  header(buf, BinaryKind.window, tunnelId)
  new DataView(buf.buffer).setUint32(BINARY_HEADER_BYTES, credit)
  return buf
}

/** A link credit frame (a window frame naming tunnel 0) returning `credit` bytes of the agent link's window. */
export const encodeLinkWindow = (credit: number): Uint8Array => encodeWindow(0 as TunnelId, credit)

/** Bytes of a binary frame that count against credit windows: the payload of a data frame; 0 for credit frames. */
export const creditedBytes = (frame: Uint8Array): number =>
  frame[0] === BinaryKind.data ? frame.length - BINARY_HEADER_BYTES : 0

const fail = (reason: ProtocolError["reason"], message: string) => Result.fail(new ProtocolError({ reason, message }))

/** Decodes one binary frame without copying the payload. Never throws. */
export const decodeBinary = (frame: Uint8Array): Result.Result<BinaryFrame | LinkWindowFrame, ProtocolError> => {
  if (frame.length < BINARY_HEADER_BYTES) {
    return fail("TruncatedBinary", `binary frame of ${frame.length} bytes is shorter than its ${BINARY_HEADER_BYTES}-byte header`)
  }
  const tunnelId = ((frame[1]! << 24) | (frame[2]! << 16) | (frame[3]! << 8) | frame[4]!) >>> 0
  const kind = frame[0]
  if (tunnelId === 0 && kind !== BinaryKind.window) {
    return fail("InvalidPayload", "binary frame names tunnel 0, which is never assigned (only link credit uses it)")
  }
  if (kind === BinaryKind.data) {
    const payload = frame.subarray(BINARY_HEADER_BYTES)
    if (payload.length > MAX_BINARY_PAYLOAD_BYTES) {
      return fail("TooLarge", `data payload of ${payload.length} bytes is over the ${MAX_BINARY_PAYLOAD_BYTES}-byte limit`)
    }
    return Result.succeed({ kind: "data", tunnelId: tunnelId as TunnelId, payload })
  }
  if (kind === BinaryKind.window) {
    if (frame.length !== BINARY_HEADER_BYTES + 4) {
      return fail("TruncatedBinary", `window frame must be ${BINARY_HEADER_BYTES + 4} bytes, got ${frame.length}`)
    }
    const credit = new DataView(frame.buffer, frame.byteOffset, frame.byteLength).getUint32(BINARY_HEADER_BYTES)
    if (credit === 0) return fail("InvalidPayload", "window frame returns 0 bytes of credit")
    if (tunnelId === 0) return Result.succeed({ kind: "link_window", credit })
    return Result.succeed({ kind: "window", tunnelId: tunnelId as TunnelId, credit })
  }
  return fail("UnknownBinaryKind", `unknown binary frame kind ${kind}`)
}

/**
 * A receiver returns credit once it has passed on at least this many bytes: a quarter of the window
 * keeps the sender busy without a credit frame per data frame.
 */
export const creditThreshold = (window: number): number => Math.max(1, Math.floor(window / 4))
