// A streaming filter of what an RFB server sends (RFC 6143 and the rfbproto extensions listed below) that drops
// ServerCutText, for templates whose clipboard download is off. It follows the server's handshake (with the
// security type and pixel format the viewer chose, read from the client stream), then every server message, and
// forwards bytes as soon as it knows they are not part of a cut text: screen data streams through without being
// held; only message and rectangle headers (a few bytes) wait until they are whole.
//
// It can only skip what it can measure, so the proxy offers the server only encodings it knows
// (`PARSEABLE_ENCODINGS`: SetEncodings is rewritten on the client side). Anything else (an unknown message type or
// encoding, a security type other than None and VNC Authentication) makes it `lost`: the proxy closes the viewer.

/** What the client side has told (from the client stream, which the proxy sees first). */
export interface ClientSide {
  /** The security type the viewer picked (3.7/3.8), if seen. */
  readonly securityType: () => number | undefined
  /** Bits per pixel of the viewer's pixel format (SetPixelFormat), if it set one. */
  readonly bitsPerPixel: () => number | undefined
}

/** Encodings this filter can measure: Raw, CopyRect, RRE, Hextile, ZRLE, and data-free or measurable pseudo-encodings. */
export const PARSEABLE_ENCODINGS: ReadonlySet<number> = new Set([
  0, 1, 2, 5, 16,
  -223, // DesktopSize
  -224, // LastRect
  -239, // Cursor
  -257, // QEMU pointer motion change
  -258, // QEMU extended key event
  -307, // DesktopName
  -308, // ExtendedDesktopSize
  -312, // Fence
  -313 // ContinuousUpdates
])

/** Pseudo-encodings that carry no data in a FramebufferUpdate, plus the quality/compression levels (never rects). */
export const isParseableEncoding = (e: number): boolean =>
  PARSEABLE_ENCODINGS.has(e) || (e >= -32 && e <= -23) || (e >= -256 && e <= -247)

/** need: read n header bytes; skip: pass (or drop) n bytes; commit: forward (or drop) the held header bytes; wait: until more bytes arrived. */
type Step =
  | { readonly need: number }
  | { readonly skip: number; readonly drop: boolean }
  | { readonly commit: boolean }
  | { readonly wait: true }
  | { readonly lost: string }

const need = (n: number): Step => ({ need: n })
const skip = (n: number): Step => ({ skip: n, drop: false })

export interface ServerFilter {
  readonly push: (chunk: Uint8Array) => Uint8Array
  readonly lost: () => string | undefined
  /** ServerCutText messages dropped. */
  readonly dropped: () => number
}

