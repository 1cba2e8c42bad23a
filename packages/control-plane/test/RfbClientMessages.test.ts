// The RFB client-message parser: every client message type, whole and cut into chunks at every byte, the
// handshake of RFB 3.8 (None and VNC authentication) and 3.3, and what it does with types it cannot parse.
import { describe, expect, it } from "@effect/vitest"
import {
  isUserInput,
  makeRfbClientParser,
  type RfbClientMessage
} from "../src/internal/vnc/rfbClientMessages.ts"

const bytes = (...parts: ReadonlyArray<number | ReadonlyArray<number>>) => new Uint8Array(parts.flat())
const be16 = (n: number) => [(n >> 8) & 0xff, n & 0xff]
const be32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const text = (s: string) => [...Buffer.from(s, "latin1")]

/** One sample of every client message, with what it must parse to. */
const samples: ReadonlyArray<readonly [Uint8Array, Partial<RfbClientMessage> & { type: RfbClientMessage["type"] }, boolean]> = [
  [bytes(0, 0, 0, 0, 32, 24, 0, 1, ...be16(255), ...be16(255), ...be16(255), 16, 8, 0, 0, 0, 0), { type: "SetPixelFormat" }, false],
  [bytes(2, 0, ...be16(3), ...be32(0), ...be32(7), ...be32(-223)), { type: "SetEncodings", encodings: [0, 7, -223] }, false],
  [bytes(3, 1, ...be16(0), ...be16(0), ...be16(1280), ...be16(800)), { type: "FramebufferUpdateRequest", incremental: true, width: 1280, height: 800 }, false],
  [bytes(4, 1, 0, 0, ...be32(0x61)), { type: "KeyEvent", down: true, keysym: 0x61 }, true],
  [bytes(5, 1, ...be16(300), ...be16(200)), { type: "PointerEvent", buttons: 1, x: 300, y: 200 }, true],
  [bytes(6, 0, 0, 0, ...be32(5), ...text("hello")), { type: "ClientCutText", length: 5, extended: false }, true],
  [bytes(6, 0, 0, 0, ...be32(-4), ...be32(0x01000001)), { type: "ClientCutText", length: 4, extended: true }, true],
  [bytes(150, 1, ...be16(0), ...be16(0), ...be16(64), ...be16(48)), { type: "EnableContinuousUpdates", enable: true }, false],
  [bytes(248, 0, 0, 0, ...be32(0x80000002), 3, 1, 2, 3), { type: "ClientFence", flags: 0x80000002 }, false],
  [bytes(250, 0, 1, 2), { type: "Xvp", code: 2 }, false],
  [bytes(251, 0, ...be16(1024), ...be16(768), 1, 0, ...be32(0), ...be16(0), ...be16(0), ...be16(1024), ...be16(768), ...be32(0)), {
    type: "SetDesktopSize",
    width: 1024,
    height: 768,
    screens: 1
  }, false],
  [bytes(253, 0x80, ...be16(2), 0, 0), { type: "Gii", subtype: 0 }, false],
  [bytes(255, 0, ...be16(1), ...be32(0xff0d), ...be32(0x1c)), { type: "QemuKeyEvent", down: true, keysym: 0xff0d, keycode: 0x1c }, true],
  [bytes(255, 1, ...be16(0)), { type: "QemuAudio", operation: 0 }, false],
  [bytes(255, 1, ...be16(2), 0, 2, ...be32(44100)), { type: "QemuAudio", operation: 2 }, false]
]

const handshake38 = bytes(...text("RFB 003.008\n"), 1, 1)
const all = bytes(...samples.flatMap(([b]) => [...b]))

/** Feeds `stream` cut at the given offsets; returns every message. */
const feed = (stream: Uint8Array, cuts: ReadonlyArray<number>, parser = makeRfbClientParser()) => {
  const out: Array<RfbClientMessage> = []
  let from = 0
  for (const at of [...cuts, stream.length]) {
    out.push(...parser.push(stream.subarray(from, at)))
    from = at
  }
  return { out, parser }
}

