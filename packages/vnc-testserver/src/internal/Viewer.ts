// One viewer connection of the RFB engine: a state machine over the socket's bytes (version, security,
// VNC Authentication, ClientInit, then client messages) that answers update requests with the dirty part
// of the requested area in the viewer's pixel format and encoding. Bad input closes this viewer only.
import type * as net from "node:net"
import type { Desktop } from "./Desktop.ts"
import { ENCODING_RAW, Out, SUPPORTED_ENCODINGS, Scratch, encodeRect } from "./encoders.ts"
import { type PixelConverter, defaultPixelFormat, makeConverter, readPixelFormat, writePixelFormat } from "./PixelFormat.ts"
import { type Rect, Region, intersect } from "./Rect.ts"
import { checkVncAuth, makeChallenge } from "./vncAuth.ts"
import {
  ENCODING_DESKTOP_SIZE,
  ENCODING_EXTENDED_DESKTOP_SIZE,
  Reason,
  readSetDesktopSize,
  refusal,
  setDesktopSizeLength,
  type SizeRect,
  writeSizeRect
} from "./desktopSize.ts"

export type LogLevel = "info" | "warn"
export type LogFn = (level: LogLevel, message: string, fields: Readonly<Record<string, string | number>>) => void

/** What a viewer needs of the server it belongs to. */
export interface ViewerHost {
  readonly options: { readonly password: string | undefined; readonly bandwidthMode: boolean; readonly log: LogFn }
  readonly desktop: Desktop
  /** Gives the shared desktop a new size (a viewer's SetDesktopSize); every viewer is told. */
  readonly resize: (width: number, height: number, by: Viewer) => void
  /** Viewers past the handshake. */
  readonly connections: Set<Viewer>
  /** FramebufferUpdate messages sent, over all viewers. */
  updatesSent: number
}

/** Largest ClientCutText accepted; more closes the connection. */
export const MAX_CUT_TEXT = 1024 * 1024
/** Bytes queued on a socket above which updates wait for 'drain'. */
const HIGH_WATER = 4 * 1024 * 1024

type Phase = "version" | "security" | "vncauth" | "clientinit" | "normal" | "closed"

const SECURITY_NONE = 1
const SECURITY_VNC_AUTH = 2

/** One viewer: its handshake and message state machine, pixel format, encoding and pending update request. */
export class Viewer {
  readonly id: number
  readonly socket: net.Socket
  readonly engine: ViewerHost
  /** host:port of the viewer, kept for log lines after the socket is gone. */
  readonly remote: string
  phase: Phase = "version"
  minor = 8
  private input: Buffer = Buffer.alloc(0)
  private challenge: Buffer | undefined
  private conv: PixelConverter = makeConverter(defaultPixelFormat)
  private encoding = ENCODING_RAW
  private readonly dirty = new Region()
  private pending: Rect | undefined
  private readonly pool: Array<Out> = []
  private readonly scratch = new Scratch()
  /** The desktop-size pseudo-encoding this viewer understands (ExtendedDesktopSize preferred), if any. */
  private sizeEncoding: SizeRect["encoding"] | undefined
  /** Size changes to tell this viewer in its next update. */
  private sizeRects: Array<SizeRect> = []

  constructor(id: number, socket: net.Socket, engine: ViewerHost) {
    this.id = id
    this.socket = socket
    this.engine = engine
    this.remote = `${socket.remoteAddress}:${socket.remotePort}`
    socket.setNoDelay(true)
    socket.on("data", (chunk: Buffer) => this.onData(chunk))
    socket.on("end", () => this.onEnd())
    socket.on("error", (err) => this.fail(`socket error: ${err.message}`))
    socket.on("close", () => this.onClose())
    socket.on("drain", () => this.flush())
    socket.write("RFB 003.008\n")
  }

  log(level: LogLevel, message: string): void {
    this.engine.options.log(level, message, { connection: this.id, remote: this.remote })
  }

