// Encoder round trips on pictures the desktop rarely draws: noise (Hextile raw tiles, RRE falling
// back to Raw), many colours (coloured Hextile subrects) and odd sizes (partial edge tiles),
// decoded by RfbClient from a scripted server, in several pixel formats.
import { assert, describe, it } from "@effect/vitest"
import * as net from "node:net"
import { type PixelFormat, RfbClient } from "../src/index.ts"
import { ENCODING_HEXTILE, ENCODING_RAW, ENCODING_RRE, encodeRect, Out, Scratch } from "../src/internal/encoders.ts"
import { defaultPixelFormat, makeConverter } from "../src/internal/PixelFormat.ts"
import { scripted, serverInit } from "./helpers.ts"

const W = 37
const H = 21

const pictures: Record<string, (x: number, y: number) => number> = {
  // a deterministic pseudo-random colour per pixel
  noise: (x, y) => (Math.imul(x * 7919 + y * 104729, 2654435761) >>> 8) & 0xffffff,
  // a background with single pixels and short bars of many colours
  sparse: (x, y) => ((x * 3 + y * 5) % 11 === 0 ? (x * 40) << 16 | (y * 12) << 8 | 0x80 : 0x204060),
  // horizontal stripes: subrects that merge vertically
  stripes: (x, y) => (y % 6 < 3 ? 0xff0000 : x < 20 ? 0x00ff00 : 0x0000ff)
}

const formats: Record<string, PixelFormat> = {
  "32 bpp": defaultPixelFormat,
  "16 bpp big-endian": { bitsPerPixel: 16, depth: 16, bigEndian: true, trueColour: true, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0 }
}

const roundTrip = async (fb: Uint32Array, encoding: number, pf: PixelFormat) => {
  const out = new Out(16)
  out.u8(0)
  out.u8(0)
  out.u16(1)
  encodeRect(encoding, out, fb, W, { x: 0, y: 0, w: W, h: H }, makeConverter(pf), new Scratch())
  const update = Buffer.from(out.buf.subarray(0, out.pos))
  const server = await scripted(async (socket, read) => {
    socket.write("RFB 003.008\n")
    await read(12)
    socket.write(Buffer.from([1, 1]))
    await read(1)
    socket.write(Buffer.alloc(4))
    await read(1)
    socket.write(serverInit(W, H, "enc"))
    await read(20 + 10) // SetPixelFormat, FramebufferUpdateRequest
    socket.write(update)
  })
  const client = await RfbClient.connect(net.connect(server.port, "127.0.0.1"))
  client.setPixelFormat(pf)
  const u = await client.update(false)
  client.close()
  await server.close()
  return { client, update: u }
}

describe("encoders", () => {
  for (const [pictureName, picture] of Object.entries(pictures)) {
    for (const [formatName, pf] of Object.entries(formats)) {
      for (const [encName, encoding] of [["Raw", ENCODING_RAW], ["RRE", ENCODING_RRE], ["Hextile", ENCODING_HEXTILE]] as const) {
        it(`${encName} round-trips ${pictureName} at ${formatName}`, async () => {
          const fb = new Uint32Array(W * H)
          for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) fb[y * W + x] = picture(x, y)
          const { client, update } = await roundTrip(fb, encoding, pf)
          const bpp = pf.bitsPerPixel / 8
          if (encName === "RRE" && pictureName === "noise") assert.strictEqual(update.rects[0]!.encoding, ENCODING_RAW) // fell back
          else assert.strictEqual(update.rects[0]!.encoding, encoding)
          if (encName !== "Raw") assert.isAtMost(update.bytes, 4 + 12 + W * H * bpp + Math.ceil(W / 16) * Math.ceil(H / 16))
          const tol = [pf.redMax, pf.greenMax, pf.blueMax].map((m) => Math.ceil(255 / m / 2))
          for (let y = 0; y < H; y++) {
            for (let x = 0; x < W; x++) {
              const c = fb[y * W + x]!
              const want = [(c >> 16) & 255, (c >> 8) & 255, c & 255]
              const got = client.pixel(x, y)
              for (let k = 0; k < 3; k++) {
                if (Math.abs(got[k]! - want[k]!) > tol[k]!) assert.fail(`pixel ${x},${y}: got ${got}, want ${want}`)
              }
            }
          }
        })
      }
    }
  }
})
