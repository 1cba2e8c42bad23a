// Rectangle encoders (Raw, RRE, Hextile) writing into a reusable, growable output buffer.
// The framebuffer holds 0xRRGGBB values; a PixelConverter turns them into the client's pixels.
import { type PixelConverter, convertPixel } from "./PixelFormat.ts"
import type { Rect } from "./Rect.ts"

export const ENCODING_RAW = 0
export const ENCODING_COPYRECT = 1
export const ENCODING_RRE = 2
export const ENCODING_HEXTILE = 5

/** The encodings this server can produce, in the order it prefers when the client has no preference. */
export const SUPPORTED_ENCODINGS: ReadonlyArray<number> = [ENCODING_HEXTILE, ENCODING_RRE, ENCODING_RAW]

/** A growable byte buffer; `reset` keeps the memory for the next message. */
export class Out {
  buf: Buffer
  pos = 0

  constructor(size = 64 * 1024) {
    this.buf = Buffer.allocUnsafeSlow(size)
  }

  reset(): void {
    this.pos = 0
  }

  ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return
    const next = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.pos + n))
    this.buf.copy(next, 0, 0, this.pos)
    this.buf = next
  }

  u8(v: number): void {
    this.ensure(1)
    this.buf[this.pos++] = v
  }

  u16(v: number): void {
    this.ensure(2)
    this.buf.writeUInt16BE(v, this.pos)
    this.pos += 2
  }

  u32(v: number): void {
    this.ensure(4)
    this.buf.writeUInt32BE(v >>> 0, this.pos)
    this.pos += 4
  }

  s32(v: number): void {
    this.ensure(4)
    this.buf.writeInt32BE(v, this.pos)
    this.pos += 4
  }

  /** A pixel value already in the client's byte order (see PixelConverter). */
  pixel(v: number, bytes: 1 | 2 | 4): void {
    this.ensure(bytes)
    if (bytes === 4) this.buf.writeUInt32LE(v >>> 0, this.pos)
    else if (bytes === 2) this.buf.writeUInt16LE(v & 0xffff, this.pos)
    else this.buf[this.pos] = v & 0xff
    this.pos += bytes
  }

  bytes(src: Uint8Array): void {
    this.ensure(src.length)
    this.buf.set(src, this.pos)
    this.pos += src.length
  }
}

/** Per-connection scratch memory reused between rectangles. */
export class Scratch {
  private words = new Uint32Array(16 * 1024)
  /** Subrectangles found by `findSubrects`: x, y, w, h, rgb per entry. */
  subrects = new Int32Array(5 * 1024)

  pixels(n: number): Uint32Array {
    if (this.words.length < n) this.words = new Uint32Array(Math.max(n, this.words.length * 2))
    return this.words
  }

  growSubrects(): void {
    const next = new Int32Array(this.subrects.length * 2)
    next.set(this.subrects)
    this.subrects = next
  }
}

const rectHeader = (out: Out, r: Rect, encoding: number): void => {
  out.u16(r.x)
  out.u16(r.y)
  out.u16(r.w)
  out.u16(r.h)
  out.s32(encoding)
}

/** Appends the pixels of `r` in the client's format, row by row. */
const rawPixels = (out: Out, fb: Uint32Array, stride: number, r: Rect, conv: PixelConverter, scratch: Scratch): void => {
  const n = r.w * r.h
  const bpp = conv.bytesPerPixel
  const words = scratch.pixels(n)
  const { r: rt, g: gt, b: bt } = conv
  // One typed-array view per pixel size over the same scratch memory; filled in place, copied once.
  const view = bpp === 4 ? words : bpp === 2 ? new Uint16Array(words.buffer, 0, n) : new Uint8Array(words.buffer, 0, n)
  let i = 0
  for (let y = r.y; y < r.y + r.h; y++) {
    let p = y * stride + r.x
    const end = p + r.w
    for (; p < end; p++) {
      const c = fb[p]!
      view[i++] = rt[(c >>> 16) & 0xff]! | gt[(c >>> 8) & 0xff]! | bt[c & 0xff]!
    }
  }
  out.bytes(new Uint8Array(words.buffer, 0, n * bpp))
}

export const encodeRaw = (out: Out, fb: Uint32Array, stride: number, r: Rect, conv: PixelConverter, scratch: Scratch): void => {
  rectHeader(out, r, ENCODING_RAW)
  rawPixels(out, fb, stride, r, conv, scratch)
}

/** The most common colour among up to 256 evenly spaced samples of `r`. */
const dominantColour = (fb: Uint32Array, stride: number, r: Rect): number => {
  const n = r.w * r.h
  const step = Math.max(1, Math.floor(n / 256))
  const counts = new Map<number, number>()
  let best = fb[r.y * stride + r.x]!
  let bestCount = 0
  for (let i = 0; i < n; i += step) {
    const c = fb[(r.y + Math.floor(i / r.w)) * stride + r.x + (i % r.w)]!
    const k = (counts.get(c) ?? 0) + 1
    counts.set(c, k)
    if (k > bestCount) {
      best = c
      bestCount = k
    }
  }
  return best
}

/**
 * Covers the non-background pixels of `r` with single-colour rectangles: horizontal runs, merged
 * downwards while the run below has the same span and colour. Results (relative to r) go to
 * `scratch.subrects`. Returns the count, or -1 once it would exceed `limit`.
 */
