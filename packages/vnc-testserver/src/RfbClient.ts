// A minimal RFB client for tests and benchmarks: handshake (3.3/3.7/3.8, None or VNC Authentication),
// SetPixelFormat, SetEncodings, update requests decoded (Raw, CopyRect, RRE, Hextile) into an RGBA
// framebuffer, key/pointer/cut-text input. Works over any Node duplex byte stream: a net.Socket, or a
// WebSocket through `createWebSocketStream` from `ws`.
import type { Duplex } from "node:stream"
import { ByteReader } from "./internal/ByteReader.ts"
import { Framebuffer, type FramebufferUpdate } from "./internal/Framebuffer.ts"
import { type PixelFormat, readPixelFormat, writePixelFormat } from "./internal/PixelFormat.ts"
import type { Rect } from "./internal/Rect.ts"
import { vncAuthResponse } from "./internal/vncAuth.ts"

export type { FramebufferUpdate, UpdateRect } from "./internal/Framebuffer.ts"
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
  readonly name: string
  /** The pixel format the server announced in ServerInit. */
  readonly serverPixelFormat: PixelFormat
  /** Every ServerCutText received, oldest first. */
  readonly cutTexts: Array<string> = []
  /** Resolves when the stream has closed; carries the error that ended the message loop, if any. */
  readonly closed: Promise<Error | undefined>
  private readonly fb: Framebuffer
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
    const pf = readPixelFormat(init, 4)
    if (typeof pf === "string") throw new Error(`server pixel format: ${pf}`)
    this.serverPixelFormat = pf
    this.name = init.subarray(24).toString("utf8")
    this.fb = new Framebuffer(init.readUInt16BE(0), init.readUInt16BE(2), pf)
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
    return this.fb.pixelFormat
  }

  /** The colour at (x, y) of the decoded framebuffer. */
  pixel(x: number, y: number): [number, number, number] {
    return this.fb.pixel(x, y)
  }

  setPixelFormat(pf: PixelFormat): void {
    const msg = Buffer.alloc(20)
    writePixelFormat(msg, 4, pf)
    this.stream.write(msg)
    this.fb.setPixelFormat(pf)
  }

  /** The framebuffer's size: ServerInit's, then the last DesktopSize / ExtendedDesktopSize the server sent. */
  get width(): number {
    return this.fb.width
  }

  get height(): number {
    return this.fb.height
  }

  /** The current framebuffer, 4 bytes (R, G, B, 255) per pixel, row by row. */
  get framebuffer(): Uint8Array {
    return this.fb.data
  }

  /** SetDesktopSize with one screen covering the framebuffer (the server needs ExtendedDesktopSize in the encodings). */
  setDesktopSize(width: number, height: number, screens: ReadonlyArray<{ readonly id: number; readonly x: number; readonly y: number; readonly w: number; readonly h: number }> = [{ id: 1, x: 0, y: 0, w: width, h: height }]): void {
    const msg = Buffer.alloc(8 + 16 * screens.length)
    msg[0] = 251
    msg.writeUInt16BE(width, 2)
    msg.writeUInt16BE(height, 4)
    msg[6] = screens.length
    screens.forEach((s, i) => {
      const o = 8 + 16 * i
      msg.writeUInt32BE(s.id, o)
      msg.writeUInt16BE(s.x, o + 4)
      msg.writeUInt16BE(s.y, o + 6)
      msg.writeUInt16BE(s.w, o + 8)
      msg.writeUInt16BE(s.h, o + 10)
    })
    this.stream.write(msg)
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
        if (type === 0) this.updates.push(await this.fb.readUpdate(this.reader))
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
}

const readReason = async (reader: ByteReader): Promise<string> => {
  const len = (await reader.read(4)).readUInt32BE(0)
  return (await reader.read(len)).toString("latin1")
}
