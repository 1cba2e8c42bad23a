// Desktop resizing (the ExtendedDesktopSize and DesktopSize pseudo-encodings, the SetDesktopSize client message,
// as in the RFB community spec, rfbproto.rst): parsing the request and writing the pseudo-rectangles that tell a
// viewer the framebuffer's new size.
import type { Out } from "./encoders.ts"

export const ENCODING_DESKTOP_SIZE = -223
export const ENCODING_EXTENDED_DESKTOP_SIZE = -308
/** Largest size a viewer may ask for (keeps a test server's framebuffer small enough to allocate at once). */
export const MAX_DESKTOP_SIDE = 8192

/** ExtendedDesktopSize reasons (the rectangle's x). */
export const Reason = { server: 0, thisClient: 1, otherClient: 2 } as const
/** ExtendedDesktopSize status (the rectangle's y) for a viewer's own request. */
export const Status = { ok: 0, prohibited: 1, outOfResources: 2, invalidLayout: 3 } as const

/** The one screen the test desktop has: id 1, at 0,0, covering the framebuffer. */
const SCREEN_ID = 1

export interface SetDesktopSize {
  readonly width: number
  readonly height: number
  readonly screens: ReadonlyArray<{ readonly id: number; readonly x: number; readonly y: number; readonly width: number; readonly height: number; readonly flags: number }>
}

/** Bytes of the SetDesktopSize message at the start of `b`, or 0 when more are needed. */
export const setDesktopSizeLength = (b: Buffer): number => (b.length < 8 ? 0 : 8 + 16 * b[6]!)

export const readSetDesktopSize = (b: Buffer): SetDesktopSize => {
  const screens: Array<SetDesktopSize["screens"][number]> = []
  for (let i = 0; i < b[6]!; i++) {
    const o = 8 + 16 * i
    screens.push({ id: b.readUInt32BE(o), x: b.readUInt16BE(o + 4), y: b.readUInt16BE(o + 6), width: b.readUInt16BE(o + 8), height: b.readUInt16BE(o + 10), flags: b.readUInt32BE(o + 12) })
  }
  return { width: b.readUInt16BE(2), height: b.readUInt16BE(4), screens }
}

/** Why a request cannot be honoured (a status and the log text), or undefined when it can. */
export const refusal = (req: SetDesktopSize): { readonly status: number; readonly why: string } | undefined => {
  if (req.width < 1 || req.height < 1) return { status: Status.invalidLayout, why: `size ${req.width}x${req.height} is empty` }
  if (req.width > MAX_DESKTOP_SIDE || req.height > MAX_DESKTOP_SIDE) return { status: Status.outOfResources, why: `size ${req.width}x${req.height} exceeds ${MAX_DESKTOP_SIDE}` }
  if (req.screens.length === 0) return { status: Status.invalidLayout, why: "no screen in the layout" }
  const outside = req.screens.find((s) => s.width < 1 || s.height < 1 || s.x + s.width > req.width || s.y + s.height > req.height)
  if (outside !== undefined) return { status: Status.invalidLayout, why: `screen ${outside.id} lies outside ${req.width}x${req.height}` }
  return undefined
}

/** A pseudo-rectangle telling a viewer the framebuffer size (and, extended, why and whether its request worked). */
export interface SizeRect {
  readonly encoding: typeof ENCODING_DESKTOP_SIZE | typeof ENCODING_EXTENDED_DESKTOP_SIZE
  readonly reason: number
  readonly status: number
  readonly width: number
  readonly height: number
}

export const writeSizeRect = (out: Out, r: SizeRect): void => {
  const extended = r.encoding === ENCODING_EXTENDED_DESKTOP_SIZE
  out.ensure(12 + (extended ? 20 : 0))
  const b = out.buf
  let p = out.pos
  b.writeUInt16BE(extended ? r.reason : 0, p)
  b.writeUInt16BE(extended ? r.status : 0, p + 2)
  b.writeUInt16BE(r.width, p + 4)
  b.writeUInt16BE(r.height, p + 6)
  b.writeInt32BE(r.encoding, p + 8)
  p += 12
  if (extended) {
    b.writeUInt8(1, p) // one screen
    b.fill(0, p + 1, p + 4)
    b.writeUInt32BE(SCREEN_ID, p + 4)
    b.writeUInt16BE(0, p + 8)
    b.writeUInt16BE(0, p + 10)
    b.writeUInt16BE(r.width, p + 12)
    b.writeUInt16BE(r.height, p + 14)
    b.writeUInt32BE(0, p + 16)
    p += 20
  }
  out.pos = p
}
