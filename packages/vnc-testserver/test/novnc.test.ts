// noVNC (the browser client the product's viewer uses) in headless Chromium, through a
// WebSocket-to-TCP bridge, against the test server: the screenshot must show the desktop, and
// typing and clicking in the browser must reach the server and change the picture.
// `as any` here reads the test page's own `window.vnc` global, which has no type in the browser context.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { BACKGROUND, MARK, TEXT, TITLE_BAR } from "../src/internal/Desktop.ts"
import { startBridge, type Bridge } from "./bridge.ts"
import { startServer } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"
import { decodePng, type Image } from "../src/png.ts"

const WIDTH = 640
const HEIGHT = 400
/** Bound for every wait on the browser: generous, since the machine may be busy. */
const WAIT = 10_000
const outputDir = path.join(import.meta.dirname, "..", "test-output")

const rgb = (c: number) => [(c >> 16) & 0xff, (c >> 8) & 0xff, c & 0xff]
const at = (img: Image, x: number, y: number) => [...img.data.subarray((y * img.width + x) * 4, (y * img.width + x) * 4 + 3)]
const count = (img: Image, colour: number, area = { x: 0, y: 0, w: img.width, h: img.height }) => {
  const [r, g, b] = rgb(colour)
  let n = 0
  for (let y = area.y; y < area.y + area.h; y++) {
    for (let x = area.x; x < area.x + area.w; x++) {
      const i = (y * img.width + x) * 4
      if (img.data[i] === r && img.data[i + 1] === g && img.data[i + 2] === b) n++
    }
  }
  return n
}

describe("noVNC in headless Chromium", () => {
  let server: Awaited<ReturnType<typeof startServer>>
  let bridge: Bridge
  let browser: Browser
  let page: Page

  const screenshot = async (name: string): Promise<Image> => {
    const png = await page.locator("#screen canvas").screenshot()
    mkdirSync(outputDir, { recursive: true })
    writeFileSync(path.join(outputDir, name), png)
    return decodePng(png)
  }

  /** Reads one pixel of noVNC's canvas (what the browser is showing right now). */
  const canvasPixel = (x: number, y: number): Promise<Array<number>> =>
    page.evaluate(([x, y]) => {
      const canvas = document.querySelector("#screen canvas") as HTMLCanvasElement
      return [...canvas.getContext("2d")!.getImageData(x!, y!, 1, 1).data.subarray(0, 3)]
    }, [x, y])

  /** Counts pixels of one colour inside an area of noVNC's canvas. */
  const canvasCount = (colour: number, area: { x: number; y: number; w: number; h: number }): Promise<number> =>
    page.evaluate(([c, a]) => {
      const canvas = document.querySelector("#screen canvas") as HTMLCanvasElement
      const data = canvas.getContext("2d")!.getImageData(a.x, a.y, a.w, a.h).data
      let n = 0
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] === c[0] && data[i + 1] === c[1] && data[i + 2] === c[2]) n++
      }
      return n
    }, [rgb(colour), area] as const)

  beforeAll(async () => {
    server = await startServer({ width: WIDTH, height: HEIGHT, name: "noVNC session", password: "browser-pw", frameRate: 20 })
    bridge = await startBridge({ host: server.host, port: server.port, width: WIDTH, height: HEIGHT })
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--disable-sync", "--no-first-run"]
    })
    page = await browser.newPage({ viewport: { width: WIDTH + 40, height: HEIGHT + 40 } })
    await page.goto(`${bridge.url}/?password=browser-pw`)
    await page.waitForFunction(() => (window as any).vnc?.connected === true || (window as any).vnc?.disconnected === true, null, { timeout: WAIT })
    assert.isTrue(await page.evaluate(() => (window as any).vnc.connected === true), "noVNC connected")
  }, 30_000)

  afterAll(async () => {
    await browser?.close()
    await bridge?.close()
    await server?.close()
  }, 30_000)

  it("passes VNC Authentication and shows the desktop", async () => {
    assert.strictEqual(await page.evaluate(() => (window as any).vnc.desktopName), "noVNC session")
    await waitForPromise("the first frame on the canvas", async () => (await canvasPixel(WIDTH - 2, HEIGHT - 2)).join() === rgb(BACKGROUND).join(), { timeout: WAIT })
    const img = await screenshot("novnc-desktop.png")
    assert.deepStrictEqual([img.width, img.height], [WIDTH, HEIGHT])
    assert.deepStrictEqual(at(img, WIDTH - 2, HEIGHT - 2), rgb(BACKGROUND))
    assert.deepStrictEqual(at(img, WIDTH - 2, 2), rgb(TITLE_BAR))
    // the session name is written in the title bar, the clock below it
    assert.isAbove(count(img, TEXT, { x: 0, y: 0, w: WIDTH, h: 24 }), 200)
    assert.isAbove(count(img, BACKGROUND), WIDTH * HEIGHT / 2)
  }, 30_000)

  it("a click and typed keys in the browser reach the server and change the picture", async () => {
    const before = await screenshot("novnc-before-input.png")
    const keysLine = { x: 0, y: 56, w: WIDTH, h: 16 }
    const canvas = page.locator("#screen canvas")
    await canvas.click({ position: { x: 400, y: 300 } })
    await waitForPromise("the click on the server", () => server.state().clicks.some((c) => c.x === 400 && c.y === 300 && c.button === 1), { timeout: WAIT })
    await page.keyboard.type("hello noVNC")
    await waitForPromise("the typed text on the server", () => server.state().typedText === "hello noVNC", { timeout: WAIT })
    await waitForPromise("the mark on the canvas", async () => (await canvasPixel(400, 300)).join() === rgb(MARK).join(), { timeout: WAIT })
    // poll the canvas itself (cheap), then take one screenshot
    const textBefore = count(before, TEXT, keysLine)
    await waitForPromise("the text on the canvas", async () => (await canvasCount(TEXT, keysLine)) > textBefore + 100, { timeout: WAIT })
    const after = await screenshot("novnc-after-input.png")
    assert.deepStrictEqual(at(after, 400, 300), rgb(MARK))
    assert.notDeepEqual(at(before, 400, 300), rgb(MARK))
  }, 30_000)

  it("clipboard text flows both ways", async () => {
    server.setServerCutText("from the desktop")
    await page.waitForFunction(() => (window as any).vnc.clipboard === "from the desktop", null, { timeout: WAIT })
    await page.evaluate(() => (window as any).vnc.rfb.clipboardPasteFrom("from the browser"))
    await waitForPromise("ClientCutText on the server", () => server.state().clientCutText === "from the browser", { timeout: WAIT })
  }, 30_000)

  it("a second viewer with the wrong password is refused without disturbing the first", async () => {
    // a second noVNC client in the same page (the modules are loaded already)
    const reason = await page.evaluate(() =>
      new Promise<string>((resolve) => {
        const vnc = (window as any).vnc
        const div = document.createElement("div")
        document.body.appendChild(div)
        const other = new vnc.RFB(div, "ws://" + location.host + "/websockify", { credentials: { password: "nope" } })
        other.addEventListener("securityfailure", (e: any) => resolve(String(e.detail.reason ?? e.detail.status)))
      })
    )
    assert.match(reason, /Authentication failed/)
    await waitForPromise("the failure in the log", () => server.logs.some((l) => l.message === "authentication failed"), { timeout: WAIT })
    await page.keyboard.type("!")
    await waitForPromise("more typed text", () => server.state().typedText === "hello noVNC!", { timeout: WAIT })
    assert.isTrue(await page.evaluate(() => (window as any).vnc.disconnected === false))
  }, 30_000)
})
