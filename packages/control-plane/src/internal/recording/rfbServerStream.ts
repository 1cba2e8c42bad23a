// A streaming reader of what an RFB server sends (RFC 6143), just enough to find where things start: the end
// of the handshake (ServerInit) and each server message, and which FramebufferUpdates repaint the whole
// screen from scratch. A recorder uses those as keyframes: a player can feed the handshake, then jump to one.
//
// It measures what it can without decoding pixels: Raw, CopyRect, RRE, Hextile, and the pseudo-encodings
// noVNC asks for that carry a known length. Anything else (Tight, ZRLE, zlib: their decoders also keep state
// across updates, so a jump would break them anyway), an unknown message or a security type it cannot follow
// ends parsing for good: `stopped` says why, and no later keyframe is found. No I/O, no clock.

export interface ServerStreamEvents {
  /** The handshake ended (after ServerInit) at this stream offset. */
  readonly onHandshake?: (offset: number, width: number, height: number) => void
  /** A FramebufferUpdate that repaints the whole screen without reference to earlier content started at `offset`. */
  readonly onFullUpdate?: (offset: number) => void
}

export interface ServerStreamParser {
  readonly push: (chunk: Uint8Array) => void
  /** Why parsing stopped (undefined while it follows the stream). */
  readonly stopped: () => string | undefined
  /** The security type the client chose (from the client's side of the stream; RFB 3.7/3.8). */
  readonly setSecurityType: (type: number) => void
  /** Bits per pixel the client asked for with SetPixelFormat (from the client's side of the stream). */
  readonly setBitsPerPixel: (bpp: number) => void
  /** Bytes held waiting for the rest of a header (pixel data is passed over, never held). */
  readonly buffered: () => number
}

// Each step needs `need` bytes at the head of the buffer, then consumes them (and may ask for more).
type Step = (b: Uint8Array, o: number) => { readonly used: number } | "more" | { readonly stop: string }

