// The quick start in a real browser: `node packages/e2e/src/quickstart.ts` on a free port with a fresh data
// directory, Debian's chromium driven by playwright-core. Log in, see the agent online, get an error in words
// while the only agent is drained, create a session from the demo template and watch it move to running,
// view it with noVNC (the synthetic desktop checked by the pixels of screenshots), type and click and see
// the desktop change, stop with Ctrl-C (the page says the control plane cannot be reached) and start again on
// the same data and port (the page recovers, the session is still running),
// delete it and see it terminate. Plus the sessions page in a narrow window. Screenshots go to test-output/.
import { afterAll, assert, beforeAll, describe, it } from "@effect/vitest"
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { waitForPromise } from "@streamspace/testbed"
import { decodePng, type Image } from "@streamspace/vnc-testserver"
import { type QuickStartProcess, REPO, startQuickStart } from "./support/quickstartProcess.ts"

const OUTPUT = path.join(REPO, "packages/e2e/test-output/browser")
/** Bound for each wait in the browser; generous because the machine may be busy. */
const WAIT = 20_000

// Colours of vnc-testserver's synthetic desktop (packages/vnc-testserver/src/internal/Desktop.ts).
const BACKGROUND = 0x204060
const TITLE_BAR = 0x102030
const TEXT = 0xf0f0f0
const MARK = 0xff4040

/** Pixels within a small distance of `colour` (the viewer scales the desktop, which blends edges). */
const count = (img: Image, colour: number, area = { x: 0, y: 0, w: img.width, h: img.height }) => {
  const r = (colour >> 16) & 0xff
  const g = (colour >> 8) & 0xff
  const b = colour & 0xff
  let n = 0
  for (let y = area.y; y < Math.min(img.height, area.y + area.h); y++) {
    for (let x = area.x; x < Math.min(img.width, area.x + area.w); x++) {
      const i = (y * img.width + x) * 4
      if (Math.abs(img.data[i]! - r) <= 8 && Math.abs(img.data[i + 1]! - g) <= 8 && Math.abs(img.data[i + 2]! - b) <= 8) n++
    }
  }
  return n
}

/** Produces fresh values until `check` holds on one, and returns it (polled by the one polling helper). */
const until = <A>(what: string, produce: () => Promise<A>, check: (a: A) => boolean, timeout = WAIT): Promise<A> =>
  waitForPromise(what, async () => {
    const a = await produce()
    return check(a) ? { a } : undefined
  }, { timeout }).then((r) => r.a)

