// Protocol-level tests of the RFB server through the package's own RfbClient and raw sockets.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { BACKGROUND, MARK, TEXT } from "../src/internal/Desktop.ts"
import {
  defaultPixelFormat,
  ENCODING_HEXTILE,
  ENCODING_RAW,
  ENCODING_RRE,
  type PixelFormat,
  type RfbClient
} from "../src/index.ts"
import { vncAuthResponse } from "../src/internal/vncAuth.ts"
import { connect, rawConnect, startServer, updateUntil } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

const rgb = (c: number): [number, number, number] => [(c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff]

/** Rows of a 320x200 desktop that never change without input: the title bar and everything below the clock line. */
const staticRow = (y: number) => y < 14 || y >= 28

const sameStaticPixels = (a: RfbClient, b: RfbClient, tolerance = [0, 0, 0]) => {
  for (let y = 0; y < a.height; y++) {
    if (!staticRow(y)) continue
    for (let x = 0; x < a.width; x++) {
      const p = a.pixel(x, y)
      const q = b.pixel(x, y)
      for (let k = 0; k < 3; k++) {
        if (Math.abs(p[k]! - q[k]!) > tolerance[k]!) return `pixel ${x},${y}: ${p} vs ${q}`
      }
    }
  }
  return true
}

const countColour = (c: RfbClient, colour: number, area = { x: 0, y: 0, w: c.width, h: c.height }) => {
  const [r, g, b] = rgb(colour)
  let n = 0
  for (let y = area.y; y < area.y + area.h; y++) {
    for (let x = area.x; x < area.x + area.w; x++) {
      const p = c.pixel(x, y)
      if (p[0] === r && p[1] === g && p[2] === b) n++
    }
  }
  return n
}

describe("handshake", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  beforeAll(async () => {
    server = await startServer({ name: "handshake-desktop" })
  })
  afterAll(() => server.close())

  for (const version of ["3.3", "3.7", "3.8"] as const) {
    it(`RFB ${version} with security None reaches ServerInit`, async () => {
      const c = await connect(server, { version })
      assert.strictEqual(c.version, version)
      assert.strictEqual(c.name, "handshake-desktop")
      assert.deepStrictEqual([c.width, c.height], [320, 200])
      assert.deepStrictEqual(c.serverPixelFormat, defaultPixelFormat)
      await c.update(false)
      assert.deepStrictEqual(c.pixel(c.width - 1, c.height - 1), rgb(BACKGROUND))
      c.close()
    })
  }

  it("offers exactly security type None in 3.8 and sends SecurityResult OK", async () => {
    const raw = await rawConnect(server)
    assert.strictEqual((await raw.take(12)).toString(), "RFB 003.008\n")
    raw.socket.write("RFB 003.008\n")
    assert.deepStrictEqual([...(await raw.take(2))], [1, 1])
    raw.socket.write(Buffer.from([1]))
    assert.strictEqual((await raw.take(4)).readUInt32BE(0), 0)
    raw.socket.write(Buffer.from([1]))
    const init = await raw.take(24)
    assert.strictEqual(init.readUInt32BE(20), "handshake-desktop".length)
    raw.socket.destroy()
  })

  it("treats an unknown minor version (3.5) as 3.3: a u32 security type, no list", async () => {
    const raw = await rawConnect(server)
    await raw.take(12)
    raw.socket.write("RFB 003.005\n")
    assert.strictEqual((await raw.take(4)).readUInt32BE(0), 1)
    raw.socket.write(Buffer.from([1]))
    assert.strictEqual((await raw.take(4)).readUInt16BE(0), 320)
    raw.socket.destroy()
  })

  it("refuses a security type it did not offer (3.8 gives a reason)", async () => {
    const raw = await rawConnect(server)
    await raw.take(12)
    raw.socket.write("RFB 003.008\n")
    await raw.take(2)
    raw.socket.write(Buffer.from([2]))
    const result = await raw.take(8)
    assert.strictEqual(result.readUInt32BE(0), 1)
    assert.match((await raw.take(result.readUInt32BE(4))).toString(), /security type 2 not offered/)
    await raw.waitClosed()
  })
})

