// A small PNG decoder (8-bit RGB/RGBA, non-interlaced), enough to read Chromium screenshots in browser tests.
import { inflateSync } from "node:zlib"

export interface Image {
  readonly width: number
  readonly height: number
  /** RGBA, 4 bytes per pixel. */
  readonly data: Uint8Array
}

export const decodePng = (png: Buffer): Image => {
  let pos = 8
  let width = 0
  let height = 0
  let colourType = 0
  const idat: Array<Buffer> = []
  while (pos < png.length) {
    const len = png.readUInt32BE(pos)
    const type = png.toString("latin1", pos + 4, pos + 8)
    const body = png.subarray(pos + 8, pos + 8 + len)
    if (type === "IHDR") {
      width = body.readUInt32BE(0)
      height = body.readUInt32BE(4)
      if (body[8] !== 8 || body[12] !== 0) throw new Error("only 8-bit non-interlaced PNGs")
      colourType = body[9]!
    } else if (type === "IDAT") idat.push(body)
    pos += 12 + len
  }
  const channels = colourType === 6 ? 4 : colourType === 2 ? 3 : 0
  if (channels === 0) throw new Error(`unsupported PNG colour type ${colourType}`)
  const raw = inflateSync(Buffer.concat(idat))
  const stride = width * channels
  const rows = new Uint8Array(height * stride)
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!
    for (let x = 0; x < stride; x++) {
      const v = raw[y * (stride + 1) + 1 + x]!
      const a = x >= channels ? rows[y * stride + x - channels]! : 0
      const b = y > 0 ? rows[(y - 1) * stride + x]! : 0
      const c = x >= channels && y > 0 ? rows[(y - 1) * stride + x - channels]! : 0
      let p = 0
      if (filter === 1) p = a
      else if (filter === 2) p = b
      else if (filter === 3) p = (a + b) >> 1
      else if (filter === 4) {
        const e = a + b - c
        const pa = Math.abs(e - a)
        const pb = Math.abs(e - b)
        const pc = Math.abs(e - c)
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
      }
      rows[y * stride + x] = (v + p) & 0xff
    }
  }
  const data = new Uint8Array(width * height * 4)
  for (let i = 0; i < width * height; i++) {
    data[i * 4] = rows[i * channels]!
    data[i * 4 + 1] = rows[i * channels + 1]!
    data[i * 4 + 2] = rows[i * channels + 2]!
    data[i * 4 + 3] = channels === 4 ? rows[i * channels + 3]! : 255
  }
  return { width, height, data }
}
