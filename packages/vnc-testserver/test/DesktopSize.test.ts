// Desktop resizing: ExtendedDesktopSize announced to a viewer that lists it, SetDesktopSize honoured (the shared
// desktop gets the new size, the model kept, every viewer told why), invalid layouts refused with a status, and
// the classic DesktopSize pseudo-encoding for viewers that only know that one.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { waitForPromise } from "@streamspace/testbed"
import { ENCODING_DESKTOP_SIZE, ENCODING_EXTENDED_DESKTOP_SIZE, ENCODING_RAW, type FramebufferUpdate, type RfbClient } from "../src/index.ts"
import { BACKGROUND } from "../src/internal/Desktop.ts"
import { connect, startServer } from "./helpers.ts"

type Server = Awaited<ReturnType<typeof startServer>>

/** Requests updates until one carries a size rectangle; returns that update. */
const sizeUpdate = (c: RfbClient, what: string) =>
  waitForPromise(what, async () => {
    const u: FramebufferUpdate = await c.update(true)
    return u.rects.some((r) => r.encoding < 0) ? u : undefined
  }, { interval: 0 })

describe("desktop resizing", () => {
  let server: Server
  beforeAll(async () => {
    server = await startServer({ width: 320, height: 200 })
  })
  afterAll(() => server.close())

  it("announces ExtendedDesktopSize, resizes on SetDesktopSize and tells both viewers why, keeping the desktop's state", async () => {
    const a = await connect(server)
    const b = await connect(server)
    try {
      a.setEncodings([ENCODING_RAW, ENCODING_EXTENDED_DESKTOP_SIZE])
      b.setEncodings([ENCODING_RAW, ENCODING_EXTENDED_DESKTOP_SIZE])
      const announced = await a.update(false)
      assert.deepInclude(announced.rects, { x: 0, y: 0, w: 320, h: 200, encoding: ENCODING_EXTENDED_DESKTOP_SIZE }, "reason 0 (server), status 0, the current size")
      await b.update(false)
      a.type("kept")
      await waitForPromise("the typed text", () => server.state().typedText === "kept")

      a.setDesktopSize(400, 300)
      const own = await sizeUpdate(a, "a's resize answer")
      assert.deepStrictEqual(own.rects[0], { x: 1, y: 0, w: 400, h: 300, encoding: ENCODING_EXTENDED_DESKTOP_SIZE }, "reason 1 (this client), status 0")
      assert.deepInclude(own.rects.slice(1), { x: 0, y: 0, w: 400, h: 300, encoding: ENCODING_RAW }, "then the whole new framebuffer")
      assert.strictEqual(a.width, 400)
      assert.strictEqual(a.height, 300)
      assert.deepStrictEqual(a.pixel(399, 299), [(BACKGROUND >> 16) & 0xff, (BACKGROUND >> 8) & 0xff, BACKGROUND & 0xff])
      const other = await sizeUpdate(b, "b told of the resize")
      assert.deepStrictEqual(other.rects[0], { x: 2, y: 0, w: 400, h: 300, encoding: ENCODING_EXTENDED_DESKTOP_SIZE }, "reason 2 (another client)")
      assert.strictEqual(b.width, 400)

      const s = server.state()
      assert.strictEqual(s.width, 400)
      assert.strictEqual(s.height, 300)
      assert.strictEqual(s.typedText, "kept")
      assert.isTrue(server.logs.some((l) => l.message === "desktop resized from 320x200 to 400x300"))
    } finally {
      a.close()
      b.close()
    }
  })

  it("refuses an empty size, an oversized one and a screen outside the framebuffer with a status, keeping the size", async () => {
    const c = await connect(server)
    try {
      c.setEncodings([ENCODING_RAW, ENCODING_EXTENDED_DESKTOP_SIZE])
      await c.update(false)
      const before = { w: c.width, h: c.height }
      const cases: Array<[() => void, number, RegExp]> = [
        [() => c.setDesktopSize(0, 100), 3, /size 0x100 is empty/],
        [() => c.setDesktopSize(9000, 100), 2, /exceeds 8192/],
        [() => c.setDesktopSize(300, 200, [{ id: 1, x: 100, y: 0, w: 300, h: 200 }]), 3, /screen 1 lies outside 300x200/],
        [() => c.setDesktopSize(300, 200, []), 3, /no screen/]
      ]
      for (const [send, status, log] of cases) {
        send()
        const u = await sizeUpdate(c, `the refusal (${log})`)
        assert.deepStrictEqual(u.rects[0], { x: 1, y: status, w: before.w, h: before.h, encoding: ENCODING_EXTENDED_DESKTOP_SIZE })
        assert.strictEqual(c.width, before.w)
        assert.isTrue(server.logs.some((l) => l.level === "warn" && log.test(l.message)), String(log))
      }
      assert.strictEqual(server.state().width, before.w)
    } finally {
      c.close()
    }
  })

  it("tells a viewer that only knows DesktopSize the new size, and serves a viewer that knows neither (clipped)", async () => {
    const a = await connect(server)
    const old = await connect(server)
    const neither = await connect(server)
    try {
      a.setEncodings([ENCODING_RAW, ENCODING_EXTENDED_DESKTOP_SIZE])
      old.setEncodings([ENCODING_RAW, ENCODING_DESKTOP_SIZE])
      neither.setEncodings([ENCODING_RAW])
      await neither.update(false)
      await a.update(false)
      await old.update(false)
      a.setDesktopSize(256, 160)
      await sizeUpdate(a, "the resize")
      const told = await sizeUpdate(old, "DesktopSize to the old viewer")
      assert.deepStrictEqual(told.rects[0], { x: 0, y: 0, w: 256, h: 160, encoding: ENCODING_DESKTOP_SIZE })
      assert.strictEqual(old.width, 256)
      // A new viewer gets the new size in ServerInit.
      const late = await connect(server)
      assert.deepStrictEqual([late.width, late.height], [256, 160])
      late.close()
      // Without a size encoding: updates clipped to the new size, no size rectangle, the connection kept.
      const clipped = await neither.update(false)
      assert.isTrue(clipped.rects.every((r) => r.encoding === ENCODING_RAW && r.x + r.w <= 256 && r.y + r.h <= 160))
    } finally {
      a.close()
      old.close()
      neither.close()
    }
  })
})
