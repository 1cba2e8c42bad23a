// A minimal RFB client for tests and benchmarks: handshake (3.3/3.7/3.8, None or VNC Authentication),
// SetPixelFormat, SetEncodings, update requests decoded (Raw, CopyRect, RRE, Hextile) into an RGBA
// framebuffer, key/pointer/cut-text input. Works over any Node duplex byte stream: a net.Socket, or a
// WebSocket through `createWebSocketStream` from `ws`.
import type { Duplex } from "node:stream"
import { ByteReader } from "./internal/ByteReader.ts"
import { type PixelFormat, readPixelFormat, writePixelFormat } from "./internal/PixelFormat.ts"
import type { Rect } from "./internal/Rect.ts"
import { vncAuthResponse } from "./internal/vncAuth.ts"

export type { PixelFormat } from "./internal/PixelFormat.ts"
export type { Rect } from "./internal/Rect.ts"
export { defaultPixelFormat } from "./internal/PixelFormat.ts"
export { ENCODING_COPYRECT, ENCODING_HEXTILE, ENCODING_RAW, ENCODING_RRE } from "./internal/encoders.ts"

export interface RfbClientOptions {
  /** Password for VNC Authentication, required when the server asks for it. */
  readonly password?: string
  /** Protocol version to answer with; default the server's, capped at 3.8. */
  readonly version?: "3.3" | "3.7" | "3.8"
  /** ClientInit shared flag; default true. */
  readonly shared?: boolean
  /** Milliseconds to wait for the handshake or an update before failing; default 5000. */
  readonly timeout?: number
}

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

const withTimeout = <A>(p: Promise<A>, ms: number, what: string): Promise<A> =>
  new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
    p.then((a) => {
      clearTimeout(t)
      resolve(a)
    }, (e) => {
      clearTimeout(t)
      reject(e)
    })
  })

export class RfbClient {
  readonly stream: Duplex
  /** Negotiated protocol version, e.g. "3.8". */
  readonly version: string
  readonly width: number
  readonly height: number
  readonly name: string
  /** The pixel format the server announced in ServerInit. */
  readonly serverPixelFormat: PixelFormat
  /** The current framebuffer, 4 bytes (R, G, B, 255) per pixel, row by row. */
  readonly framebuffer: Uint8Array
  /** Every ServerCutText received, oldest first. */
  readonly cutTexts: Array<string> = []
  /** Resolves when the stream has closed; carries the error that ended the message loop, if any. */
  readonly closed: Promise<Error | undefined>
  private format: PixelFormat
  /** Channel value -> 0..255 for the current format. */
  private tables: { r: Uint8Array; g: Uint8Array; b: Uint8Array }
  private readonly reader: ByteReader
  private readonly timeout: number
  private readonly updates: Array<FramebufferUpdate> = []
  private readonly waiters: Array<{ resolve: () => void }> = []
  private failure: Error | undefined

  private constructor(stream: Duplex, reader: ByteReader, version: string, init: Buffer, timeout: number) {
    this.stream = stream
    this.reader = reader
    this.version = version
    this.timeout = timeout
    this.width = init.readUInt16BE(0)
    this.height = init.readUInt16BE(2)
    const pf = readPixelFormat(init, 4)
    if (typeof pf === "string") throw new Error(`server pixel format: ${pf}`)
    this.serverPixelFormat = pf
    this.format = pf
    this.tables = scaleTables(pf)
    this.name = init.subarray(24).toString("utf8")
    this.framebuffer = new Uint8Array(this.width * this.height * 4)
    this.closed = this.loop()
  }

  /** Runs the handshake over `stream` up to and including ServerInit. */
  static async connect(stream: Duplex, options: RfbClientOptions = {}): Promise<RfbClient> {
    const timeout = options.timeout ?? 5000
    const reader = new ByteReader(stream)
    const handshake = async () => {
      const serverVersion = (await reader.read(12)).toString("latin1")
      const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(serverVersion)
      if (m === null) throw new Error(`bad server version ${JSON.stringify(serverVersion)}`)
      const offered = Number(m[2]) >= 8 ? "3.8" : Number(m[2]) === 7 ? "3.7" : "3.3"
      const version = options.version ?? offered
      stream.write(`RFB 003.00${version.slice(2)}\n`)
      let type: number
      if (version === "3.3") {
        type = (await reader.read(4)).readUInt32BE(0)
        if (type === 0) throw new Error(`connection refused: ${await readReason(reader)}`)
      } else {
        const n = (await reader.read(1))[0]!
        if (n === 0) throw new Error(`connection refused: ${await readReason(reader)}`)
        const types = [...(await reader.read(n))]
        type = options.password !== undefined && types.includes(2) ? 2 : types.includes(1) ? 1 : types[0]!
        stream.write(Buffer.from([type]))
      }
      if (type === 2) {
        if (options.password === undefined) throw new Error("server requires VNC Authentication and no password was given")
        stream.write(vncAuthResponse(options.password, await reader.read(16)))
      } else if (type !== 1) {
        throw new Error(`unsupported security type ${type}`)
      }
      if (type === 2 || version === "3.8") {
        const result = (await reader.read(4)).readUInt32BE(0)
        if (result !== 0) {
          throw new Error(`security handshake failed${version === "3.8" ? `: ${await readReason(reader)}` : ""}`)
        }
      }
      stream.write(Buffer.from([options.shared === false ? 0 : 1]))
      const head = await reader.read(24)
      const name = await reader.read(head.readUInt32BE(20))
      return new RfbClient(stream, reader, version, Buffer.concat([head, name]), timeout)
    }
    try {
      return await withTimeout(handshake(), timeout, "the RFB handshake")
    } catch (err) {
      stream.destroy()
      throw err
    }
  }

