// The server-stream filter that enforces a template's `clipboard.download: false`: it follows the handshake (RFB
// 3.3, 3.7, 3.8; None and VNC Authentication), measures every server message and rectangle it knows, drops
// ServerCutText (standard and extended) whatever the chunking, passes everything else byte for byte, and is lost
// on what it cannot measure.
import { assert, describe, it } from "@effect/vitest"
import { isParseableEncoding, serverCutTextFilter } from "../src/internal/vnc/serverCutText.ts"

const bytes = (...parts: Array<ArrayLike<number>>) => Uint8Array.from(parts.flatMap((p) => Array.from(p)))
const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff]
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const ascii = (s: string) => Array.from(new TextEncoder().encode(s))
const rectHead = (w: number, h: number, enc: number) => [...u16(0), ...u16(0), ...u16(w), ...u16(h), ...u32(enc >>> 0)]
const serverInit = (bpp: number) => bytes(u16(4), u16(2), [bpp, 24, 0, 1], u16(255), u16(255), u16(255), [16, 8, 0, 0, 0, 0], u32(4), ascii("desk"))
const cut = (text: string) => bytes([3, 0, 0, 0], u32(text.length), ascii(text))
const extendedCut = bytes([3, 0, 0, 0], u32(-8 >>> 0), u32(1 << 24 | 1), u32(1024))

/** A FramebufferUpdate with one rectangle of each encoding the filter measures, at `bpp` bytes per pixel. */
const update = (bpp: number) => {
  const px = (v: number) => Array(bpp).fill(v)
  const hextile = [
    // a 20x20 rect: four tiles (16x16, 4x16, 16x4, 4x4)
    1, ...Array(16 * 16 * bpp).fill(7), // raw tile
    2 | 8 | 16, ...px(1), 2, ...px(3), 0x00, 0x11, ...px(4), 0x22, 0x11, // background, 2 coloured subrects
    2 | 4 | 8, ...px(5), ...px(6), 1, 0x00, 0x00, // background, foreground, 1 subrect
    0 // nothing: same background
  ]
  return bytes([0, 0], u16(8),
    rectHead(2, 2, 0), Array(4 * bpp).fill(9),
    rectHead(2, 2, 1), u16(0), u16(0),
    rectHead(4, 4, 2), u32(1), px(2), px(3), u16(0), u16(0), u16(1), u16(1),
    rectHead(20, 20, 5), hextile,
    rectHead(4, 4, 16), u32(3), [1, 2, 3],
    rectHead(2, 1, -239), Array(2 * bpp).fill(1), [0xc0],
    rectHead(4, 2, -308), [1, 0, 0, 0], u32(1), u16(0), u16(0), u16(4), u16(2), u32(0),
    rectHead(0, 0, -307), u32(4), ascii("name"))
}

const client = (securityType: number | undefined, bitsPerPixel?: number) => ({ securityType: () => securityType, bitsPerPixel: () => bitsPerPixel })
const run = (f: ReturnType<typeof serverCutTextFilter>, stream: Uint8Array, size: number) => {
  const out: Array<number> = []
  for (let i = 0; i < stream.length; i += size) out.push(...f.push(stream.subarray(i, i + size)))
  return Uint8Array.from(out)
}

describe("ServerCutText filter", () => {
  const handshake38 = bytes(ascii("RFB 003.008\n"), [1, 1], u32(0))
  for (const size of [1, 5, 64, 100_000]) {
    it(`3.8, None, 32 bpp: drops cut text, passes updates, bells, colour maps, fences (chunks of ${size})`, () => {
      const rest = bytes(update(4), [2], [1, 0], u16(0), u16(1), [0, 1, 0, 2, 0, 3], [248, 0, 0, 0], u32(0), [2, 9, 9], [150])
      const stream = bytes(handshake38, serverInit(32), cut("secret"), update(4), extendedCut, rest, cut(""))
      const f = serverCutTextFilter(client(1))
      assert.deepStrictEqual(run(f, stream, size), bytes(handshake38, serverInit(32), update(4), rest))
      assert.strictEqual(f.dropped(), 3)
      assert.isUndefined(f.lost())
    })
  }

  it("follows the viewer's pixel format (16 bpp) and VNC Authentication in 3.7 and 3.3", () => {
    const v37 = bytes(ascii("RFB 003.007\n"), [2, 1, 2], Array(16).fill(5), u32(0))
    const f37 = serverCutTextFilter(client(2, 16))
    assert.deepStrictEqual(run(f37, bytes(v37, serverInit(32), update(2), cut("x"), update(2)), 3), bytes(v37, serverInit(32), update(2), update(2)))
    const v33 = bytes(ascii("RFB 003.003\n"), u32(2), Array(16).fill(5), u32(0))
    const f33 = serverCutTextFilter(client(undefined))
    assert.deepStrictEqual(run(f33, bytes(v33, serverInit(8), cut("y"), update(1)), 7), bytes(v33, serverInit(8), update(1)))
    // 3.7 with None has no SecurityResult.
    const none37 = bytes(ascii("RFB 003.007\n"), [1, 1])
    assert.deepStrictEqual(run(serverCutTextFilter(client(1)), bytes(none37, serverInit(32), cut("z"), [2]), 2), bytes(none37, serverInit(32), [2]))
  })

  it("is lost on an encoding, a message type or a security type it cannot measure", () => {
    const tight = serverCutTextFilter(client(1))
    tight.push(bytes(handshake38, serverInit(32), [0, 0], u16(1), rectHead(4, 4, 7)))
    assert.match(tight.lost() ?? "", /encoding 7/)
    const unknown = serverCutTextFilter(client(1))
    unknown.push(bytes(handshake38, serverInit(32), [99]))
    assert.match(unknown.lost() ?? "", /message type 99/)
    const vencrypt = serverCutTextFilter(client(19))
    vencrypt.push(bytes(ascii("RFB 003.008\n"), [1, 19], [0, 2]))
    assert.match(vencrypt.lost() ?? "", /security type 19/)
  })

  it("forwards each handshake step at once (the viewer must answer before the server says more)", () => {
    const f = serverCutTextFilter(client(2))
    const version = bytes(ascii("RFB 003.008\n"))
    assert.deepStrictEqual(f.push(version), version)
    assert.deepStrictEqual(f.push(bytes([1, 2])), bytes([1, 2]))
    const challenge = bytes(Array(16).fill(3))
    assert.deepStrictEqual(f.push(challenge), challenge)
    assert.deepStrictEqual(f.push(bytes(u32(0))), bytes(u32(0)))
    assert.deepStrictEqual(f.push(serverInit(32)), serverInit(32))
  })

  it("passes the rest once the handshake fails (the server closes)", () => {
    const refused = bytes(ascii("RFB 003.008\n"), [1, 2], Array(16).fill(1), u32(1), u32(5), ascii("nope!"))
    assert.deepStrictEqual(run(serverCutTextFilter(client(2)), refused, 4), refused)
  })

  it("lists the encodings it can measure, and not Tight or the extended clipboard", () => {
    for (const e of [0, 1, 2, 5, 16, -223, -224, -308, -23, -256]) assert.isTrue(isParseableEncoding(e), String(e))
    for (const e of [7, -260, 0xc0a1e5ce | 0, 6]) assert.isFalse(isParseableEncoding(e), String(e))
  })
})