describe("VNC Authentication", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  beforeAll(async () => {
    server = await startServer({ password: "s3cret!!longer" })
  })
  afterAll(() => server.close())

  it("computes the classic VNC DES response (bit-reversed key bytes)", () => {
    // the value noVNC's own DES implementation (core/crypto/des.js) gives for password "password"
    // and the challenge 00 01 .. 0f
    const challenge = Uint8Array.from({ length: 16 }, (_, i) => i)
    const a = vncAuthResponse("password", challenge)
    assert.strictEqual(a.toString("hex"), "b866924125c8eebb9debc1db61c538e2")
    // only the first 8 bytes of the password count
    assert.deepStrictEqual(vncAuthResponse("password-and-more", challenge), a)
    assert.notDeepEqual(vncAuthResponse("passwore", challenge), a)
  })

  for (const version of ["3.3", "3.7", "3.8"] as const) {
    it(`RFB ${version}: the right password gets in`, async () => {
      const c = await connect(server, { version, password: "s3cret!!" })
      await c.update(false)
      assert.deepStrictEqual(c.pixel(0, c.height - 1), rgb(BACKGROUND))
      c.close()
    })

    it(`RFB ${version}: a wrong password is refused${version === "3.8" ? " with a reason" : ""} and logged`, async () => {
      const before = server.logs.filter((l) => l.message === "authentication failed").length
      const err = await connect(server, { version, password: "wrong" }).then(() => undefined, (e: Error) => e)
      assert.instanceOf(err, Error)
      assert.match(err.message, version === "3.8" ? /security handshake failed: Authentication failed/ : /security handshake failed/)
      await waitForPromise("the log line", () => server.logs.filter((l) => l.message === "authentication failed").length > before)
    })
  }

  it("a client without a password cannot pass", async () => {
    const err = await connect(server).then(() => undefined, (e: Error) => e)
    assert.match(String(err), /requires VNC Authentication/)
  })
})

describe("pixel formats", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  let reference: RfbClient
  beforeAll(async () => {
    server = await startServer()
    reference = await connect(server)
    await reference.update(false)
  })
  afterAll(async () => {
    reference.close()
    await server.close()
  })

  const formats: Array<[string, PixelFormat]> = [
    ["32 bpp little-endian (server native)", defaultPixelFormat],
    ["32 bpp big-endian", { ...defaultPixelFormat, bigEndian: true }],
    ["32 bpp little-endian, red in the low byte (noVNC)", { ...defaultPixelFormat, redShift: 0, blueShift: 16 }],
    ["16 bpp RGB565 little-endian", { bitsPerPixel: 16, depth: 16, bigEndian: false, trueColour: true, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0 }],
    ["16 bpp RGB565 big-endian", { bitsPerPixel: 16, depth: 16, bigEndian: true, trueColour: true, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0 }],
    ["16 bpp RGB555 big-endian", { bitsPerPixel: 16, depth: 15, bigEndian: true, trueColour: true, redMax: 31, greenMax: 31, blueMax: 31, redShift: 10, greenShift: 5, blueShift: 0 }],
    ["8 bpp BGR233", { bitsPerPixel: 8, depth: 8, bigEndian: false, trueColour: true, redMax: 7, greenMax: 7, blueMax: 3, redShift: 0, greenShift: 3, blueShift: 6 }]
  ]

  for (const [label, pf] of formats) {
    for (const encoding of [ENCODING_RAW, ENCODING_RRE, ENCODING_HEXTILE]) {
      it(`${label}, ${encoding === ENCODING_RAW ? "Raw" : encoding === ENCODING_RRE ? "RRE" : "Hextile"}: decodes to the same picture`, async () => {
        const c = await connect(server)
        c.setPixelFormat(pf)
        c.setEncodings([encoding])
        const u = await c.update(false)
        assert.strictEqual(u.rects[0]!.encoding, encoding)
        if (encoding === ENCODING_RAW) assert.strictEqual(u.bytes, 4 + 12 + 320 * 200 * (pf.bitsPerPixel / 8))
        // quantisation error of each channel: half a step of its max
        const tol = [pf.redMax, pf.greenMax, pf.blueMax].map((m) => Math.ceil(255 / m / 2))
        assert.strictEqual(sameStaticPixels(c, reference, tol), true)
        c.close()
      })
    }
  }

  it("refuses a colour-map pixel format and closes only that connection", async () => {
    const raw = await rawConnect(server)
    await raw.take(12)
    raw.socket.write("RFB 003.008\n")
    await raw.take(2)
    raw.socket.write(Buffer.from([1]))
    await raw.take(4)
    raw.socket.write(Buffer.from([1]))
    await raw.take(24 + 4 + 0) // ServerInit (name "StreamSpace test desktop" follows)
    const msg = Buffer.alloc(20)
    msg[4] = 8 // bpp 8, trueColour 0
    raw.socket.write(msg)
    await raw.waitClosed()
    await waitForPromise("the log line", () => server.logs.some((l) => /colour-map pixel formats are not supported/.test(l.message)))
    await reference.update(true)
  })
})