  /** Closes this connection because of bad input (or an internal fault), with one log line. */
  fail(reason: string): void {
    if (this.phase === "closed") return
    this.log("warn", `closing connection: ${reason}`)
    this.phase = "closed"
    this.socket.destroy()
  }

  private onClose(): void {
    if (this.phase !== "closed") this.log("info", "viewer disconnected")
    this.phase = "closed"
    this.engine.connections.delete(this)
  }

  private onEnd(): void {
    if (this.phase === "closed") return
    if (this.input.length > 0) {
      this.fail(`truncated ${this.phase === "normal" ? "message" : "handshake"} (${this.input.length} bytes pending at end of stream)`)
      return
    }
    this.socket.end()
  }

  private onData(chunk: Buffer): void {
    this.input = this.input.length === 0 ? chunk : Buffer.concat([this.input, chunk])
    try {
      while (this.phase !== "closed") {
        const used = this.step(this.input)
        if (used === 0) break
        this.input = this.input.subarray(used)
      }
    } catch (err) {
      this.fail(`internal error: ${err instanceof Error ? err.message : String(err)}`)
    }
  }

  /** Consumes one handshake step or client message from `b`; returns bytes used (0: need more). */
  private step(b: Buffer): number {
    switch (this.phase) {
      case "version":
        return this.onVersion(b)
      case "security":
        return this.onSecurity(b)
      case "vncauth":
        return this.onVncAuth(b)
      case "clientinit":
        return this.onClientInit(b)
      case "normal":
        return this.onMessage(b)
      case "closed":
        return 0
    }
  }

  private onVersion(b: Buffer): number {
    if (b.length < 12) {
      if (!"RFB ".startsWith(b.subarray(0, 4).toString("latin1"))) this.fail(`bad protocol version ${JSON.stringify(b.toString("latin1"))}`)
      return 0
    }
    const text = b.subarray(0, 12).toString("latin1")
    const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(text)
    if (m === null || Number(m[1]) < 3) {
      this.fail(`bad protocol version ${JSON.stringify(text)}`)
      return 12
    }
    const major = Number(m[1])
    const minor = Number(m[2])
    // RFC 6143 §7.1.1: unknown versions are treated as 3.3; anything newer than 3.8 gets 3.8.
    this.minor = major > 3 || minor >= 8 ? 8 : minor === 7 ? 7 : 3
    const type = this.engine.options.password === undefined ? SECURITY_NONE : SECURITY_VNC_AUTH
    if (this.minor === 3) {
      const msg = Buffer.alloc(4)
      msg.writeUInt32BE(type)
      this.socket.write(msg)
      this.afterSecurityType(type)
    } else {
      this.socket.write(Buffer.from([1, type]))
      this.phase = "security"
    }
    return 12
  }

  private onSecurity(b: Buffer): number {
    if (b.length < 1) return 0
    const chosen = b[0]!
    const offered = this.engine.options.password === undefined ? SECURITY_NONE : SECURITY_VNC_AUTH
    if (chosen !== offered) {
      if (this.minor >= 8) this.socket.write(securityFailure(this.minor, `security type ${chosen} not offered`))
      this.fail(`client chose security type ${chosen}, offered ${offered}`)
      return 1
    }
    this.afterSecurityType(chosen)
    return 1
  }

  private afterSecurityType(type: number): void {
    if (type === SECURITY_VNC_AUTH) {
      this.challenge = makeChallenge()
      this.socket.write(this.challenge)
      this.phase = "vncauth"
      return
    }
    // RFB 3.8 sends SecurityResult even for None; 3.3 and 3.7 go straight to ClientInit.
    if (this.minor >= 8) this.socket.write(Buffer.alloc(4))
    this.phase = "clientinit"
  }

  private onVncAuth(b: Buffer): number {
    if (b.length < 16) return 0
    if (checkVncAuth(this.engine.options.password ?? "", this.challenge!, b.subarray(0, 16))) {
      this.socket.write(Buffer.alloc(4))
      this.phase = "clientinit"
      return 16
    }
    this.log("warn", "authentication failed")
    this.phase = "closed"
    this.socket.end(securityFailure(this.minor, "Authentication failed"))
    return 16
  }