const findSubrects = (fb: Uint32Array, stride: number, r: Rect, bg: number, scratch: Scratch, limit: number): number => {
  let count = 0
  // open[k] = index of a subrect ending on the previous row; matched by (x, w, colour)
  let open: Array<number> = []
  let next: Array<number> = []
  for (let y = 0; y < r.h; y++) {
    const row = (r.y + y) * stride + r.x
    let oi = 0
    next.length = 0
    let x = 0
    while (x < r.w) {
      const c = fb[row + x]!
      if (c === bg) {
        x++
        continue
      }
      const x0 = x
      while (x < r.w && fb[row + x] === c) x++
      const w = x - x0
      const s = scratch.subrects
      // advance over open subrects left of this run (they end here)
      while (oi < open.length && s[open[oi]! * 5]! < x0) oi++
      const o = oi < open.length ? open[oi]! : -1
      if (o >= 0 && s[o * 5] === x0 && s[o * 5 + 2] === w && s[o * 5 + 4] === c) {
        s[o * 5 + 3]!++
        next.push(o)
        oi++
        continue
      }
      if (count >= limit) return -1
      if ((count + 1) * 5 > s.length) scratch.growSubrects()
      const t = scratch.subrects
      t[count * 5] = x0
      t[count * 5 + 1] = y
      t[count * 5 + 2] = w
      t[count * 5 + 3] = 1
      t[count * 5 + 4] = c
      next.push(count)
      count++
    }
    const swap = open
    open = next
    next = swap
  }
  return count
}

export const encodeRre = (out: Out, fb: Uint32Array, stride: number, r: Rect, conv: PixelConverter, scratch: Scratch): void => {
  const bpp = conv.bytesPerPixel
  const bg = dominantColour(fb, stride, r)
  // fall back to Raw when RRE would not be smaller
  const limit = Math.floor((r.w * r.h * bpp - 4 - bpp) / (bpp + 8))
  const n = findSubrects(fb, stride, r, bg, scratch, limit)
  if (n < 0) return encodeRaw(out, fb, stride, r, conv, scratch)
  rectHeader(out, r, ENCODING_RRE)
  out.u32(n)
  out.pixel(convertPixel(conv, bg), bpp)
  const s = scratch.subrects
  for (let i = 0; i < n; i++) {
    out.pixel(convertPixel(conv, s[i * 5 + 4]!), bpp)
    out.u16(s[i * 5]!)
    out.u16(s[i * 5 + 1]!)
    out.u16(s[i * 5 + 2]!)
    out.u16(s[i * 5 + 3]!)
  }
}

const HEXTILE_RAW = 1
const HEXTILE_BACKGROUND = 2
const HEXTILE_FOREGROUND = 4
const HEXTILE_ANY_SUBRECTS = 8
const HEXTILE_SUBRECTS_COLOURED = 16

export const encodeHextile = (out: Out, fb: Uint32Array, stride: number, r: Rect, conv: PixelConverter, scratch: Scratch): void => {
  rectHeader(out, r, ENCODING_HEXTILE)
  const bpp = conv.bytesPerPixel
  // background and foreground carry over between tiles, except after a raw tile
  let lastBg = -1
  for (let ty = r.y; ty < r.y + r.h; ty += 16) {
    const th = Math.min(16, r.y + r.h - ty)
    for (let tx = r.x; tx < r.x + r.w; tx += 16) {
      const tw = Math.min(16, r.x + r.w - tx)
      const tile: Rect = { x: tx, y: ty, w: tw, h: th }
      // most tiles are one colour: check that first, it is much cheaper than finding subrects
      const first = fb[ty * stride + tx]!
      let solid = true
      for (let y = ty; y < ty + th && solid; y++) {
        for (let p = y * stride + tx, end = p + tw; p < end; p++) {
          if (fb[p] !== first) {
            solid = false
            break
          }
        }
      }
      const bg = solid ? first : dominantColour(fb, stride, tile)
      const rawSize = tw * th * bpp
      const n = solid ? 0 : findSubrects(fb, stride, tile, bg, scratch, 255)
      const s = scratch.subrects
      let single = n > 0
      for (let i = 1; i < n && single; i++) single = s[i * 5 + 4] === s[4]
      const size = (bg !== lastBg ? bpp : 0) + (n === 0 ? 0 : 1 + (single ? bpp + 2 * n : (bpp + 2) * n))
      if (n < 0 || size >= rawSize) {
        out.u8(HEXTILE_RAW)
        rawPixels(out, fb, stride, tile, conv, scratch)
        lastBg = -1
        continue
      }
      let flags = 0
      if (bg !== lastBg) flags |= HEXTILE_BACKGROUND
      if (n > 0) flags |= HEXTILE_ANY_SUBRECTS | (single ? HEXTILE_FOREGROUND : HEXTILE_SUBRECTS_COLOURED)
      out.u8(flags)
      if (bg !== lastBg) out.pixel(convertPixel(conv, bg), bpp)
      lastBg = bg
      if (n === 0) continue
      if (single) out.pixel(convertPixel(conv, s[4]!), bpp)
      out.u8(n)
      for (let i = 0; i < n; i++) {
        if (!single) out.pixel(convertPixel(conv, s[i * 5 + 4]!), bpp)
        out.u8((s[i * 5]! << 4) | s[i * 5 + 1]!)
        out.u8(((s[i * 5 + 2]! - 1) << 4) | (s[i * 5 + 3]! - 1))
      }
    }
  }
}

/** Encodes one rectangle with `encoding` (one of SUPPORTED_ENCODINGS). */
export const encodeRect = (
  encoding: number,
  out: Out,
  fb: Uint32Array,
  stride: number,
  r: Rect,
  conv: PixelConverter,
  scratch: Scratch
): void => {
  if (encoding === ENCODING_HEXTILE) encodeHextile(out, fb, stride, r, conv, scratch)
  else if (encoding === ENCODING_RRE) encodeRre(out, fb, stride, r, conv, scratch)
  else encodeRaw(out, fb, stride, r, conv, scratch)
}