describe("RFB client messages", () => {
  it("parses every client message type, with its fields and raw bytes, and tells user input apart", () => {
    const { out, parser } = feed(bytes(...handshake38, ...all), [])
    expect(out.map((m) => m.type)).toEqual(samples.map(([, m]) => m.type))
    samples.forEach(([raw, expected, input], i) => {
      expect(out[i]).toMatchObject(expected)
      expect([...out[i]!.raw]).toEqual([...raw])
      expect(isUserInput(out[i]!)).toBe(input)
    })
    expect(parser.state()).toEqual({ phase: "messages" })
    expect(parser.buffered()).toBe(0)
    expect(parser.handshake()).toEqual([
      { type: "ProtocolVersion", version: "RFB 003.008" },
      { type: "SecurityType", securityType: 1 },
      { type: "ClientInit", shared: true }
    ])
  })

  it("gives the same messages however the stream is cut: one byte at a time, and at every single offset", () => {
    const stream = bytes(...handshake38, ...all)
    const whole = feed(stream, []).out
    const byteByByte = feed(stream, Array.from({ length: stream.length - 1 }, (_, i) => i + 1)).out
    expect(byteByByte).toEqual(whole)
    for (let cut = 1; cut < stream.length; cut++) {
      expect(feed(stream, [cut]).out, `cut at ${cut}`).toEqual(whole)
    }
    // A message completes only when its last byte arrives.
    const parser = makeRfbClientParser({ skipHandshake: true })
    expect(parser.push(bytes(4, 1, 0, 0, 0, 0, 0))).toEqual([])
    expect(parser.buffered()).toBe(7)
    expect(parser.push(bytes(0x61)).map((m) => m.type)).toEqual(["KeyEvent"])
  })

  it("passes the VNC-authentication response of RFB 3.8 and a 3.3 handshake", () => {
    const auth = bytes(...text("RFB 003.008\n"), 2, ...new Array(16).fill(7), 0, 5, 0, ...be16(1), ...be16(2))
    const a = feed(auth, [13, 20])
    expect(a.out.map((m) => m.type)).toEqual(["PointerEvent"])
    expect(a.parser.handshake().map((s) => s.type)).toEqual(["ProtocolVersion", "SecurityType", "VncAuthResponse", "ClientInit"])
    const v33 = feed(bytes(...text("RFB 003.003\n"), 1, 4, 0, 0, 0, ...be32(0x62)), [5])
    expect(v33.out.map((m) => m.type)).toEqual(["KeyEvent"])
    const v33auth = feed(bytes(...text("RFB 003.003\n"), ...new Array(16).fill(1), 1, 5, 0, 0, 0, 0, 0), [], makeRfbClientParser({ rfb33SecurityType: 2 }))
    expect(v33auth.out.map((m) => m.type)).toEqual(["PointerEvent"])
  })

  it("stops at a type it does not know (RFB messages carry no length) and counts the rest as opaque", () => {
    const parser = makeRfbClientParser({ skipHandshake: true })
    expect(parser.push(bytes(4, 1, 0, 0, ...be32(1), 99, 1, 2)).map((m) => m.type)).toEqual(["KeyEvent"])
    expect(parser.state()).toEqual({ phase: "unknown", messageType: 99 })
    expect(parser.push(bytes(4, 1, 0, 0, ...be32(1)))).toEqual([])
    expect(parser.opaqueBytes()).toBe(11)
  })

  it("does not buffer a clipboard longer than maxMessageBytes", () => {
    const parser = makeRfbClientParser({ skipHandshake: true, maxMessageBytes: 64 })
    expect(parser.push(bytes(6, 0, 0, 0, ...be32(1_000_000), 1, 2, 3))).toEqual([])
    expect(parser.state()).toEqual({ phase: "unknown", messageType: 6 })
    expect(parser.buffered()).toBe(0)
  })
})
