// A streaming parser of what an RFB (VNC) client sends (RFC 6143, plus the extensions noVNC uses): the
// handshake (ProtocolVersion, security type, VNC-auth response, ClientInit), then client messages, each
// delivered whole with its raw bytes, however the stream is cut into chunks. Pure and allocation-light: no I/O,
// no clock. The VNC proxy uses it to tell user input (keys, pointer, clipboard) from protocol chatter
// (pixel format, encodings, update requests); a filter for view-only viewers can forward or drop `raw`.
//
// A message type it does not know cannot be skipped (RFB messages carry no length), so the parser stops
// there: `state` becomes `unknown` with the type, and every later byte is `opaque` (counted, not parsed). The
// same happens to a message longer than `maxMessageBytes`, which is never buffered.

/** What a client sends after the handshake. */
export type RfbClientMessage =
  | { readonly type: "SetPixelFormat"; readonly raw: Uint8Array }
  | { readonly type: "SetEncodings"; readonly encodings: ReadonlyArray<number>; readonly raw: Uint8Array }
  | {
    readonly type: "FramebufferUpdateRequest"
    readonly incremental: boolean
    readonly x: number
    readonly y: number
    readonly width: number
    readonly height: number
    readonly raw: Uint8Array
  }
  | { readonly type: "KeyEvent"; readonly down: boolean; readonly keysym: number; readonly raw: Uint8Array }
  | { readonly type: "PointerEvent"; readonly buttons: number; readonly x: number; readonly y: number; readonly raw: Uint8Array }
  /** `extended`: the Extended Clipboard pseudo-encoding's form (negative length on the wire). */
  | { readonly type: "ClientCutText"; readonly length: number; readonly extended: boolean; readonly raw: Uint8Array }
  | { readonly type: "EnableContinuousUpdates"; readonly enable: boolean; readonly raw: Uint8Array }
  | { readonly type: "ClientFence"; readonly flags: number; readonly raw: Uint8Array }
  | { readonly type: "Xvp"; readonly code: number; readonly raw: Uint8Array }
  | { readonly type: "SetDesktopSize"; readonly width: number; readonly height: number; readonly screens: number; readonly raw: Uint8Array }
  | { readonly type: "Gii"; readonly subtype: number; readonly raw: Uint8Array }
  /** QEMU extended key event (message 255, subtype 0): a key with its scancode. */
  | { readonly type: "QemuKeyEvent"; readonly down: boolean; readonly keysym: number; readonly keycode: number; readonly raw: Uint8Array }
  | { readonly type: "QemuAudio"; readonly operation: number; readonly raw: Uint8Array }

export type RfbClientMessageType = RfbClientMessage["type"]

/** Messages a person causes: keys, pointer, clipboard. Everything else is the viewer's own upkeep. */
export const USER_INPUT: ReadonlySet<RfbClientMessageType> = new Set(["KeyEvent", "PointerEvent", "ClientCutText", "QemuKeyEvent"])

export const isUserInput = (m: RfbClientMessage): boolean => USER_INPUT.has(m.type)

/** What the handshake part of the stream carried (before the first client message). */
export type RfbHandshakeStep =
  | { readonly type: "ProtocolVersion"; readonly version: string }
  | { readonly type: "SecurityType"; readonly securityType: number }
  | { readonly type: "VncAuthResponse" }
  | { readonly type: "ClientInit"; readonly shared: boolean }

export type RfbParserState =
  | { readonly phase: "version" | "security" | "vncAuth" | "clientInit" | "messages" }
  | { readonly phase: "unknown"; readonly messageType: number }

export interface RfbClientParser {
  /** Feeds the next chunk; returns the messages it completed (in order). Never throws. */
  readonly push: (chunk: Uint8Array) => ReadonlyArray<RfbClientMessage>
  readonly state: () => RfbParserState
  /** Handshake steps seen so far. */
  readonly handshake: () => ReadonlyArray<RfbHandshakeStep>
  /** Bytes not parsed after an unknown message type. */
  readonly opaqueBytes: () => number
  /** Bytes held waiting for the rest of a message. */
  readonly buffered: () => number
}

export interface RfbParserOptions {
  /**
   * Start at client messages (the handshake was already passed, or is not in the stream). Default: the stream
   * starts with the client's ProtocolVersion.
   */
  readonly skipHandshake?: boolean
  /**
   * RFB 3.3 lets the server choose the security type, which only the server's stream tells: the type to assume
   * (1 None, 2 VNC authentication). Default 1. 3.7 and 3.8 clients name it themselves.
   */
  readonly rfb33SecurityType?: number
  /**
   * Largest message held whole (a clipboard can be large); a longer one ends parsing like an unknown type
   * (`unknown`, its type). Default 8 MiB.
   */
  readonly maxMessageBytes?: number
}