  private onClientInit(b: Buffer): number {
    if (b.length < 1) return 0
    const { width, height, name } = this.engine.desktop
    const nameBytes = Buffer.from(name, "utf8")
    const msg = Buffer.alloc(24 + nameBytes.length)
    msg.writeUInt16BE(width, 0)
    msg.writeUInt16BE(height, 2)
    writePixelFormat(msg, 4, defaultPixelFormat)
    msg.writeUInt32BE(nameBytes.length, 20)
    nameBytes.copy(msg, 24)
    this.socket.write(msg)
    this.phase = "normal"
    this.engine.connections.add(this)
    this.log("info", `viewer connected (RFB 3.${this.minor})`)
    return 1
  }

  private onMessage(b: Buffer): number {
    if (b.length < 1) return 0
    const type = b[0]!
    switch (type) {
      case 0: { // SetPixelFormat
        if (b.length < 20) return 0
        const pf = readPixelFormat(b, 4)
        if (typeof pf === "string") {
          this.fail(`SetPixelFormat: ${pf}`)
          return 20
        }
        this.conv = makeConverter(pf)
        return 20
      }
      case 2: { // SetEncodings
        if (b.length < 4) return 0
        const n = b.readUInt16BE(2)
        if (b.length < 4 + 4 * n) return 0
        const list: Array<number> = []
        for (let i = 0; i < n; i++) list.push(b.readInt32BE(4 + 4 * i))
        this.encoding = list.find((e) => SUPPORTED_ENCODINGS.includes(e)) ?? ENCODING_RAW
        const sizeEncoding = list.includes(ENCODING_EXTENDED_DESKTOP_SIZE)
          ? ENCODING_EXTENDED_DESKTOP_SIZE
          : list.includes(ENCODING_DESKTOP_SIZE)
          ? ENCODING_DESKTOP_SIZE
          : undefined
        // ExtendedDesktopSize is announced once, in the next update, so the viewer knows it may ask for a size.
        if (sizeEncoding === ENCODING_EXTENDED_DESKTOP_SIZE && this.sizeEncoding !== sizeEncoding) this.tellSize(Reason.server, 0, sizeEncoding)
        this.sizeEncoding = sizeEncoding
        return 4 + 4 * n
      }
      case 3: { // FramebufferUpdateRequest
        if (b.length < 10) return 0
        const incremental = b[1] !== 0
        const want: Rect = { x: b.readUInt16BE(2), y: b.readUInt16BE(4), w: b.readUInt16BE(6), h: b.readUInt16BE(8) }
        this.request(incremental, want)
        return 10
      }
      case 4: { // KeyEvent
        if (b.length < 8) return 0
        this.engine.desktop.keyEvent(b.readUInt32BE(4), b[1] !== 0)
        return 8
      }
      case 5: { // PointerEvent
        if (b.length < 6) return 0
        const { width, height } = this.engine.desktop
        this.engine.desktop.pointerEvent(Math.min(b.readUInt16BE(2), width - 1), Math.min(b.readUInt16BE(4), height - 1), b[1]!)
        return 6
      }
      case 6: { // ClientCutText
        if (b.length < 8) return 0
        const len = b.readInt32BE(4)
        if (len < 0 || len > MAX_CUT_TEXT) {
          this.fail(`ClientCutText length ${len} outside 0..${MAX_CUT_TEXT}`)
          return 8
        }
        if (b.length < 8 + len) return 0
        this.engine.desktop.cutText(b.subarray(8, 8 + len).toString("latin1"))
        return 8 + len
      }
      case 251: { // SetDesktopSize
        const len = setDesktopSizeLength(b)
        if (len === 0 || b.length < len) return 0
        const req = readSetDesktopSize(b)
        const refused = refusal(req)
        if (refused !== undefined) {
          this.log("warn", `SetDesktopSize refused: ${refused.why}`)
          this.tellSize(Reason.thisClient, refused.status)
        } else this.engine.resize(req.width, req.height, this)
        return len
      }
      default:
        this.fail(`unknown client message type ${type}`)
        return 1
    }
  }