  get pixelFormat(): PixelFormat {
    return this.format
  }

  /** The colour at (x, y) of the decoded framebuffer. */
  pixel(x: number, y: number): [number, number, number] {
    const i = (y * this.width + x) * 4
    return [this.framebuffer[i]!, this.framebuffer[i + 1]!, this.framebuffer[i + 2]!]
  }

  setPixelFormat(pf: PixelFormat): void {
    const msg = Buffer.alloc(20)
    writePixelFormat(msg, 4, pf)
    this.stream.write(msg)
    this.format = pf
    this.tables = scaleTables(pf)
  }

  setEncodings(encodings: ReadonlyArray<number>): void {
    const msg = Buffer.alloc(4 + 4 * encodings.length)
    msg[0] = 2
    msg.writeUInt16BE(encodings.length, 2)
    encodings.forEach((e, i) => msg.writeInt32BE(e, 4 + 4 * i))
    this.stream.write(msg)
  }

  requestUpdate(incremental: boolean, rect: Rect = { x: 0, y: 0, w: this.width, h: this.height }): void {
    const msg = Buffer.alloc(10)
    msg[0] = 3
    msg[1] = incremental ? 1 : 0
    msg.writeUInt16BE(rect.x, 2)
    msg.writeUInt16BE(rect.y, 4)
    msg.writeUInt16BE(rect.w, 6)
    msg.writeUInt16BE(rect.h, 8)
    this.stream.write(msg)
  }

  /** The next FramebufferUpdate (already applied to `framebuffer`), in arrival order. */
  async nextUpdate(): Promise<FramebufferUpdate> {
    const wait = async (): Promise<FramebufferUpdate> => {
      while (this.updates.length === 0) {
        if (this.failure !== undefined) throw this.failure
        await new Promise<void>((resolve) => this.waiters.push({ resolve }))
      }
      return this.updates.shift()!
    }
    return withTimeout(wait(), this.timeout, "a FramebufferUpdate")
  }

  /** Requests an update and waits for it. */
  update(incremental: boolean, rect?: Rect): Promise<FramebufferUpdate> {
    this.requestUpdate(incremental, rect)
    return this.nextUpdate()
  }

  key(keysym: number, down: boolean): void {
    const msg = Buffer.alloc(8)
    msg[0] = 4
    msg[1] = down ? 1 : 0
    msg.writeUInt32BE(keysym, 4)
    this.stream.write(msg)
  }

  /** Presses and releases the key for each character (Latin-1 keysyms; "\n" is Return). */
  type(text: string): void {
    for (const ch of text) {
      const code = ch.codePointAt(0)!
      const keysym = ch === "\n" ? 0xff0d : code < 0x100 ? code : 0x01000000 + code
      this.key(keysym, true)
      this.key(keysym, false)
    }
  }

  pointer(x: number, y: number, buttonMask: number): void {
    const msg = Buffer.alloc(6)
    msg[0] = 5
    msg[1] = buttonMask
    msg.writeUInt16BE(x, 2)
    msg.writeUInt16BE(y, 4)
    this.stream.write(msg)
  }

  /** Presses and releases a button (1 = left) at (x, y). */
  click(x: number, y: number, button = 1): void {
    this.pointer(x, y, 1 << (button - 1))
    this.pointer(x, y, 0)
  }

  cutText(text: string): void {
    const bytes = Buffer.from(text, "latin1")
    const msg = Buffer.alloc(8 + bytes.length)
    msg[0] = 6
    msg.writeUInt32BE(bytes.length, 4)
    bytes.copy(msg, 8)
    this.stream.write(msg)
  }

  /** Resolves with the first ServerCutText at index `index` or later, waiting up to the timeout. */
  async waitForCutText(index = 0): Promise<string> {
    const wait = async (): Promise<string> => {
      while (this.cutTexts.length <= index) {
        if (this.failure !== undefined) throw this.failure
        await new Promise<void>((resolve) => this.waiters.push({ resolve }))
      }
      return this.cutTexts[index]!
    }
    return withTimeout(wait(), this.timeout, "ServerCutText")
  }

  close(): void {
    this.stream.destroy()
  }

  private notify(): void {
    for (const w of this.waiters.splice(0)) w.resolve()
  }

