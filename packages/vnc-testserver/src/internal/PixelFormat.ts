// RFB pixel formats: parsing, encoding and the lookup tables that turn 0xRRGGBB into client pixels.

export interface PixelFormat {
  readonly bitsPerPixel: 8 | 16 | 32
  readonly depth: number
  readonly bigEndian: boolean
  readonly trueColour: boolean
  readonly redMax: number
  readonly greenMax: number
  readonly blueMax: number
  readonly redShift: number
  readonly greenShift: number
  readonly blueShift: number
}

/** The server's native format: 32 bpp, depth 24, little-endian, 0x00RRGGBB. */
export const defaultPixelFormat: PixelFormat = {
  bitsPerPixel: 32,
  depth: 24,
  bigEndian: false,
  trueColour: true,
  redMax: 255,
  greenMax: 255,
  blueMax: 255,
  redShift: 16,
  greenShift: 8,
  blueShift: 0
}

/** Writes the 16-byte PIXEL_FORMAT structure at `offset`. */
export const writePixelFormat = (buf: Buffer, offset: number, pf: PixelFormat): void => {
  buf.writeUInt8(pf.bitsPerPixel, offset)
  buf.writeUInt8(pf.depth, offset + 1)
  buf.writeUInt8(pf.bigEndian ? 1 : 0, offset + 2)
  buf.writeUInt8(pf.trueColour ? 1 : 0, offset + 3)
  buf.writeUInt16BE(pf.redMax, offset + 4)
  buf.writeUInt16BE(pf.greenMax, offset + 6)
  buf.writeUInt16BE(pf.blueMax, offset + 8)
  buf.writeUInt8(pf.redShift, offset + 10)
  buf.writeUInt8(pf.greenShift, offset + 11)
  buf.writeUInt8(pf.blueShift, offset + 12)
  buf.fill(0, offset + 13, offset + 16)
}

/** Reads a PIXEL_FORMAT structure; returns a reason string when the server cannot serve it. */
export const readPixelFormat = (buf: Buffer, offset: number): PixelFormat | string => {
  const bpp = buf.readUInt8(offset)
  if (bpp !== 8 && bpp !== 16 && bpp !== 32) return `unsupported bits-per-pixel ${bpp}`
  if (buf.readUInt8(offset + 3) === 0) return "colour-map pixel formats are not supported"
  const pf: PixelFormat = {
    bitsPerPixel: bpp,
    depth: buf.readUInt8(offset + 1),
    bigEndian: buf.readUInt8(offset + 2) !== 0,
    trueColour: true,
    redMax: buf.readUInt16BE(offset + 4),
    greenMax: buf.readUInt16BE(offset + 6),
    blueMax: buf.readUInt16BE(offset + 8),
    redShift: buf.readUInt8(offset + 10),
    greenShift: buf.readUInt8(offset + 11),
    blueShift: buf.readUInt8(offset + 12)
  }
  for (const [max, shift] of [[pf.redMax, pf.redShift], [pf.greenMax, pf.greenShift], [pf.blueMax, pf.blueShift]] as const) {
    if (max === 0 || shift >= bpp || max * 2 ** shift >= 2 ** bpp) return `colour channel does not fit in ${bpp} bits`
  }
  return pf
}

const bswap32 = (v: number): number =>
  (((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24)) >>> 0

const bswap16 = (v: number): number => ((v & 0xff) << 8) | ((v >>> 8) & 0xff)

/**
 * A converter from 0xRRGGBB to client pixel values, as three 256-entry tables whose entries are
 * already byte-swapped for a little-endian host: a pixel is `r[R] | g[G] | b[B]`, stored little-endian. Byte-swapping distributes over OR, so big-endian costs nothing.
 */
export interface PixelConverter {
  readonly format: PixelFormat
  readonly bytesPerPixel: 1 | 2 | 4
  readonly r: Uint32Array
  readonly g: Uint32Array
  readonly b: Uint32Array
}

// Pixels are written with native typed arrays and Buffer.writeUIntLE, which agree only on little-endian hosts.
if (new Uint8Array(new Uint32Array([1]).buffer)[0] !== 1) throw new Error("vnc-testserver needs a little-endian host")

export const makeConverter = (pf: PixelFormat): PixelConverter => {
  const bytesPerPixel = (pf.bitsPerPixel / 8) as 1 | 2 | 4
  const swap = bytesPerPixel > 1 && pf.bigEndian
  const table = (max: number, shift: number): Uint32Array => {
    const t = new Uint32Array(256)
    for (let i = 0; i < 256; i++) {
      const v = (Math.round((i * max) / 255) * 2 ** shift) >>> 0
      t[i] = !swap ? v : bytesPerPixel === 4 ? bswap32(v) : bswap16(v)
    }
    return t
  }
  return {
    format: pf,
    bytesPerPixel,
    r: table(pf.redMax, pf.redShift),
    g: table(pf.greenMax, pf.greenShift),
    b: table(pf.blueMax, pf.blueShift)
  }
}

/** Converts one 0xRRGGBB value to the host-order client pixel value. */
export const convertPixel = (c: PixelConverter, rgb: number): number =>
  (c.r[(rgb >>> 16) & 0xff]! | c.g[(rgb >>> 8) & 0xff]! | c.b[rgb & 0xff]!) >>> 0

/** Decodes a client pixel value (as read in the format's byte order) to [r, g, b] in 0..255. */
export const pixelToRgb = (pf: PixelFormat, v: number): [number, number, number] => [
  Math.round((((v >>> pf.redShift) & pf.redMax) * 255) / pf.redMax),
  Math.round((((v >>> pf.greenShift) & pf.greenMax) * 255) / pf.greenMax),
  Math.round((((v >>> pf.blueShift) & pf.blueMax) * 255) / pf.blueMax)
]