  private request(incremental: boolean, want: Rect): void {
    const { width, height } = this.engine.desktop
    const r = intersect(want, { x: 0, y: 0, w: width, h: height })
    if (r === undefined) {
      // nothing to send for an empty or off-screen area; answer a full request with an empty update
      if (!incremental) this.send([])
      return
    }
    if (!incremental || this.engine.options.bandwidthMode) this.dirty.add(r)
    this.pending = this.pending === undefined ? r : bounding(this.pending, r)
    this.flush()
  }

  /** Queues a size pseudo-rectangle (the desktop's current size) for the next update. */
  private tellSize(reason: number, status: number, encoding = this.sizeEncoding): void {
    if (encoding === undefined) return
    const { width, height } = this.engine.desktop
    this.sizeRects.push({ encoding, reason, status, width, height })
    this.flush()
  }

  /** The desktop has a new size: tell the viewer why, and send all of it again. */
  desktopResized(byThisViewer: boolean): void {
    const { width, height } = this.engine.desktop
    const full = { x: 0, y: 0, w: width, h: height }
    this.dirty.clear()
    this.dirty.add(full)
    if (this.pending !== undefined) this.pending = full
    this.tellSize(byThisViewer ? Reason.thisClient : Reason.otherClient, 0)
    this.flush()
  }

  /** Called when the desktop changed. */
  invalidate(rects: ReadonlyArray<Rect>): void {
    for (const r of rects) this.dirty.add(r)
    this.flush()
  }

  /** Sends the dirty part of the requested area, if any, and the socket is not backed up. */
  flush(): void {
    if (this.phase !== "normal" || this.pending === undefined || this.socket.writableLength > HIGH_WATER) return
    // With a size change the viewer cannot have asked for the new area yet: it gets all of it.
    if (this.sizeRects.length > 0) this.pending = { x: 0, y: 0, w: this.engine.desktop.width, h: this.engine.desktop.height }
    const rects = this.dirty.take(this.pending)
    if (rects.length === 0 && this.sizeRects.length === 0) return
    this.pending = undefined
    this.send(rects)
  }

  private send(rects: ReadonlyArray<Rect>): void {
    const out = this.pool.pop() ?? new Out()
    out.reset()
    out.u8(0)
    out.u8(0)
    const sizes = this.sizeRects
    this.sizeRects = []
    out.u16(rects.length + sizes.length)
    for (const r of sizes) writeSizeRect(out, r)
    const { fb, width } = this.engine.desktop
    for (const r of rects) encodeRect(this.encoding, out, fb, width, r, this.conv, this.scratch)
    this.engine.updatesSent++
    // the buffer is reused once the socket no longer references it
    this.socket.write(out.buf.subarray(0, out.pos), () => {
      if (this.pool.length < 2) this.pool.push(out)
    })
  }

  sendCutText(text: string): void {
    const bytes = Buffer.from(text, "latin1")
    const msg = Buffer.alloc(8 + bytes.length)
    msg[0] = 3
    msg.writeUInt32BE(bytes.length, 4)
    bytes.copy(msg, 8)
    this.socket.write(msg)
  }
}

const bounding = (a: Rect, b: Rect): Rect => {
  const x = Math.min(a.x, b.x)
  const y = Math.min(a.y, b.y)
  return { x, y, w: Math.max(a.x + a.w, b.x + b.w) - x, h: Math.max(a.y + a.h, b.y + b.h) - y }
}

/** SecurityResult "failed"; RFB 3.8 adds a reason string. */
const securityFailure = (minor: number, reason: string): Buffer => {
  if (minor < 8) return Buffer.from([0, 0, 0, 1])
  const text = Buffer.from(reason, "latin1")
  const msg = Buffer.alloc(8 + text.length)
  msg.writeUInt32BE(1, 0)
  msg.writeUInt32BE(text.length, 4)
  text.copy(msg, 8)
  return msg
}
