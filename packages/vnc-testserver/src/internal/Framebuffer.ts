// The client side of the framebuffer: decodes FramebufferUpdate rectangles (Raw, CopyRect, RRE, Hextile)
// in the current pixel format into RGBA pixels, checking that every rectangle lies inside the screen.
import type { ByteReader } from "./ByteReader.ts"
import type { PixelFormat } from "./PixelFormat.ts"
import type { Rect } from "./Rect.ts"

export interface UpdateRect extends Rect {
  readonly encoding: number
}

export interface FramebufferUpdate {
  readonly rects: ReadonlyArray<UpdateRect>
  /** Bytes of the whole message. */
  readonly bytes: number
}

const HEXTILE_RAW = 1
const HEXTILE_BACKGROUND = 2
const HEXTILE_FOREGROUND = 4
const HEXTILE_ANY_SUBRECTS = 8
const HEXTILE_SUBRECTS_COLOURED = 16

const scaleTables = (pf: PixelFormat) => {
  const table = (max: number) => Uint8Array.from({ length: max + 1 }, (_, v) => Math.round((v * 255) / max))
  return { r: table(pf.redMax), g: table(pf.greenMax), b: table(pf.blueMax) }
}

export class Framebuffer {
  width: number
  height: number
  /** 4 bytes (R, G, B, 255) per pixel, row by row (a new array after a desktop-size change). */
  data: Uint8Array
  private format: PixelFormat
  /** Channel value -> 0..255 for the current format. */
  private tables: { r: Uint8Array; g: Uint8Array; b: Uint8Array }

  constructor(width: number, height: number, format: PixelFormat) {
    this.width = width
    this.height = height
    this.data = new Uint8Array(width * height * 4)
    this.format = format
    this.tables = scaleTables(format)
  }

  /** A new, blank framebuffer of another size (the server sends the pixels next). */
  resize(width: number, height: number): void {
    this.width = width
    this.height = height
    this.data = new Uint8Array(width * height * 4)
  }

  get pixelFormat(): PixelFormat {
    return this.format
  }

  /** Pixels of later updates arrive in this format. */
  setPixelFormat(pf: PixelFormat): void {
    this.format = pf
    this.tables = scaleTables(pf)
  }

  /** The colour at (x, y). */
  pixel(x: number, y: number): [number, number, number] {
    const i = (y * this.width + x) * 4
    return [this.data[i]!, this.data[i + 1]!, this.data[i + 2]!]
  }

  /** Reads the rest of one FramebufferUpdate (after its type byte) from `reader` and applies it. */
  async readUpdate(reader: ByteReader): Promise<FramebufferUpdate> {
    const head = await reader.read(3)
    const n = head.readUInt16BE(1)
    let bytes = 4
    const rects: Array<UpdateRect> = []
    const bpp = this.format.bitsPerPixel / 8
    for (let i = 0; i < n; i++) {
      const h = await reader.read(12)
      const r: UpdateRect = { x: h.readUInt16BE(0), y: h.readUInt16BE(2), w: h.readUInt16BE(4), h: h.readUInt16BE(6), encoding: h.readInt32BE(8) }
      bytes += 12
      if (r.encoding === -223 || r.encoding === -308) {
        // DesktopSize / ExtendedDesktopSize: x and y carry the reason and status; a refusal keeps the size.
        if (r.encoding === -308) {
          const head = await reader.read(4)
          bytes += 4 + (await reader.read(16 * head[0]!)).length
        }
        if (r.encoding === -223 || r.x !== 1 || r.y === 0) this.resize(r.w, r.h)
        rects.push(r)
        continue
      }
      if (r.x + r.w > this.width || r.y + r.h > this.height) throw new Error(`rectangle outside the framebuffer`)
      switch (r.encoding) {
        case 0: {
          const data = await reader.read(r.w * r.h * bpp)
          bytes += data.length
          this.putPixels(data, r)
          break
        }
        case 1: {
          const src = await reader.read(4)
          bytes += 4
          this.copyRect(src.readUInt16BE(0), src.readUInt16BE(2), r)
          break
        }
        case 2: {
          const hdr = await reader.read(4 + bpp)
          const count = hdr.readUInt32BE(0)
          this.fill(r, this.readPixel(hdr, 4))
          const body = await reader.read(count * (bpp + 8))
          bytes += hdr.length + body.length
          for (let k = 0; k < count; k++) {
            const o = k * (bpp + 8)
            const c = this.readPixel(body, o)
            const sx = body.readUInt16BE(o + bpp)
            const sy = body.readUInt16BE(o + bpp + 2)
            this.fill({ x: r.x + sx, y: r.y + sy, w: body.readUInt16BE(o + bpp + 4), h: body.readUInt16BE(o + bpp + 6) }, c)
          }
          break
        }
        case 5:
          bytes += await this.readHextile(reader, r, bpp)
          break
        default:
          throw new Error(`unsupported encoding ${r.encoding}`)
      }
      rects.push(r)
    }
    return { rects, bytes }
  }