export const serverCutTextFilter = (client: ClientSide): ServerFilter => {
  let bpp = 4
  let droppedCount = 0
  const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!
  const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) >>> 0) + (b[o + 1]! << 16) + (b[o + 2]! << 8) + b[o + 3]!
  const s32 = (b: Uint8Array, o: number) => (b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!

  function* hextile(w: number, h: number): Generator<Step, void, Uint8Array> {
    for (let ty = 0; ty < h; ty += 16) {
      for (let tx = 0; tx < w; tx += 16) {
        const tw = Math.min(16, w - tx)
        const th = Math.min(16, h - ty)
        const sub = (yield need(1))[0]!
        if (sub & 1) {
          yield skip(tw * th * bpp)
          continue
        }
        const colours = ((sub & 2) ? bpp : 0) + ((sub & 4) ? bpp : 0)
        if (colours > 0) yield need(colours)
        if (sub & 8) {
          const n = (yield need(1))[0]!
          yield skip(n * ((sub & 16) ? bpp + 2 : 2))
        }
      }
    }
  }

  function* rect(): Generator<Step, "last" | undefined, Uint8Array> {
    const h = yield need(12)
    const w = u16(h, 4)
    const ht = u16(h, 6)
    const encoding = s32(h, 8)
    yield { commit: true }
    switch (encoding) {
      case 0: yield skip(w * ht * bpp); return
      case 1: yield skip(4); return
      case 2: { const n = u32(yield need(4), 0); yield skip(bpp + n * (bpp + 8)); return }
      case 5: yield* hextile(w, ht); return
      case 16: yield skip(u32(yield need(4), 0)); return
      case -224: return "last"
      case -223: case -257: case -258: case -312: case -313: return
      case -239: yield skip(w * ht * bpp + Math.floor((w + 7) / 8) * ht); return
      case -307: yield skip(u32(yield need(4), 0)); return
      case -308: yield skip(16 * (yield need(4))[0]!); return
    }
    yield { lost: `a FramebufferUpdate rectangle in encoding ${encoding}, which the clipboard filter cannot measure` }
  }

  function* machine(): Generator<Step, void, Uint8Array> {
    // ---- handshake
    // Each handshake step goes out as soon as it is read: the viewer answers before the server says more.
    const version = new TextDecoder().decode(yield need(12))
    yield { commit: true }
    const minor = Number(/^RFB \d{3}\.(\d{3})\n$/.exec(version)?.[1] ?? 3)
    let type: number | undefined
    if (minor >= 7) {
      const n = (yield need(1))[0]!
      if (n === 0) return
      yield need(n)
      yield { commit: true }
      // The viewer picks after it saw the list: its choice is known once the server says more.
      yield { wait: true }
      type = client.securityType()
    } else type = u32(yield need(4), 0)
    yield { commit: true }
    if (type === 0) return
    if (type === 2) {
      yield need(16)
      yield { commit: true }
    }
    else if (type !== 1) {
      yield { lost: `security type ${type ?? "(not seen)"}, which the clipboard filter cannot follow` }
      return
    }
    if (type === 2 || minor >= 8) {
      if (u32(yield need(4), 0) !== 0) return
      yield { commit: true }
    }
    const init = yield need(24)
    yield { commit: true }
    yield skip(u32(init, 20))
    yield { wait: true }
    // ---- messages
    while (true) {
      const t = (yield need(1))[0]!
      bpp = Math.max(1, (client.bitsPerPixel() ?? init[4]!) / 8)
      switch (t) {
        case 0: {
          const n = u16(yield need(3), 1)
          for (let i = 0; i < n; i++) if ((yield* rect()) === "last") break
          break
        }
        case 1: { const h = yield need(5); yield { commit: true }; yield skip(6 * u16(h, 3)); break }
        case 2: case 150: break
        case 3: {
          const len = Math.abs(s32(yield need(7), 3))
          yield { commit: false }
          droppedCount++
          yield { skip: len, drop: true }
          break
        }
        case 248: { const h = yield need(8); yield { commit: true }; yield skip(h[7]!); break }
        case 250: yield need(3); break
        default:
          yield { lost: `server message type ${t}, which the clipboard filter cannot measure` }
          return
      }
      yield { commit: true }
    }
  }

  const gen = machine()
  let step: Step | undefined = gen.next().value ?? undefined
  let header: Array<number> = []
  /** Header bytes read but not yet forwarded (until a commit says whether they go). */
  let held: Array<Uint8Array> = []
  let lostReason: string | undefined
  let done = false

  const advance = (input: Uint8Array) => {
    const r = gen.next(input)
    if (r.done === true) {
      done = true
      step = undefined
    } else step = r.value
  }

  const push = (chunk: Uint8Array): Uint8Array => {
    const out: Array<Uint8Array> = []
    let off = 0
    while (lostReason === undefined) {
      if (done) {
        // After the handshake failed or the stream ended: nothing more is parsed (the connection is closing).
        for (const h of held) out.push(h)
        held = []
        out.push(chunk.subarray(off))
        break
      }
      const s = step!
      if ("lost" in s) {
        lostReason = s.lost
        break
      }
      if ("commit" in s) {
        if (s.commit) for (const h of held) out.push(h)
        held = []
        advance(new Uint8Array(0))
        continue
      }
      if ("wait" in s) {
        if (off >= chunk.length) break
        advance(new Uint8Array(0))
        continue
      }
      if ("skip" in s) {
        if (s.skip === 0) {
          advance(new Uint8Array(0))
          continue
        }
        if (off >= chunk.length) break
        // Header bytes read before a pass-through come first (a dropping skip follows a commit: false).
        if (!s.drop) for (const h of held) out.push(h)
        held = []
        const n = Math.min(s.skip, chunk.length - off)
        if (!s.drop) out.push(chunk.subarray(off, off + n))
        off += n
        if (n === s.skip) advance(new Uint8Array(0))
        else step = { skip: s.skip - n, drop: s.drop }
        continue
      }
      if (off >= chunk.length) break
      const n = Math.min(s.need - header.length, chunk.length - off)
      for (let i = 0; i < n; i++) header.push(chunk[off + i]!)
      held.push(chunk.subarray(off, off + n).slice())
      off += n
      if (header.length === s.need) {
        const got = Uint8Array.from(header)
        header = []
        advance(got)
      }
    }
    const total = out.reduce((k, p) => k + p.length, 0)
    const bytes = new Uint8Array(total)
    let o = 0
    for (const p of out) {
      bytes.set(p, o)
      o += p.length
    }
    return bytes
  }

  return { push, lost: () => lostReason, dropped: () => droppedCount }
}