describe("encodings and updates", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  beforeAll(async () => {
    server = await startServer()
  })
  afterAll(() => server.close())

  it("Raw, RRE and Hextile decode to the same desktop; the compact ones are much smaller", async () => {
    const sizes: Record<number, number> = {}
    const clients: Array<RfbClient> = []
    for (const encoding of [ENCODING_RAW, ENCODING_RRE, ENCODING_HEXTILE]) {
      const c = await connect(server)
      c.setEncodings([encoding])
      const u = await c.update(false)
      assert.deepStrictEqual(u.rects.map((r) => [r.x, r.y, r.w, r.h, r.encoding]), [[0, 0, 320, 200, encoding]])
      sizes[encoding] = u.bytes
      clients.push(c)
    }
    assert.strictEqual(sameStaticPixels(clients[0]!, clients[1]!), true)
    assert.strictEqual(sameStaticPixels(clients[0]!, clients[2]!), true)
    assert.isBelow(sizes[ENCODING_RRE]!, sizes[ENCODING_RAW]! / 10)
    assert.isBelow(sizes[ENCODING_HEXTILE]!, sizes[ENCODING_RAW]! / 10)
    assert.isAbove(countColour(clients[2]!, TEXT), 100) // the title text is drawn
    for (const c of clients) c.close()
  })

  it("uses the client's first supported encoding; Raw without SetEncodings", async () => {
    const a = await connect(server)
    assert.strictEqual((await a.update(false)).rects[0]!.encoding, ENCODING_RAW)
    a.setEncodings([16, 7, -239, ENCODING_RRE, ENCODING_HEXTILE]) // ZRLE, Tight, a pseudo-encoding: not supported
    assert.strictEqual((await a.update(false)).rects[0]!.encoding, ENCODING_RRE)
    a.close()
  })

  it("a full request sends the whole area; incremental ones send only what changed", async () => {
    const c = await connect(server)
    c.setEncodings([ENCODING_HEXTILE])
    const full = await c.update(false)
    assert.deepStrictEqual(full.rects.map((r) => [r.x, r.y, r.w, r.h]), [[0, 0, 320, 200]])
    // the clock line changes every frame, so an incremental update comes with just those cells
    const inc = await c.update(true)
    const area = inc.rects.reduce((n, r) => n + r.w * r.h, 0)
    assert.isAbove(area, 0)
    assert.isBelow(area, 320 * 200 / 10)
    for (const r of inc.rects) assert.isTrue(r.y >= 14 && r.y + r.h <= 28, `rect ${JSON.stringify(r)} outside the clock line`)
    c.close()
  })

  it("a partial full request sends exactly that area", async () => {
    const c = await connect(server)
    const u = await c.update(false, { x: 10, y: 20, w: 30, h: 40 })
    assert.deepStrictEqual(u.rects.map((r) => [r.x, r.y, r.w, r.h]), [[10, 20, 30, 40]])
    // clipped to the framebuffer
    const v = await c.update(false, { x: 300, y: 190, w: 100, h: 100 })
    assert.deepStrictEqual(v.rects.map((r) => [r.x, r.y, r.w, r.h]), [[300, 190, 20, 10]])
    c.close()
  })

  it("an incremental request for a quiet area is answered only once something there changes", async () => {
    const c = await connect(server)
    await c.update(false)
    const quiet = { x: 0, y: 120, w: 320, h: 80 }
    c.requestUpdate(true, quiet)
    let got = false
    const next = c.nextUpdate().then((u) => {
      got = true
      return u
    })
    const frame = server.state().frame
    await waitForPromise("three more frames", () => server.state().frame >= frame + 3)
    assert.isFalse(got)
    c.click(200, 160)
    const u = await next
    for (const r of u.rects) {
      assert.isTrue(r.y >= 120, `rect ${JSON.stringify(r)} outside the requested area`)
    }
    assert.deepStrictEqual(c.pixel(200, 160), rgb(MARK))
    c.close()
  })
})

