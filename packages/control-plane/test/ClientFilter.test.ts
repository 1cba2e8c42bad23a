// The client-stream filter and the template clipboard policy built on it: the handshake and kept messages pass
// byte for byte whatever the chunking; ClientCutText (standard and extended) is dropped or kept per direction;
// SetEncodings loses the Extended Clipboard pseudo-encoding when download is off; an unknown message type is
// reported as lost.
import { assert, describe, it } from "@effect/vitest"
import { clipboardFilter, composeFilters, ENCODING_EXTENDED_CLIPBOARD, makeClientFilter } from "../src/internal/vnc/clientFilter.ts"

const bytes = (...parts: Array<ArrayLike<number>>) => Uint8Array.from(parts.flatMap((p) => Array.from(p)))
const u16 = (n: number) => [(n >> 8) & 0xff, n & 0xff]
const u32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const handshake = bytes(new TextEncoder().encode("RFB 003.008\n"), [1], [1])
const setEncodings = (list: Array<number>) => bytes([2, 0], u16(list.length), list.flatMap((e) => u32(e >>> 0)))
const fbur = bytes([3, 1], u16(0), u16(0), u16(640), u16(480))
const key = (k: number) => bytes([4, 1, 0, 0], u32(k))
const pointer = bytes([5, 1], u16(10), u16(20))
const cutText = (text: string) => {
  const t = new TextEncoder().encode(text)
  return bytes([6, 0, 0, 0], u32(t.length), t)
}
/** An extended clipboard message: negative length, flags (actions << 24 | formats), then data. */
const extended = (flags: number, data: Array<number> = []) => bytes([6, 0, 0, 0], u32(-(4 + data.length)), u32(flags), data)
const CAPS = 1 << 24
const REQUEST = 1 << 25
const PEEK = 1 << 26
const NOTIFY = 1 << 27
const PROVIDE = 1 << 28
const TEXT = 1

/** Pushes `stream` cut into pieces of `size` bytes; returns everything forwarded. */
const run = (filter: ReturnType<typeof makeClientFilter>, stream: Uint8Array, size: number) => {
  const out: Array<number> = []
  for (let i = 0; i < stream.length; i += size) out.push(...filter.push(stream.subarray(i, i + size)))
  return Uint8Array.from(out)
}

describe("client filter", () => {
  const stream = bytes(handshake, setEncodings([5, 0, ENCODING_EXTENDED_CLIPBOARD, -308]), fbur, key(0x61), cutText("secret"), pointer,
    extended(CAPS | TEXT, u32(1024)), extended(NOTIFY | TEXT), extended(PROVIDE | TEXT, [1, 2, 3]), extended(REQUEST | TEXT), extended(PEEK), key(0x62))

  for (const size of [1, 3, 7, 1000]) {
    it(`passes everything unchanged with both directions allowed (chunks of ${size})`, () => {
      const f = clipboardFilter({ upload: true, download: true })
      assert.deepStrictEqual(run(f, stream, size), stream)
      assert.deepStrictEqual(f.changed(), {})
    })

    it(`upload off drops standard cut text and extended notify/provide, keeps caps/request/peek (chunks of ${size})`, () => {
      const f = clipboardFilter({ upload: false, download: true })
      const expected = bytes(handshake, setEncodings([5, 0, ENCODING_EXTENDED_CLIPBOARD, -308]), fbur, key(0x61), pointer,
        extended(CAPS | TEXT, u32(1024)), extended(REQUEST | TEXT), extended(PEEK), key(0x62))
      assert.deepStrictEqual(run(f, stream, size), expected)
      assert.deepStrictEqual(f.changed(), { ClientCutText: 3 })
      assert.isFalse(f.lost())
    })

    it(`download off takes the extended clipboard out of SetEncodings and drops request/peek (chunks of ${size})`, () => {
      const f = clipboardFilter({ upload: true, download: false })
      const expected = bytes(handshake, setEncodings([5, 0, -308]), fbur, key(0x61), cutText("secret"), pointer,
        extended(CAPS | TEXT, u32(1024)), extended(NOTIFY | TEXT), extended(PROVIDE | TEXT, [1, 2, 3]), key(0x62))
      assert.deepStrictEqual(run(f, stream, size), expected)
      assert.deepStrictEqual(f.changed(), { SetEncodings: 1, ClientCutText: 2 })
    })
  }

  it("holds an incomplete message back until it is whole", () => {
    const f = clipboardFilter({ upload: false, download: true })
    assert.deepStrictEqual(f.push(handshake), handshake)
    const text = cutText("a long clipboard text")
    assert.strictEqual(f.push(text.subarray(0, 10)).length, 0)
    assert.strictEqual(f.push(text.subarray(10)).length, 0, "dropped whole")
    const k = key(0x63)
    assert.strictEqual(f.push(k.subarray(0, 4)).length, 0)
    assert.deepStrictEqual(f.push(k.subarray(4)), k)
  })

  it("is lost after a message type it cannot parse, and composes with another filter", () => {
    const dropKeys = makeClientFilter((m) => (m.type === "KeyEvent" ? "drop" : "keep"))
    const f = composeFilters([clipboardFilter({ upload: false, download: false }), dropKeys])
    const out = run(f, bytes(handshake, key(0x61), cutText("x"), pointer), 2)
    assert.deepStrictEqual(out, bytes(handshake, pointer))
    assert.deepStrictEqual(f.changed(), { ClientCutText: 1, KeyEvent: 1 })
    f.push(bytes([77, 1, 2, 3]))
    assert.isTrue(f.lost())
  })
})