describe("the quick start in Chromium", () => {
  let dataDir: string
  let stack: QuickStartProcess
  let browser: Browser
  let page: Page
  let step = 0
  /** Script errors and console errors other than failed requests (which several steps cause on purpose). */
  const pageErrors: Array<string> = []

  const shot = async (name: string, target: Page = page) => {
    mkdirSync(OUTPUT, { recursive: true })
    writeFileSync(path.join(OUTPUT, `${String(++step).padStart(2, "0")}-${name}.png`), await target.screenshot({ fullPage: true }))
  }
  const screen = async (name: string): Promise<Image> => {
    const png = await page.locator("#screen canvas").screenshot()
    mkdirSync(OUTPUT, { recursive: true })
    writeFileSync(path.join(OUTPUT, `${String(++step).padStart(2, "0")}-${name}.png`), png)
    return decodePng(png)
  }
  const banner = () => page.locator("#banner")
  const sessionRow = () => page.locator("tr[data-session]").first()

  beforeAll(async () => {
    rmSync(OUTPUT, { recursive: true, force: true })
    dataDir = mkdtempSync(path.join(tmpdir(), "streamspace-browser-"))
    stack = await startQuickStart({ dataDir })
    browser = await chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--disable-sync", "--no-first-run"]
    })
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    page.setDefaultTimeout(WAIT)
    page.on("pageerror", (e) => pageErrors.push(`pageerror: ${e.message}`))
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`console: ${m.text()}`)
    })
  }, 120_000)

  afterAll(async () => {
    await browser?.close()
    await stack?.stop()
    if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true })
  })

  it("runs a session from login to delete, across a restart", async () => {
    // ---- the banner says what a newcomer needs
    assert.match(stack.output(), /SIMULATED/)
    assert.match(stack.loginUrl, /^http:\/\/127\.0\.0\.1:\d+\/#token=ey/)

    // ---- log in: a wrong token is refused in words, the printed token works
    await page.goto(stack.url)
    await page.getByTestId("token-input").fill("not-a-token")
    await page.getByTestId("login").click()
    await page.getByTestId("token-input").waitFor()
    await until("the refusal", () => banner().innerText(), (t) => /token was not accepted \(token is not a JWT\)/.test(t))
    assert.notMatch(await banner().innerText(), /at .*\(|Error:|undefined/, "no stack trace or internals")
    await shot("login-refused")
    await page.getByTestId("token-input").fill(stack.adminToken)
    await page.getByTestId("login").click()
    await page.getByTestId("create-session").waitFor()
    await shot("sessions-empty")

    // ---- the agent is online; drained, it takes no session and the UI says so in a sentence
    await page.getByRole("link", { name: "Agents", exact: true }).click()
    const agent = page.locator('tr[data-agent="local"]')
    await agent.getByTestId("agent-status").filter({ hasText: "online" }).waitFor()
    assert.strictEqual(await agent.getByTestId("agent-enrollment").innerText(), "approved")
    await shot("agent-online")
    await agent.getByRole("button", { name: "Drain" }).click()
    await agent.getByTestId("agent-status").filter({ hasText: "draining" }).waitFor()
    await page.getByRole("link", { name: "Sessions", exact: true }).click()
    await page.getByTestId("template-select").locator('option[value="demo"]').waitFor({ state: "attached" })
    await page.getByTestId("create-session").click()
    const refusal = await until("the no-agent message", () => banner().innerText(), (t) => /No agent can take a new session/.test(t))
    assert.notMatch(refusal, /at .*\(|Error:|\{|undefined/, "a sentence, not a stack trace or JSON")
    assert.strictEqual(await page.locator("tr[data-session]").count(), 0)
    await shot("no-agent-error")
    await page.getByRole("link", { name: "Agents", exact: true }).click()
    await agent.getByRole("button", { name: "Undrain" }).click()
    await agent.getByTestId("agent-status").filter({ hasText: "online" }).waitFor()

    // ---- templates: a duplicate name is refused in words; a new one is listed and offered for sessions
    await page.getByRole("link", { name: "Templates", exact: true }).click()
    await page.locator("[data-testid=templates] td", { hasText: "streamspace/demo-desktop:latest" }).waitFor()
    const form = page.locator("#tpl")
    await form.locator("[name=name]").fill("demo")
    await form.locator("[name=image]").fill("example/desktop:1")
    await form.getByRole("button", { name: "Add template" }).click()
    const duplicate = await until("the duplicate-template message", () => banner().innerText(), (t) => /already exists/.test(t))
    assert.notMatch(duplicate, /at .*\(|Error:|\{|undefined/)
    await form.locator("[name=name]").fill("second")
    await form.locator("[name=display_name]").fill("Second desktop")
    await form.getByRole("button", { name: "Add template" }).click()
    await page.locator("[data-testid=templates] td", { hasText: "example/desktop:1" }).waitFor()
    await shot("templates")

    // ---- create from the demo template and watch it move through creating to running
    await page.getByRole("link", { name: "Sessions", exact: true }).click()
    await page.getByTestId("template-select").locator('option[value="second"]').waitFor({ state: "attached" })
    await page.getByTestId("template-select").selectOption("demo")
    await page.getByTestId("create-session").click()
    await page.locator('tr[data-session][data-state="creating"] [data-testid=session-progress]').waitFor()
    await shot("session-creating")
    await page.locator('tr[data-session][data-state="running"]').waitFor()
    const sessionId = await sessionRow().getAttribute("data-session")
    assert.match(sessionId ?? "", /^s-/)
    await shot("session-running")

    // ---- the viewer shows the synthetic desktop
    await sessionRow().getByTestId("view-session").click()
    await page.getByTestId("viewer-status").filter({ hasText: "Connected" }).waitFor()
    const desktop = await until("the desktop in the viewer", () => screen("viewer-desktop"), (img) =>
      count(img, BACKGROUND) > img.width * img.height * 0.5 && count(img, TITLE_BAR) > img.width * 4 && count(img, TEXT) > 200)
    assert.isAbove(desktop.width, 300)
    await shot("viewer-page")

    // ---- click and type: a red mark appears and the typed text is drawn
    const canvas = page.locator("#screen canvas")
    const box = (await canvas.boundingBox())!
    await canvas.click({ position: { x: box.width * 0.6, y: box.height * 0.7 } })
    const clicked = await until("the click mark", () => screen("viewer-clicked"), (img) => count(img, MARK) > 20)
    const textBefore = count(clicked, TEXT)
    await page.keyboard.type("hello streamspace typed in chromium")
    const typed = await until("the typed text", () => screen("viewer-typed"), (img) => count(img, TEXT) > textBefore + 300)
    assert.isAbove(count(typed, MARK), 20)

    // ---- Ctrl-C stops cleanly; a second start on the same data shows the session running again
    await page.getByRole("link", { name: "Sessions", exact: true }).click()
    assert.strictEqual(await stack.stop(), 0)
    assert.match(stack.output(), /quick start: stopped/)
    assert.notMatch(stack.output(), /level=(ERROR|FATAL)/i)
    await until("the unreachable message", () => banner().innerText(), (t) => /cannot be reached/.test(t))
    await shot("control-plane-stopped")
    // Same port, same data: the open page recovers by itself and its token is still accepted.
    stack = await startQuickStart({ dataDir, port: Number(new URL(stack.url).port) })
    assert.match(stack.output(), /the demo cluster kept 1 session\(s\) from the last run/)
    await until("the banner to clear", () => banner().isVisible(), (visible) => !visible)
    await page.locator(`tr[data-session="${sessionId}"][data-state="running"]`).waitFor()
    await shot("session-after-restart")
    await page.locator(`tr[data-session="${sessionId}"]`).getByTestId("view-session").click()
    await page.getByTestId("viewer-status").filter({ hasText: "Connected" }).waitFor()
    const again = await until("the desktop after the restart", () => screen("viewer-after-restart"), (img) => count(img, BACKGROUND) > img.width * img.height * 0.5)
    assert.isAbove(count(again, TEXT), 200)

    // ---- delete and watch it terminate
    await page.getByRole("link", { name: "Sessions", exact: true }).click()
    const row = page.locator(`tr[data-session="${sessionId}"]`)
    await row.getByTestId("delete-session").click()
    await page.locator(`tr[data-session="${sessionId}"][data-state="terminated"]`).waitFor()
    assert.strictEqual(await row.getByTestId("delete-session").count(), 0)
    await shot("session-terminated")
    assert.deepStrictEqual(pageErrors, [], "no script errors, CSP violations or other console errors")
  }, 150_000)

  it("shows every session when the list comes in pages (it follows next_cursor)", async () => {
    const paged = await browser.newPage({ viewport: { width: 1280, height: 800 } })
    try {
      paged.setDefaultTimeout(WAIT)
      const fake = (i: number) => ({
        id: `s-page${String(i).padStart(4, "0")}`, user_id: "admin", template: "demo", agent_id: "local", region: null, state: "terminated",
        reason: "deleted", message: null, image: "x", resources: {}, env: {}, persistent_home: false, create_command_id: null,
        delete_command_id: null, created_at: new Date(Date.now() - i * 1000).toISOString(), updated_at: new Date().toISOString()
      })
      const asked: Array<string> = []
      // The real control plane answers everything else; the session list is served in two pages here.
      await paged.route(/\/api\/v1\/sessions\?/, async (route) => {
        const url = new URL(route.request().url())
        asked.push(url.search)
        const second = url.searchParams.get("cursor") === "page-2"
        const sessions = second ? [600, 601, 602].map(fake) : Array.from({ length: 500 }, (_, i) => fake(i))
        await route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify({ sessions, next_cursor: second ? null : "page-2" }) })
      })
      await paged.goto(stack.loginUrl)
      await until("all 503 rows", () => paged.locator("tr[data-session]").count(), (n) => n === 503)
      assert.isTrue(await paged.locator('tr[data-session="s-page0602"]').isVisible())
      assert.includeMembers(asked.slice(0, 2), ["?limit=500", "?limit=500&cursor=page-2"])
    } finally {
      await paged.close()
    }
  }, 60_000)

  it("keeps the sessions page usable in a narrow window", async () => {
    const narrow = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true })
    try {
      narrow.setDefaultTimeout(WAIT)
      await narrow.goto(stack.loginUrl)
      await narrow.getByTestId("create-session").waitFor()
      await narrow.locator("tr[data-session]").first().waitFor()
      await shot("narrow-sessions", narrow)
      // Nothing wider than the window: no sideways scrolling needed to reach the buttons.
      const overflow = await narrow.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)
      assert.isAtMost(overflow, 0)
      for (const el of [narrow.getByTestId("create-session"), narrow.getByTestId("template-select"), narrow.getByRole("link", { name: "Agents", exact: true })]) {
        const b = (await el.boundingBox())!
        assert.isAtLeast(b.x, 0)
        assert.isAtMost(b.x + b.width, 390)
        assert.isAtLeast(b.height, 24, "big enough to tap")
      }
    } finally {
      await narrow.close()
    }
  }, 60_000)
})