describe("input", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  beforeAll(async () => {
    server = await startServer()
  })
  afterAll(() => server.close())

  it("typed keys reach the desktop state and change the drawn keys line", async () => {
    const c = await connect(server)
    c.setEncodings([ENCODING_HEXTILE])
    await c.update(false)
    const keysLine = { x: 0, y: 28, w: 320, h: 12 }
    const before = countColour(c, TEXT, keysLine)
    c.type("Hello, VNC")
    c.key(0xff08, true) // BackSpace
    c.key(0xff08, false)
    await waitForPromise("typed text", () => server.state().typedText === "Hello, VN")
    await updateUntil(c, "the keys line to show the text", () => countColour(c, TEXT, keysLine) > before + 50)
    assert.deepStrictEqual(server.state().keys.slice(0, 2), [{ keysym: 0x48, down: true }, { keysym: 0x48, down: false }])
    c.close()
  })

  it("a click leaves a mark where it happened; the pointer and buttons are recorded", async () => {
    const c = await connect(server)
    await c.update(false)
    assert.notDeepEqual(c.pixel(250, 150), rgb(MARK))
    c.pointer(250, 150, 0)
    c.pointer(250, 150, 4) // right button down
    c.pointer(251, 151, 4)
    c.pointer(251, 151, 0)
    await waitForPromise("the click", () => server.state().clicks.some((k) => k.x === 250 && k.y === 150 && k.button === 3))
    assert.deepStrictEqual(server.state().pointer, { x: 251, y: 151, buttonMask: 0 })
    await updateUntil(c, "the mark", () => c.pixel(250, 150)[0] === 255)
    assert.deepStrictEqual(c.pixel(250, 150), rgb(MARK))
    assert.deepStrictEqual(c.pixel(250 + 3, 150), rgb(MARK))
    assert.deepStrictEqual(c.pixel(253, 153), rgb(BACKGROUND)) // a cross, not a square
    c.close()
  })

  it("pointer positions are clamped to the framebuffer", async () => {
    const c = await connect(server)
    c.click(5000, 5000)
    await waitForPromise("the click", () => server.state().clicks.some((k) => k.x === 319 && k.y === 199))
    c.close()
  })

  it("ClientCutText reaches the state; ServerCutText reaches every viewer", async () => {
    const a = await connect(server)
    const b = await connect(server)
    a.cutText("copied from the viewer")
    await waitForPromise("client cut text", () => server.state().clientCutText === "copied from the viewer")
    await waitForPromise("both viewers", () => server.state().connections >= 2)
    server.setServerCutText("copied on the desktop")
    assert.strictEqual(await a.waitForCutText(), "copied on the desktop")
    assert.strictEqual(await b.waitForCutText(), "copied on the desktop")
    a.close()
    b.close()
  })
})

