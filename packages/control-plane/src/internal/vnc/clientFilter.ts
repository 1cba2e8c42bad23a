// A filter over what a viewer sends (the RFB client stream), built on the client-message parser: the handshake
// and every message it keeps pass unchanged and in order; a message it drops never reaches the agent; a kept
// SetEncodings may be rewritten. Bytes of a message not yet complete are held until it is (RFB messages are small;
// cut text is the largest). Pure: no I/O, no clock.
//
// The clipboard policy of a session's template is one such filter (`clipboardFilter`); a view-only filter can be
// another, composed with `composeFilters`.
import { makeRfbClientParser, type RfbClientMessage, type RfbParserOptions } from "./rfbClientMessages.ts"
import { isParseableEncoding } from "./serverCutText.ts"

/** What to do with one client message: keep it, drop it, or send other bytes in its place. */
export type Verdict = "keep" | "drop" | Uint8Array

export interface ClientFilter {
  /** The security type the viewer picked (RFB 3.7/3.8), once seen. */
  readonly securityType: () => number | undefined
  /** The bytes to forward for this chunk (possibly empty while a message is incomplete). */
  readonly push: (chunk: Uint8Array) => Uint8Array
  /** Messages dropped or rewritten so far, by type. */
  readonly changed: () => Readonly<Record<string, number>>
  /**
   * True once the stream could not be parsed (an unknown message type or an oversized message): the filter can no
   * longer tell messages apart, so the caller must stop forwarding (the proxy closes the viewer).
   */
  readonly lost: () => boolean
}

export const makeClientFilter = (decide: (m: RfbClientMessage) => Verdict, options: RfbParserOptions = {}): ClientFilter => {
  const parser = makeRfbClientParser(options)
  let held = new Uint8Array(0)
  let opaque = 0
  const changed: Record<string, number> = {}

  const push = (chunk: Uint8Array): Uint8Array => {
    const span = held.length === 0 ? chunk : concat([held, chunk])
    const messages = parser.push(chunk)
    const opaqueNow = parser.opaqueBytes() - opaque
    opaque = parser.opaqueBytes()
    const consumed = span.length - parser.buffered()
    const messageBytes = messages.reduce((n, m) => n + m.raw.length, 0)
    // Within what was consumed: handshake bytes first, then the messages, then (once lost) opaque bytes.
    const handshake = consumed - messageBytes - opaqueNow
    const out: Array<Uint8Array> = [span.subarray(0, handshake)]
    for (const m of messages) {
      const verdict = decide(m)
      if (verdict === "keep") out.push(m.raw)
      else {
        changed[m.type] = (changed[m.type] ?? 0) + 1
        if (verdict !== "drop") out.push(verdict)
      }
    }
    out.push(span.subarray(handshake + messageBytes, consumed))
    held = span.slice(consumed)
    return concat(out)
  }

  return {
    push,
    changed: () => changed,
    lost: () => parser.state().phase === "unknown",
    securityType: () => parser.handshake().find((s) => s.type === "SecurityType")?.securityType
  }
}

/** Applies `filters` in order (each sees what the previous one forwards). */
export const composeFilters = (filters: ReadonlyArray<ClientFilter>): ClientFilter => ({
  push: (chunk) => filters.reduce((bytes, f) => (bytes.length === 0 ? bytes : f.push(bytes)), chunk),
  changed: () => Object.assign({}, ...filters.map((f) => f.changed())),
  lost: () => filters.some((f) => f.lost()),
  securityType: () => filters[0]?.securityType()
})

/** The Extended Clipboard pseudo-encoding (0xC0A1E5CE): clipboard in UTF-8, with notify/request/provide actions. */
export const ENCODING_EXTENDED_CLIPBOARD = 0xc0a1e5ce | 0
/** Extended clipboard actions (the top byte of the flags in a negative-length cut text). */
const ACTION_CAPS = 1 << 24
const ACTION_REQUEST = 1 << 25
const ACTION_PEEK = 1 << 26

export interface ClipboardPolicy {
  /** Viewer -> desktop (ClientCutText). */
  readonly upload: boolean
  /** Desktop -> viewer (ServerCutText). */
  readonly download: boolean
}

/**
 * Enforces a template's clipboard switches on the client stream:
 * - upload off: every ClientCutText that carries or announces text is dropped (standard Latin-1, and the extended
 *   clipboard's notify and provide); the extended clipboard's caps, request and peek still pass.
 * - download off: SetEncodings keeps only the encodings the server-side filter can measure (serverCutText.ts,
 *   which drops ServerCutText), so the Extended Clipboard pseudo-encoding goes too and the server never offers
 *   UTF-8 clipboard to this viewer; the viewer's extended request and peek (asking for the server's text) are
 *   dropped. `bitsPerPixel` tells the server-side filter the viewer's pixel format.
 */
export const clipboardFilter = (policy: ClipboardPolicy, options: RfbParserOptions = {}): ClientFilter & { readonly bitsPerPixel: () => number | undefined } => {
  let bitsPerPixel: number | undefined
  const filter = makeClientFilter((m) => {
    if (m.type === "SetPixelFormat") bitsPerPixel = m.raw[4]
    if (m.type === "ClientCutText") {
      if (!m.extended) return policy.upload ? "keep" : "drop"
      const flags = m.raw.length >= 12 ? new DataView(m.raw.buffer, m.raw.byteOffset + 8, 4).getUint32(0) : 0
      const asks = (flags & (ACTION_REQUEST | ACTION_PEEK)) !== 0
      const caps = (flags & ACTION_CAPS) !== 0
      if (caps) return "keep"
      if (asks) return policy.download ? "keep" : "drop"
      return policy.upload ? "keep" : "drop"
    }
    if (m.type === "SetEncodings" && !policy.download) {
      const kept = m.encodings.filter(isParseableEncoding)
      return kept.length === m.encodings.length ? "keep" : encodeSetEncodings(kept)
    }
    return "keep"
  }, options)
  return { ...filter, bitsPerPixel: () => bitsPerPixel }
}

const encodeSetEncodings = (encodings: ReadonlyArray<number>): Uint8Array => {
  const out = new Uint8Array(4 + 4 * encodings.length)
  const view = new DataView(out.buffer)
  out[0] = 2
  view.setUint16(2, encodings.length)
  encodings.forEach((e, i) => view.setInt32(4 + 4 * i, e))
  return out
}

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const parts2 = parts.filter((p) => p.length > 0)
  if (parts2.length === 1) return parts2[0]!
  const out = new Uint8Array(parts2.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts2) {
    out.set(p, o)
    o += p.length
  }
  return out
}