const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!
const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) >>> 0) + (b[o + 1]! << 16) + (b[o + 2]! << 8) + b[o + 3]!
const s32 = (b: Uint8Array, o: number) => (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!

const PSEUDO_DESKTOP_SIZE = -223
const PSEUDO_LAST_RECT = -224
const PSEUDO_CURSOR = -239
const PSEUDO_DESKTOP_NAME = -307
const PSEUDO_EXTENDED_DESKTOP_SIZE = -308

export const makeServerStreamParser = (events: ServerStreamEvents = {}): ServerStreamParser => {
  let buf: Uint8Array = new Uint8Array(0)
  /** Stream offset of buf[0]. */
  let base = 0
  let stopped: string | undefined = undefined
  let version = 8
  let securityType: number | undefined = undefined
  let bytesPerPixel = 4
  let width = 0
  let height = 0
  const queue: Array<Step> = []
  /** Passes over `n` bytes as they come (never holds them: a Raw update can be megabytes). */
  const skip = (n: number): Step => (b, o) => {
    const have = b.length - o
    if (have >= n) return { used: n }
    if (have === 0) return "more"
    queue.unshift(skip(n - have))
    return { used: have }
  }

  // ---- framebuffer updates
  let updateStart = 0
  let rectsLeft = 0
  let coveredArea = 0
  let referencesOld = false
  const endUpdate = () => {
    if (!referencesOld && width > 0 && coveredArea >= width * height) events.onFullUpdate?.(updateStart)
  }
  const hextile = (w: number, h: number): Step => {
    let tx = 0
    let ty = 0
    const step: Step = (b, o) => {
      // Reads as many whole tiles as the buffer holds; comes back for the rest.
      let at = o
      while (ty < h) {
        const tw = Math.min(16, w - tx)
        const th = Math.min(16, h - ty)
        if (at + 1 > b.length) break
        const sub = b[at]!
        let len = 1
        if (sub & 1) len += tw * th * bytesPerPixel
        else {
          if (sub & 2) len += bytesPerPixel
          if (sub & 4) len += bytesPerPixel
          if (sub & 8) {
            if (at + len + 1 > b.length) break
            const n = b[at + len]!
            len += 1 + n * ((sub & 16 ? bytesPerPixel : 0) + 2)
          }
        }
        if (at + len > b.length) break
        at += len
        tx += 16
        if (tx >= w) {
          tx = 0
          ty += 16
        }
      }
      if (ty >= h) return { used: at - o }
      if (at === o) return "more"
      queue.unshift(step)
      return { used: at - o }
    }
    return step
  }
  const rect: Step = (b, o) => {
    if (b.length - o < 12) return "more"
    const [x, y, w, h, enc] = [u16(b, o), u16(b, o + 2), u16(b, o + 4), u16(b, o + 6), s32(b, o + 8)]
    const next = () => {
      rectsLeft--
      if (rectsLeft > 0) queue.unshift(rect)
      else queue.unshift((_b, _o) => (endUpdate(), { used: 0 }))
    }
    const area = () => {
      if (x === 0 && y === 0 && w >= width && h >= height) coveredArea = Math.max(coveredArea, width * height)
      else coveredArea += w * h
    }
    switch (enc) {
      case 0:
        area()
        next()
        queue.unshift(skip(w * h * bytesPerPixel))
        break
      case 1:
        referencesOld = true
        next()
        queue.unshift(skip(4))
        break
      case 2:
        area()
        next()
        queue.unshift((bb, oo) => {
          if (bb.length - oo < 4 + bytesPerPixel) return "more"
          queue.unshift(skip(u32(bb, oo) * (bytesPerPixel + 8)))
          return { used: 4 + bytesPerPixel }
        })
        break
      case 5:
        area()
        next()
        queue.unshift(hextile(w, h))
        break
      case PSEUDO_DESKTOP_SIZE:
        width = w
        height = h
        next()
        break
      case PSEUDO_LAST_RECT:
        rectsLeft = 1
        next()
        break
      case PSEUDO_CURSOR:
        next()
        queue.unshift(skip(w * h * bytesPerPixel + Math.floor((w + 7) / 8) * h))
        break
      case PSEUDO_DESKTOP_NAME:
        next()
        queue.unshift((bb, oo) => {
          if (bb.length - oo < 4) return "more"
          queue.unshift(skip(u32(bb, oo)))
          return { used: 4 }
        })
        break
      case PSEUDO_EXTENDED_DESKTOP_SIZE:
        width = w
        height = h
        next()
        queue.unshift((bb, oo) => {
          if (bb.length - oo < 4) return "more"
          queue.unshift(skip(bb[oo]! * 16))
          return { used: 4 }
        })
        break
      default:
        return { stop: `encoding ${enc} in a framebuffer update cannot be measured` }
    }
    return { used: 12 }
  }

  /** A message's fixed header length and the payload length that follows it (skipped as it comes). */
  const messageParts = (b: Uint8Array, o: number): readonly [number, number] | "more" | { readonly stop: string } => {
    const type = b[o]!
    const have = b.length - o
    switch (type) {
      case 0:
        return [4, 0]
      case 1:
        return have < 6 ? "more" : [6, u16(b, o + 4) * 6]
      case 2:
      case 150:
        return [1, 0]
      case 3:
        return have < 8 ? "more" : [8, Math.abs(s32(b, o + 4))]
      case 248:
        return have < 9 ? "more" : [9, b[o + 8]!]
      case 250:
        return [4, 0]
      default:
        return { stop: `server message type ${type} is not followed` }
    }
  }
  const message: Step = (b, o) => {
    if (b.length - o < 1) return "more"
    const parts = messageParts(b, o)
    if (parts === "more") return "more"
    if (!Array.isArray(parts)) return parts as { readonly stop: string }
    const [header, payload] = parts as readonly [number, number]
    if (b.length - o < header) return "more"
    if (b[o] === 0) {
      updateStart = base + o
      rectsLeft = u16(b, o + 2)
      coveredArea = 0
      referencesOld = false
      if (rectsLeft === 0) endUpdate()
      else queue.unshift(rect)
    }
    if (payload > 0) queue.unshift(skip(payload))
    queue.push(message)
    return { used: header }
  }

  const serverInit: Step = (b, o) => {
    if (b.length - o < 24) return "more"
    const len = 24 + u32(b, o + 20)
    if (b.length - o < len) return "more"
    width = u16(b, o)
    height = u16(b, o + 2)
    bytesPerPixel = Math.max(1, b[o + 4]! / 8)
    events.onHandshake?.(base + o + len, width, height)
    queue.push(message)
    return { used: len }
  }
  const securityResult: Step = (b, o) => {
    if (b.length - o < 4) return "more"
    if (u32(b, o) !== 0) return { stop: "security handshake failed" }
    queue.push(serverInit)
    return { used: 4 }
  }
  const afterSecurityType = (type: number): Step | { readonly stop: string } => {
    if (type === 1) return version >= 8 ? securityResult : serverInit
    if (type === 2) {
      return (b, o) => {
        if (b.length - o < 16) return "more"
        queue.push(securityResult)
        return { used: 16 }
      }
    }
    return { stop: `security type ${type} is not followed` }
  }
  const security: Step = (b, o) => {
    if (version === 3) {
      if (b.length - o < 4) return "more"
      const type = u32(b, o)
      if (type === 0) return { stop: "the server refused the connection" }
      const next = afterSecurityType(type)
      if ("stop" in next) return next
      queue.push(next)
      return { used: 4 }
    }
    if (b.length - o < 1) return "more"
    const n = b[o]!
    if (n === 0) return { stop: "the server refused the connection" }
    if (b.length - o < 1 + n) return "more"
    // The client's choice (its side of the stream) decides what follows; wait for it.
    queue.push((_b, _o) => {
      if (securityType === undefined) return "more"
      const next = afterSecurityType(securityType)
      if ("stop" in next) return next
      queue.push(next)
      return { used: 0 }
    })
    return { used: 1 + n }
  }
  queue.push((b, o) => {
    if (b.length - o < 12) return "more"
    const minor = Number(new TextDecoder().decode(b.subarray(o + 8, o + 11)))
    version = minor >= 8 ? 8 : minor === 7 ? 7 : 3
    queue.push(security)
    return { used: 12 }
  })

  const run = () => {
    let o = 0
    while (stopped === undefined && queue.length > 0) {
      const step = queue.shift()!
      const r = step(buf, o)
      if (r === "more") {
        queue.unshift(step)
        break
      }
      if ("stop" in r) {
        stopped = r.stop
        break
      }
      o += r.used
    }
    buf = stopped === undefined ? buf.subarray(o) : new Uint8Array(0)
    base += o
  }

  return {
    push: (chunk) => {
      if (stopped !== undefined) return
      if (buf.length === 0) buf = chunk
      else {
        const joined = new Uint8Array(buf.length + chunk.length)
        joined.set(buf)
        joined.set(chunk, buf.length)
        buf = joined
      }
      run()
    },
    stopped: () => stopped,
    setSecurityType: (type) => {
      securityType = type
      if (stopped === undefined) run()
    },
    setBitsPerPixel: (bpp) => {
      bytesPerPixel = Math.max(1, bpp / 8)
    },
    buffered: () => buf.length
  }
}