  private async loop(): Promise<Error | undefined> {
    try {
      while (true) {
        const type = (await this.reader.read(1))[0]!
        if (type === 0) this.updates.push(await this.readUpdate())
        else if (type === 2) continue // Bell
        else if (type === 3) {
          const len = (await this.reader.read(7)).readUInt32BE(3)
          this.cutTexts.push((await this.reader.read(len)).toString("latin1"))
        } else throw new Error(`unexpected server message type ${type}`)
        this.notify()
      }
    } catch (err) {
      this.failure = err instanceof Error ? err : new Error(String(err))
      this.notify()
      this.stream.destroy()
      return this.failure.message === "stream closed" ? undefined : this.failure
    }
  }

  private async readUpdate(): Promise<FramebufferUpdate> {
    const head = await this.reader.read(3)
    const n = head.readUInt16BE(1)
    let bytes = 4
    const rects: Array<UpdateRect> = []
    const bpp = this.format.bitsPerPixel / 8
    for (let i = 0; i < n; i++) {
      const h = await this.reader.read(12)
      const r: UpdateRect = { x: h.readUInt16BE(0), y: h.readUInt16BE(2), w: h.readUInt16BE(4), h: h.readUInt16BE(6), encoding: h.readInt32BE(8) }
      bytes += 12
      if (r.x + r.w > this.width || r.y + r.h > this.height) throw new Error(`rectangle outside the framebuffer`)
      switch (r.encoding) {
        case 0: {
          const data = await this.reader.read(r.w * r.h * bpp)
          bytes += data.length
          this.putPixels(data, r)
          break
        }
        case 1: {
          const src = await this.reader.read(4)
          bytes += 4
          this.copyRect(src.readUInt16BE(0), src.readUInt16BE(2), r)
          break
        }
        case 2: {
          const hdr = await this.reader.read(4 + bpp)
          const count = hdr.readUInt32BE(0)
          this.fill(r, this.readPixel(hdr, 4))
          const body = await this.reader.read(count * (bpp + 8))
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
          bytes += await this.readHextile(r, bpp)
          break
        default:
          throw new Error(`unsupported encoding ${r.encoding}`)
      }
      rects.push(r)
    }
    return { rects, bytes }
  }

  private async readHextile(r: Rect, bpp: number): Promise<number> {
    let bytes = 0
    let bg = 0
    let fg = 0
    for (let ty = r.y; ty < r.y + r.h; ty += 16) {
      const th = Math.min(16, r.y + r.h - ty)
      for (let tx = r.x; tx < r.x + r.w; tx += 16) {
        const tw = Math.min(16, r.x + r.w - tx)
        const flags = (await this.reader.read(1))[0]!
        bytes++
        if (flags & HEXTILE_RAW) {
          const data = await this.reader.read(tw * th * bpp)
          bytes += data.length
          this.putPixels(data, { x: tx, y: ty, w: tw, h: th })
          continue
        }
        if (flags & HEXTILE_BACKGROUND) {
          bg = this.readPixel(await this.reader.read(bpp), 0)
          bytes += bpp
        }
        this.fill({ x: tx, y: ty, w: tw, h: th }, bg)
        if (flags & HEXTILE_FOREGROUND) {
          fg = this.readPixel(await this.reader.read(bpp), 0)
          bytes += bpp
        }
        if ((flags & HEXTILE_ANY_SUBRECTS) === 0) continue
        const count = (await this.reader.read(1))[0]!
        const coloured = (flags & HEXTILE_SUBRECTS_COLOURED) !== 0
        const size = coloured ? bpp + 2 : 2
        const body = await this.reader.read(count * size)
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
    const fb = this.framebuffer
    fb[i * 4] = t.r[(v >>> f.redShift) & f.redMax]!
    fb[i * 4 + 1] = t.g[(v >>> f.greenShift) & f.greenMax]!
    fb[i * 4 + 2] = t.b[(v >>> f.blueShift) & f.blueMax]!
    fb[i * 4 + 3] = 255
  }

  private putPixels(data: Buffer, r: Rect): void {
    const f = this.format
    const bpp = f.bitsPerPixel / 8
    const fb = this.framebuffer
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
    const fb = this.framebuffer
    const rowBytes = r.w * 4
    const src = new Uint8Array(rowBytes * r.h)
    for (let y = 0; y < r.h; y++) {
      const from = ((sy + y) * this.width + sx) * 4
      src.set(fb.subarray(from, from + rowBytes), y * rowBytes)
    }
    for (let y = 0; y < r.h; y++) fb.set(src.subarray(y * rowBytes, (y + 1) * rowBytes), ((r.y + y) * this.width + r.x) * 4)
  }
}

const scaleTables = (pf: PixelFormat) => {
  const table = (max: number) => Uint8Array.from({ length: max + 1 }, (_, v) => Math.round((v * 255) / max))
  return { r: table(pf.redMax), g: table(pf.greenMax), b: table(pf.blueMax) }
}

const readReason = async (reader: ByteReader): Promise<string> => {
  const len = (await reader.read(4)).readUInt32BE(0)
  return (await reader.read(len)).toString("latin1")
}
