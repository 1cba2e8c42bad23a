// The view-only input filter at the RFB level: with every client message type the parser knows, a viewer
// without control has its input (KeyEvent, PointerEvent, ClientCutText, QEMU key events) dropped while the
// handshake and every other message pass unchanged and in order, however the stream is cut; control given or
// taken mid-stream applies from the next message; a type the parser cannot read ends a view-only viewer.
import { describe, expect, it } from "@effect/vitest"
import { makeInputFilter } from "../src/internal/vnc/inputFilter.ts"

const bytes = (...parts: ReadonlyArray<number | ReadonlyArray<number>>) => new Uint8Array(parts.flat())
const be16 = (n: number) => [(n >> 8) & 0xff, n & 0xff]
const be32 = (n: number) => [(n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]
const text = (s: string) => [...Buffer.from(s, "latin1")]

/** One sample of every client message type the parser knows, and whether it is user input. */
const samples: ReadonlyArray<readonly [string, Uint8Array, boolean]> = [
  ["SetPixelFormat", bytes(0, 0, 0, 0, 32, 24, 0, 1, ...be16(255), ...be16(255), ...be16(255), 16, 8, 0, 0, 0, 0), false],
  ["SetEncodings", bytes(2, 0, ...be16(3), ...be32(0), ...be32(7), ...be32(-223)), false],
  ["FramebufferUpdateRequest", bytes(3, 1, ...be16(0), ...be16(0), ...be16(1280), ...be16(800)), false],
  ["KeyEvent", bytes(4, 1, 0, 0, ...be32(0x61)), true],
  ["PointerEvent", bytes(5, 1, ...be16(300), ...be16(200)), true],
  ["ClientCutText", bytes(6, 0, 0, 0, ...be32(5), ...text("hello")), true],
  ["ClientCutText (extended)", bytes(6, 0, 0, 0, ...be32(-4), ...be32(0x01000001)), true],
  ["EnableContinuousUpdates", bytes(150, 1, ...be16(0), ...be16(0), ...be16(64), ...be16(48)), false],
  ["ClientFence", bytes(248, 0, 0, 0, ...be32(0x80000002), 3, 1, 2, 3), false],
  ["Xvp", bytes(250, 0, 1, 2), false],
  ["SetDesktopSize", bytes(251, 0, ...be16(1024), ...be16(768), 1, 0, ...be32(0), ...be16(0), ...be16(0), ...be16(1024), ...be16(768), ...be32(0)), false],
  ["Gii", bytes(253, 0x80, ...be16(2), 0, 0), false],
  ["QemuKeyEvent", bytes(255, 0, ...be16(1), ...be32(0xff0d), ...be32(0x1c)), true],
  ["QemuAudio", bytes(255, 1, ...be16(0)), false],
  ["QemuAudio (format)", bytes(255, 1, ...be16(2), 0, 2, ...be32(44100)), false]
]

const handshake = bytes(...text("RFB 003.008\n"), 1, 1)
const handshakeVncAuth = bytes(...text("RFB 003.008\n"), 2, ...new Array(16).fill(9), 0)
const all = bytes(...samples.flatMap(([, b]) => [...b]))
const withoutInput = bytes(...samples.filter(([, , input]) => !input).flatMap(([, b]) => [...b]))

const join = (parts: ReadonlyArray<Uint8Array>) => bytes(...parts.map((p) => [...p]))

/** Pushes `stream` cut at `cuts`; returns what the filter let through, joined. */
const run = (stream: Uint8Array, cuts: ReadonlyArray<number>, mayInput: () => boolean) => {
  const filter = makeInputFilter(mayInput)
  const out: Array<Uint8Array> = []
  let from = 0
  for (const at of [...cuts, stream.length]) {
    const passed = filter.push(stream.subarray(from, at))
    if (passed === undefined) throw new Error("ended")
    out.push(passed)
    from = at
  }
  return { passed: join(out), filter }
}

describe("view-only input filter", () => {
  it("drops every input message type from a viewer without control and passes the handshake and every other type in order", () => {
    const { passed, filter } = run(bytes(...handshake, ...all), [], () => false)
    expect([...passed]).toEqual([...handshake, ...withoutInput])
    expect(Object.fromEntries(filter.dropped())).toEqual({ KeyEvent: 1, PointerEvent: 1, ClientCutText: 2, QemuKeyEvent: 1 })
  })

  it("passes the whole stream unchanged for a viewer with control", () => {
    const stream = bytes(...handshakeVncAuth, ...all)
    const { passed, filter } = run(stream, [], () => true)
    expect([...passed]).toEqual([...stream])
    expect(filter.dropped().size).toBe(0)
  })

  it("gives the same bytes however the stream is cut (every single offset, and byte by byte), with VNC authentication too", () => {
    for (const hs of [handshake, handshakeVncAuth]) {
      const stream = bytes(...hs, ...all)
      const expected = [...hs, ...withoutInput]
      for (let cut = 1; cut < stream.length; cut++) expect([...run(stream, [cut], () => false).passed], `cut at ${cut}`).toEqual(expected)
      const byteByByte = run(stream, Array.from({ length: stream.length - 1 }, (_, i) => i + 1), () => false)
      expect([...byteByByte.passed]).toEqual(expected)
    }
  })

  it("a message is held until its last byte arrives, then forwarded whole", () => {
    const filter = makeInputFilter(() => true)
    expect([...filter.push(handshake)!]).toEqual([...handshake])
    const key = samples.find(([n]) => n === "KeyEvent")![1]
    expect(filter.push(key.subarray(0, 5))!.length).toBe(0)
    expect([...filter.push(key.subarray(5))!]).toEqual([...key])
  })

  it("control given or taken mid-stream applies from the next message", () => {
    let control = false
    const filter = makeInputFilter(() => control)
    const key = samples.find(([n]) => n === "KeyEvent")![1]
    const pointer = samples.find(([n]) => n === "PointerEvent")![1]
    const request = samples.find(([n]) => n === "FramebufferUpdateRequest")![1]
    filter.push(handshake)
    expect([...filter.push(join([key, request]))!]).toEqual([...request])
    control = true
    expect([...filter.push(join([pointer, request]))!]).toEqual([...pointer, ...request])
    control = false
    // Taken while half a pointer event was in flight: the message is judged when it completes.
    expect(filter.push(pointer.subarray(0, 3))!.length).toBe(0)
    expect(filter.push(pointer.subarray(3))!.length).toBe(0)
  })

  it("after a type it cannot parse, the bytes pass while the viewer has control and the filter gives up once it has not", () => {
    let control = true
    const filter = makeInputFilter(() => control)
    filter.push(handshake)
    const unknown = bytes(99, 1, 2, 3)
    const key = samples.find(([n]) => n === "KeyEvent")![1]
    expect([...filter.push(join([key, unknown]))!]).toEqual([...key, ...unknown])
    expect([...filter.push(key)!]).toEqual([...key])
    control = false
    expect(filter.push(key)).toBeUndefined()
    // A view-only viewer sending an unknown type is ended at once (the message before it still passes only if not input).
    const viewOnly = makeInputFilter(() => false)
    viewOnly.push(handshake)
    expect(viewOnly.push(join([samples[2]![1], unknown]))).toBeUndefined()
  })
})