const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!
const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) >>> 0) + (b[o + 1]! << 16) + (b[o + 2]! << 8) + b[o + 3]!
const s32 = (b: Uint8Array, o: number) => (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!

/**
 * The length of the message at the start of `b` (which holds `n` bytes), or -1 when more bytes are needed to
 * tell, or undefined for a type this parser does not know.
 */
const lengthOf = (b: Uint8Array, n: number): number | undefined => {
  const need = (k: number, f: () => number) => (n < k ? -1 : f())
  switch (b[0]) {
    case 0:
      return 20
    case 2:
      return need(4, () => 4 + 4 * u16(b, 2))
    case 3:
      return 10
    case 4:
      return 8
    case 5:
      return 6
    case 6:
      return need(8, () => 8 + Math.abs(s32(b, 4)))
    case 150:
      return 10
    case 248:
      return need(9, () => 9 + (b[8]! & 0xff))
    case 250:
      return 4
    case 251:
      return need(8, () => 8 + 16 * b[6]!)
    case 253:
      return need(4, () => 4 + u16(b, 2))
    case 255:
      return need(2, () => {
        if (b[1] === 0) return 12
        if (b[1] === 1) return need(4, () => (u16(b, 2) === 2 ? 10 : 4))
        return Number.NaN
      })
    default:
      return undefined
  }
}

const decode = (raw: Uint8Array): RfbClientMessage | undefined => {
  switch (raw[0]) {
    case 0:
      return { type: "SetPixelFormat", raw }
    case 2: {
      const encodings: Array<number> = []
      for (let i = 4; i < raw.length; i += 4) encodings.push(s32(raw, i))
      return { type: "SetEncodings", encodings, raw }
    }
    case 3:
      return { type: "FramebufferUpdateRequest", incremental: raw[1] !== 0, x: u16(raw, 2), y: u16(raw, 4), width: u16(raw, 6), height: u16(raw, 8), raw }
    case 4:
      return { type: "KeyEvent", down: raw[1] !== 0, keysym: u32(raw, 4), raw }
    case 5:
      return { type: "PointerEvent", buttons: raw[1]!, x: u16(raw, 2), y: u16(raw, 4), raw }
    case 6: {
      const length = s32(raw, 4)
      return { type: "ClientCutText", length: Math.abs(length), extended: length < 0, raw }
    }
    case 150:
      return { type: "EnableContinuousUpdates", enable: raw[1] !== 0, raw }
    case 248:
      return { type: "ClientFence", flags: u32(raw, 4), raw }
    case 250:
      return { type: "Xvp", code: raw[3]!, raw }
    case 251:
      return { type: "SetDesktopSize", width: u16(raw, 2), height: u16(raw, 4), screens: raw[6]!, raw }
    case 253:
      return { type: "Gii", subtype: raw[1]! & 0x7f, raw }
    case 255:
      return raw[1] === 0
        ? { type: "QemuKeyEvent", down: u16(raw, 2) !== 0, keysym: u32(raw, 4), keycode: u32(raw, 8), raw }
        : { type: "QemuAudio", operation: u16(raw, 2), raw }
  }
  return undefined
}

export const makeRfbClientParser = (options: RfbParserOptions = {}): RfbClientParser => {
  let state: RfbParserState = { phase: options.skipHandshake === true ? "messages" : "version" }
  let minor = 8
  const steps: Array<RfbHandshakeStep> = []
  let buf = new Uint8Array(0)
  let opaque = 0

  const afterSecurity = (type: number): RfbParserState => ({ phase: type === 2 ? "vncAuth" : "clientInit" })

  const push = (chunk: Uint8Array): ReadonlyArray<RfbClientMessage> => {
    if (state.phase === "unknown") {
      opaque += chunk.length
      return []
    }
    if (chunk.length === 0) return []
    const data = buf.length === 0 ? chunk : concat(buf, chunk)
    const out: Array<RfbClientMessage> = []
    let off = 0
    while (off < data.length) {
      const rest = data.length - off
      const view = data.subarray(off)
      if (state.phase === "version") {
        if (rest < 12) break
        const version = new TextDecoder().decode(view.subarray(0, 12))
        minor = Number(/^RFB \d{3}\.(\d{3})\n$/.exec(version)?.[1] ?? 8)
        steps.push({ type: "ProtocolVersion", version: version.trim() })
        off += 12
        if (minor >= 7) state = { phase: "security" }
        else {
          const type = options.rfb33SecurityType ?? 1
          steps.push({ type: "SecurityType", securityType: type })
          state = afterSecurity(type)
        }
      } else if (state.phase === "security") {
        steps.push({ type: "SecurityType", securityType: view[0]! })
        state = afterSecurity(view[0]!)
        off += 1
      } else if (state.phase === "vncAuth") {
        if (rest < 16) break
        steps.push({ type: "VncAuthResponse" })
        off += 16
        state = { phase: "clientInit" }
      } else if (state.phase === "clientInit") {
        steps.push({ type: "ClientInit", shared: view[0] !== 0 })
        off += 1
        state = { phase: "messages" }
      } else if (state.phase === "messages") {
        const len = lengthOf(view, rest)
        if (len === undefined || Number.isNaN(len)) {
          state = { phase: "unknown", messageType: view[0]! }
          opaque += rest
          off = data.length
          break
        }
        if (len > (options.maxMessageBytes ?? 8 * 1024 * 1024)) {
          state = { phase: "unknown", messageType: view[0]! }
          opaque += rest
          off = data.length
          break
        }
        if (len < 0 || rest < len) break
        // A copy, so the caller may keep it while the stream's buffers are reused.
        out.push(decode(view.slice(0, len))!)
        off += len
      } else break
    }
    buf = off >= data.length ? new Uint8Array(0) : data.slice(off)
    return out
  }

  return {
    push,
    state: () => state,
    handshake: () => steps,
    opaqueBytes: () => opaque,
    buffered: () => buf.length
  }
}

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}