describe("bad input closes only that connection", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  let bystander: RfbClient
  beforeAll(async () => {
    server = await startServer()
    bystander = await connect(server)
    await bystander.update(false)
  })
  afterAll(async () => {
    bystander.close()
    await server.close()
  })

  const handshaken = async () => {
    const raw = await rawConnect(server)
    await raw.take(12)
    raw.socket.write("RFB 003.008\n")
    await raw.take(2)
    raw.socket.write(Buffer.from([1]))
    await raw.take(4)
    raw.socket.write(Buffer.from([1]))
    const init = await raw.take(24)
    await raw.take(init.readUInt32BE(20))
    return raw
  }

  const expectClosedAndLogged = async (raw: Awaited<ReturnType<typeof rawConnect>>, pattern: RegExp) => {
    await raw.waitClosed()
    await waitForPromise(`a log line matching ${pattern}`, () => server.logs.some((l) => l.level === "warn" && pattern.test(l.message)))
    // the other viewer keeps working
    const u = await bystander.update(false)
    assert.strictEqual(u.rects.length, 1)
  }

  it("a wrong version string", async () => {
    const raw = await rawConnect(server)
    await raw.take(12)
    raw.socket.write("HELLO VNC!!\n")
    await expectClosedAndLogged(raw, /bad protocol version "HELLO VNC!!\\n"/)
  })

  it("an HTTP request instead of RFB is refused at once", async () => {
    const raw = await rawConnect(server)
    raw.socket.write("GET / HTTP/1.1\r\n\r\n")
    await expectClosedAndLogged(raw, /bad protocol version "GET /)
  })

  it("an unknown message type", async () => {
    const raw = await handshaken()
    raw.socket.write(Buffer.from([99, 0, 0, 0]))
    await expectClosedAndLogged(raw, /unknown client message type 99/)
  })

  it("a truncated message", async () => {
    const raw = await handshaken()
    raw.socket.end(Buffer.from([3, 0, 0, 0, 0])) // half a FramebufferUpdateRequest, then end of stream
    await expectClosedAndLogged(raw, /truncated message \(5 bytes pending/)
  })

  it("a truncated handshake", async () => {
    const raw = await rawConnect(server)
    await raw.take(12)
    raw.socket.end("RFB 003")
    await expectClosedAndLogged(raw, /truncated handshake/)
  })

  it("an oversized ClientCutText", async () => {
    const raw = await handshaken()
    const msg = Buffer.alloc(8)
    msg[0] = 6
    msg.writeUInt32BE(0x7fffffff, 4)
    raw.socket.write(msg)
    await expectClosedAndLogged(raw, /ClientCutText length 2147483647/)
  })

  it("an unsupported bits-per-pixel value", async () => {
    const raw = await handshaken()
    const msg = Buffer.alloc(20)
    msg[4] = 24
    msg[7] = 1
    raw.socket.write(msg)
    await expectClosedAndLogged(raw, /unsupported bits-per-pixel 24/)
  })
})

describe("sizes", () => {
  for (const [w, h] of [[1, 1], [7, 5], [100, 30], [17, 300]]) {
    it(`a ${w}x${h} desktop serves valid full and incremental updates`, async () => {
      const server = await startServer({ width: w, height: h })
      const c = await connect(server)
      c.setEncodings([ENCODING_HEXTILE])
      await c.update(false)
      c.type("x")
      c.click(w - 1, h - 1)
      await waitForPromise("the input", () => server.state().clicks.length === 1 && server.state().typedText === "x")
      // the client rejects any rectangle outside its framebuffer
      await updateUntil(c, "the click mark", () => c.pixel(w - 1, h - 1)[0] === 255)
      assert.deepStrictEqual(c.pixel(w - 1, h - 1), rgb(MARK))
      c.close()
      await server.close()
    })
  }
})

describe("frame rate", () => {
  it.effect("paces incremental updates: one per frame tick, none in between", () =>
    Effect.gen(function*() {
      const clock = yield* Effect.clockWith(Effect.succeed)
      const server = yield* Effect.promise(() => startServer({ frameRate: 20, clock }))
      const c = yield* Effect.promise(() => connect(server))
      yield* Effect.promise(() => c.update(false)) // a full update is answered at once
      for (let i = 0; i < 5; i++) {
        c.requestUpdate(true)
        let answered = false
        const next = c.nextUpdate().then(() => (answered = true))
        yield* TestClock.adjust("49 millis")
        yield* Effect.promise(() => new Promise((r) => setTimeout(r, 30))) // real time for an early answer to arrive
        assert.isFalse(answered, `update ${i + 1} waits for the next 50 ms tick`)
        yield* TestClock.adjust("1 millis")
        yield* Effect.promise(() => next)
      }
      assert.strictEqual(server.state().frame, 1 + 5, "the first frame is drawn at start, then one per tick")
      c.close()
      yield* Effect.promise(() => server.close())
    }))
})

describe("bandwidth mode", () => {
  it("answers every request, incremental or not, with the whole requested area", async () => {
    const server = await startServer({ bandwidthMode: true, frameRate: 1 })
    const c = await connect(server)
    c.setEncodings([ENCODING_RAW])
    for (let i = 0; i < 5; i++) c.requestUpdate(true)
    for (let i = 0; i < 5; i++) {
      const u = await c.nextUpdate()
      assert.deepStrictEqual(u.rects.map((r) => [r.x, r.y, r.w, r.h]), [[0, 0, 320, 200]])
      assert.strictEqual(u.bytes, 4 + 12 + 320 * 200 * 4)
    }
    c.close()
    await server.close()
  })
})