  private async readHextile(reader: ByteReader, r: Rect, bpp: number): Promise<number> {
    let bytes = 0
    let bg = 0
    let fg = 0
    for (let ty = r.y; ty < r.y + r.h; ty += 16) {
      const th = Math.min(16, r.y + r.h - ty)
      for (let tx = r.x; tx < r.x + r.w; tx += 16) {
        const tw = Math.min(16, r.x + r.w - tx)
        const flags = (await reader.read(1))[0]!
        bytes++
        if (flags & HEXTILE_RAW) {
          const data = await reader.read(tw * th * bpp)
          bytes += data.length
          this.putPixels(data, { x: tx, y: ty, w: tw, h: th })
          continue
        }
        if (flags & HEXTILE_BACKGROUND) {
          bg = this.readPixel(await reader.read(bpp), 0)
          bytes += bpp
        }
        this.fill({ x: tx, y: ty, w: tw, h: th }, bg)
        if (flags & HEXTILE_FOREGROUND) {
          fg = this.readPixel(await reader.read(bpp), 0)
          bytes += bpp
        }
        if ((flags & HEXTILE_ANY_SUBRECTS) === 0) continue
        const count = (await reader.read(1))[0]!
        const coloured = (flags & HEXTILE_SUBRECTS_COLOURED) !== 0
        const size = coloured ? bpp + 2 : 2
        const body = await reader.read(count * size)
        bytes += 1 + body.length
        for (let k = 0; k < count; k++) {
          const o = k * size
          const c = coloured ? this.readPixel(body, o) : fg
          const xy = body[o + size - 2]!
          const wh = body[o + size - 1]!
          this.fill({ x: tx + (xy >> 4), y: ty + (xy & 15), w: (wh >> 4) + 1, h: (wh & 15) + 1 }, c)
        }
      }
    }
    return bytes
  }

  /** Reads one pixel value in the current format's byte order. */
  private readPixel(b: Buffer, o: number): number {
    const f = this.format
    if (f.bitsPerPixel === 32) return f.bigEndian ? b.readUInt32BE(o) : b.readUInt32LE(o)
    if (f.bitsPerPixel === 16) return f.bigEndian ? b.readUInt16BE(o) : b.readUInt16LE(o)
    return b[o]!
  }

  /** Stores a pixel value as RGBA at framebuffer index i (in pixels). */
  private store(i: number, v: number): void {
    const f = this.format
    const t = this.tables
    const fb = this.data
    fb[i * 4] = t.r[(v >>> f.redShift) & f.redMax]!
    fb[i * 4 + 1] = t.g[(v >>> f.greenShift) & f.greenMax]!
    fb[i * 4 + 2] = t.b[(v >>> f.blueShift) & f.blueMax]!
    fb[i * 4 + 3] = 255
  }

  private putPixels(data: Buffer, r: Rect): void {
    const f = this.format
    const bpp = f.bitsPerPixel / 8
    const fb = this.data
    const { r: rt, g: gt, b: bt } = this.tables
    const { redShift: rs, greenShift: gs, blueShift: bs, redMax: rm, greenMax: gm, blueMax: bm, bigEndian: be } = f
    // inlined per-pixel decode: this is the hot loop of Raw updates
    let o = 0
    for (let y = r.y; y < r.y + r.h; y++) {
      let i = (y * this.width + r.x) * 4
      for (let x = 0; x < r.w; x++, o += bpp, i += 4) {
        const v = bpp === 4
          ? be
            ? ((data[o]! << 24) | (data[o + 1]! << 16) | (data[o + 2]! << 8) | data[o + 3]!) >>> 0
            : ((data[o + 3]! << 24) | (data[o + 2]! << 16) | (data[o + 1]! << 8) | data[o]!) >>> 0
          : bpp === 2
          ? be ? (data[o]! << 8) | data[o + 1]! : (data[o + 1]! << 8) | data[o]!
          : data[o]!
        fb[i] = rt[(v >>> rs) & rm]!
        fb[i + 1] = gt[(v >>> gs) & gm]!
        fb[i + 2] = bt[(v >>> bs) & bm]!
        fb[i + 3] = 255
      }
    }
  }

  private fill(r: Rect, v: number): void {
    if (r.x + r.w > this.width || r.y + r.h > this.height) throw new Error("subrectangle outside the framebuffer")
    for (let y = r.y; y < r.y + r.h; y++) {
      for (let x = r.x; x < r.x + r.w; x++) this.store(y * this.width + x, v)
    }
  }

  private copyRect(sx: number, sy: number, r: Rect): void {
    if (sx + r.w > this.width || sy + r.h > this.height) throw new Error("CopyRect source outside the framebuffer")
    // copy the source out first: source and destination may overlap
    const fb = this.data
    const rowBytes = r.w * 4
    const src = new Uint8Array(rowBytes * r.h)
    for (let y = 0; y < r.h; y++) {
      const from = ((sy + y) * this.width + sx) * 4
      src.set(fb.subarray(from, from + rowBytes), y * rowBytes)
    }
    for (let y = 0; y < r.h; y++) fb.set(src.subarray(y * rowBytes, (y + 1) * rowBytes), ((r.y + y) * this.width + r.x) * 4)
  }
}
