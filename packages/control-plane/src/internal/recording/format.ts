// The recording file format (one object per recording, `<session>/<recording>.rec`): a 8-byte magic, then
// records, each `[track u8][time u32 BE: ms since the recording started][length u32 BE][payload]`.
// Track 0 is the server-to-client RFB stream of the recorded viewer's connection, from its first byte (the
// server's ProtocolVersion), so a player can hand it to an RFB client as it is. Track 1 is user input (RFB
// KeyEvent, PointerEvent, ClientCutText messages, whole) from every viewer of the session, for audit and
// review; a player does not need it. The web player (web/player.js) reads the same layout.

export const MAGIC = new TextEncoder().encode("SSREC01\n")
export const RECORD_HEADER_BYTES = 9

export const Track = { server: 0, input: 1 } as const
export type Track = (typeof Track)[keyof typeof Track]

export interface RecordEntry {
  readonly track: number
  readonly timeMs: number
  readonly payload: Uint8Array
}

/** One record, header and payload. */
export const encodeRecord = (track: Track, timeMs: number, payload: Uint8Array): Uint8Array => {
  const out = new Uint8Array(RECORD_HEADER_BYTES + payload.length)
  const view = new DataView(out.buffer)
  view.setUint8(0, track)
  view.setUint32(1, Math.max(0, Math.min(0xffffffff, Math.floor(timeMs))))
  view.setUint32(5, payload.length)
  out.set(payload, RECORD_HEADER_BYTES)
  return out
}

/** Reads a whole recording; a record cut short at the end (a crash while writing) is left out. */
export const decodeRecording = (bytes: Uint8Array): ReadonlyArray<RecordEntry> => {
  if (bytes.length < MAGIC.length || MAGIC.some((b, i) => bytes[i] !== b)) throw new Error("not a StreamSpace recording (bad magic)")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const out: Array<RecordEntry> = []
  let off = MAGIC.length
  while (off + RECORD_HEADER_BYTES <= bytes.length) {
    const length = view.getUint32(off + 5)
    if (off + RECORD_HEADER_BYTES + length > bytes.length) break
    out.push({ track: view.getUint8(off), timeMs: view.getUint32(off + 1), payload: bytes.subarray(off + RECORD_HEADER_BYTES, off + RECORD_HEADER_BYTES + length) })
    off += RECORD_HEADER_BYTES + length
  }
  return out
}

/** A keyframe: where, in the recording's server track, a full-screen update starts. */
export interface Keyframe {
  /** Milliseconds since the recording started. */
  readonly timeMs: number
  /** Bytes of the server track before it. */
  readonly serverOffset: number
}

/** What is kept next to each recording (`<session>/<recording>.json`). */
export interface RecordingMeta {
  readonly id: string
  readonly sessionId: string
  /** The session's owner (who may list, watch and delete it, with admins). */
  readonly userId: string
  /** The viewer whose connection was recorded. */
  readonly viewer: string
  readonly startedAt: string
  /** Unset while recording (or when the control plane stopped before it could write the end). */
  readonly endedAt?: string | undefined
  readonly durationMs: number
  /** Size of the recording object. */
  readonly bytes: number
  /** The recording reached RECORDING_MAX_BYTES and stopped there. */
  readonly truncated: boolean
  /** Bytes of the server track taken by the RFB handshake (up to and including ServerInit). */
  readonly handshakeBytes?: number | undefined
  readonly keyframes: ReadonlyArray<Keyframe>
}
