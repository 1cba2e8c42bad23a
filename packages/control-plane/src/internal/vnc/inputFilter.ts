// The view-only gate on what a viewer sends: the client-to-server RFB stream is parsed (rfbClientMessages) and
// user input (KeyEvent, PointerEvent, ClientCutText, QEMU extended key events) is dropped while the viewer
// may not send input; the handshake and everything else (SetPixelFormat, SetEncodings, update requests,
// fences, continuous updates, desktop size, ...) passes in order. Whether input may pass is asked per
// message, so control given or taken mid-stream applies from the next message on.
//
// Every viewer's stream is parsed, also one with control, so that the message boundaries are known when its
// control is taken away. A message is forwarded whole once all its bytes arrived (the parser holds partial
// ones). After a message type the parser does not know, the stream cannot be split any more: the bytes pass
// while the viewer may send input, and the viewer is ended (`unfilterable`) once it may not.
import { isUserInput, makeRfbClientParser, type RfbClientMessageType } from "./rfbClientMessages.ts"

export interface InputFilter {
  /** The bytes of `chunk` to forward (possibly empty); undefined when the stream can no longer be filtered. */
  readonly push: (chunk: Uint8Array) => Uint8Array | undefined
  /** Input messages dropped so far, by type. */
  readonly dropped: () => ReadonlyMap<RfbClientMessageType, number>
}

export const makeInputFilter = (mayInput: () => boolean): InputFilter => {
  const parser = makeRfbClientParser()
  const dropped = new Map<RfbClientMessageType, number>()
  /** Bytes fed to the parser that it has not consumed yet (its held partial message), as the viewer sent them. */
  let pending = new Uint8Array(0)

  const push = (chunk: Uint8Array): Uint8Array | undefined => {
    if (parser.state().phase === "unknown") {
      parser.push(chunk)
      return mayInput() ? chunk : undefined
    }
    const data = pending.length === 0 ? chunk : concat([pending, chunk])
    const opaqueBefore = parser.opaqueBytes()
    const messages = parser.push(chunk)
    const consumed = data.length - parser.buffered()
    const opaque = parser.opaqueBytes() - opaqueBefore
    let messageBytes = 0
    for (const m of messages) messageBytes += m.raw.length
    // Consumed = handshake bytes (first) + messages + bytes after an unknown type (last).
    const handshake = consumed - messageBytes - opaque
    const out: Array<Uint8Array> = []
    if (handshake > 0) out.push(data.subarray(0, handshake))
    for (const m of messages) {
      if (isUserInput(m) && !mayInput()) dropped.set(m.type, (dropped.get(m.type) ?? 0) + 1)
      else out.push(m.raw)
    }
    pending = data.slice(consumed)
    if (opaque > 0) {
      if (!mayInput()) return undefined
      out.push(data.subarray(consumed - opaque, consumed))
    }
    return out.length === 1 ? out[0]! : concat(out)
  }

  return { push, dropped: () => dropped }
}

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let off = 0
  for (const p of parts) {
    out.set(p, off)
    off += p.length
  }
  return out
}
