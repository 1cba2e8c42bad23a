// The web viewer's features in Chromium (playwright-core, Debian's chromium) against the control plane, a real
// agent and kube-testserver in this process, every session's VNC being the cluster's vnc-testserver (whose state
// says what reached the desktop): the desktop follows the browser window (SetDesktopSize), the status shows frame
// rate and round trip, clipboard both ways through the panel, Ctrl+Alt+Del from the keys menu, a template with the
// clipboard upload off (the proxy drops the text: the desktop never gets it), the viewer reconnecting by itself
// after the agent's link drops (a viewer opened meanwhile is told the agent is offline at once), and "session
// ended" when the session is deleted.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { join } from "node:path"
import type { Page } from "playwright-core"
import { waitFor } from "@streamspace/testbed"
import { launchChromium, p, screenshots } from "./support/chromium.ts"
import * as S from "./support/stack.ts"

/** Bound for each wait in the browser; generous because the machine may be busy. */
const WAIT = 30_000

const browser = launchChromium

const shot = screenshots("browser-viewer")
const status = (page: Page) => page.locator("[data-testid=viewer-status]")
const waitState = (page: Page, state: string, text?: RegExp) =>
  p(() => status(page).and(page.locator(`[data-state=${state}]`)).filter(text === undefined ? {} : { hasText: text }).waitFor({ timeout: WAIT }))
const until = (what: string, check: () => boolean) => waitFor(what, Effect.sync(check), { timeout: WAIT })

const XK_CONTROL_L = 0xffe3
const XK_ALT_L = 0xffe9
const XK_DELETE = 0xffff
const XK_ESCAPE = 0xff1b

describe("the web viewer", () => {
  it.live("resizes the desktop, shows fps and round trip, clipboard both ways (upload blocked by a template), keys, reconnects, says when the session ended", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane()
      const env = S.agentEnv(cluster, cp.wsUrl, "agent-v")
      let agent = yield* S.startApprovedAgent(cp, env)
      const token = S.userToken("vic")
      const vic = S.api(cp.url, token)
      const b = yield* browser
      // The admin sets the clipboard switch in the templates form.
      const admin = yield* p(() => b.newPage({ viewport: { width: 1300, height: 800 } }))
      yield* p(() => admin.goto(`${cp.url}/#token=${S.adminToken()}`))
      yield* p(() => admin.goto(`${cp.url}/#/templates`))
      const form = admin.locator("#tpl")
      yield* p(() => form.locator("[name=name]").fill("noupload"))
      yield* p(() => form.locator("[name=image]").fill("streamspace/demo-desktop:latest"))
      yield* p(() => form.getByTestId("template-clipboard").selectOption("download"))
      yield* p(() => form.getByRole("button", { name: "Add template" }).click())
      yield* p(() => admin.locator("[data-testid=templates] tr", { hasText: "noupload" }).getByTestId("template-clipboard-cell").filter({ hasText: "desktop → browser" }).waitFor({ timeout: WAIT }))
      assert.deepStrictEqual((yield* cp.admin.get("/templates/noupload")).body.clipboard, { upload: false, download: true })
      yield* p(() => admin.close())
      yield* cp.admin.post("/templates", { name: "nodownload", image: "streamspace/demo-desktop:latest", clipboard: { download: false } })
      const session = (yield* vic.post("/sessions", { template: "demo" })).body
      const locked = (yield* vic.post("/sessions", { template: "noupload" })).body
      const quiet = (yield* vic.post("/sessions", { template: "nodownload" })).body
      yield* S.waitForSession(vic, session.id, ["running"])
      yield* S.waitForSession(vic, locked.id, ["running"])
      yield* S.waitForSession(vic, quiet.id, ["running"])

      const errors: Array<string> = []
      // The async Clipboard API needs these permissions (Chromium asks the user otherwise; the panel is the fallback).
      const context = yield* p(() => b.newContext({ viewport: { width: 1000, height: 700 }, permissions: ["clipboard-read", "clipboard-write"] }))
      const open = (id: string) =>
        p(async () => {
          const page = await context.newPage()
          page.on("pageerror", (e) => errors.push(e.message))
          await page.goto(`${cp.url}/#token=${token}`)
          await page.locator("[data-testid=sessions]").waitFor({ timeout: WAIT })
          await page.goto(`${cp.url}/#/sessions/${id}/view`)
          return page
        })
      const page = yield* open(session.id)
      yield* waitState(page, "connected")
      const vnc = cluster.vnc

      // ---- resize: the desktop takes the size of the viewer's screen area, and follows the window
      const screenSize = () => p(() => page.locator("#screen").evaluate((el) => ({ w: Math.floor(el.clientWidth), h: Math.floor(el.clientHeight) })))
      const first = yield* screenSize()
      yield* waitFor("the desktop at the screen's size", Effect.map(vnc.state, (s) => s.width === first.w && s.height === first.h), { timeout: WAIT })
      yield* p(() => page.setViewportSize({ width: 800, height: 560 }))
      const second = yield* screenSize()
      assert.notDeepEqual(second, first)
      yield* waitFor("the desktop follows the window", Effect.map(vnc.state, (s) => s.width === second.w && s.height === second.h), { timeout: WAIT })
      yield* shot(page, "01-resized")

      // ---- status: frame rate and round trip
      const stats = page.getByTestId("viewer-stats")
      yield* p(() => page.locator("[data-testid=viewer-stats][data-fps]").waitFor({ timeout: WAIT }))
      const fps = Number(yield* p(() => stats.getAttribute("data-fps")))
      const rtt = Number(yield* p(() => stats.getAttribute("data-rtt")))
      assert.isAtLeast(fps, 0)
      assert.isAtLeast(rtt, 0)
      assert.match(yield* p(() => stats.innerText()), /^[\d.]+ fps · \d+ ms$/)

      // ---- clipboard: desktop -> browser (panel), browser -> desktop (Send)
      yield* p(() => page.getByTestId("clipboard-button").click())
      yield* vnc.setServerCutText("copied on the desktop")
      yield* p(() => page.waitForFunction(() => document.querySelector<HTMLTextAreaElement>("[data-testid=clipboard-from-desktop]")?.value === "copied on the desktop", undefined, { timeout: WAIT }))
      // ... and on this computer's clipboard, where the browser allows it
      yield* p(() => page.waitForFunction(() => navigator.clipboard.readText().then((t) => t === "copied on the desktop"), undefined, { timeout: WAIT }))
      // The local clipboard goes to the desktop when the desktop gets focus.
      yield* p(() => page.evaluate(() => navigator.clipboard.writeText("from the local clipboard")))
      yield* p(() => page.getByTestId("viewer-stats").click())
      yield* p(() => page.locator("#screen canvas").click({ position: { x: 5, y: 5 } }))
      yield* waitFor("the local clipboard on the desktop", Effect.map(vnc.state, (s) => s.clientCutText === "from the local clipboard"), { timeout: WAIT })
      yield* p(() => page.getByTestId("clipboard-to-desktop").fill("typed in the browser panel"))
      yield* p(() => page.getByTestId("clipboard-send").click())
      yield* waitFor("the desktop got the text", Effect.map(vnc.state, (s) => s.clientCutText === "typed in the browser panel"), { timeout: WAIT })
      yield* shot(page, "02-clipboard")

      // ---- keys menu: Ctrl+Alt+Del reaches the desktop as key events, in order
      const keysBefore = (yield* vnc.state).keys.length
      yield* p(() => page.getByTestId("keys-button").click())
      yield* p(() => page.getByTestId("key-ctrl-alt-del").click())
      const keys = yield* waitFor("Ctrl+Alt+Del", Effect.map(vnc.state, (s) => s.keys.some((k) => k.keysym === XK_DELETE && !k.down) ? s.keys : undefined), { timeout: WAIT })
      assert.deepStrictEqual(keys.slice(-6).map((k) => [k.keysym, k.down]), [
        [XK_CONTROL_L, true], [XK_ALT_L, true], [XK_DELETE, true], [XK_DELETE, false], [XK_ALT_L, false], [XK_CONTROL_L, false]
      ])
      assert.isAtMost(keysBefore, keys.length)

      // ---- fullscreen: the screen takes the whole window (and the desktop follows), and gives it back
      yield* p(() => page.getByTestId("fullscreen-button").click())
      yield* p(() => page.waitForFunction(() => document.fullscreenElement?.id === "screen", undefined, { timeout: WAIT }))
      yield* p(() => page.evaluate(() => document.exitFullscreen()))
      yield* p(() => page.getByTestId("fullscreen-button").filter({ hasText: /^Fullscreen$/ }).waitFor({ timeout: WAIT }))

      // ---- a template with the clipboard upload off: the proxy drops the text; a key sent after it arrives
      // (The first viewer sends the local clipboard again whenever its desktop gets focus: what the desktop has now.)
      const cutBefore = (yield* vnc.state).clientCutText
      const lockedPage = yield* open(locked.id)
      yield* waitState(lockedPage, "connected")
      yield* p(() => lockedPage.getByTestId("clipboard-button").click())
      yield* p(() => lockedPage.getByTestId("clipboard-to-desktop").fill("must not leave the browser"))
      yield* p(() => lockedPage.getByTestId("clipboard-send").click())
      const escapes = (yield* vnc.state).keys.filter((k) => k.keysym === XK_ESCAPE).length
      yield* p(() => lockedPage.getByTestId("keys-button").click())
      yield* p(() => lockedPage.getByTestId("key-escape").click())
      yield* waitFor("the Esc after the text", Effect.map(vnc.state, (s) => s.keys.filter((k) => k.keysym === XK_ESCAPE).length >= escapes + 2), { timeout: WAIT })
      assert.strictEqual((yield* vnc.state).clientCutText, cutBefore, "the blocked text never reached the desktop")
      yield* p(() => lockedPage.close())

      // ---- a template with the clipboard download off: noVNC works through the proxy's server-side filter, the
      // desktop's text never shows up in that viewer while the other viewer gets it
      const quietPage = yield* open(quiet.id)
      yield* waitState(quietPage, "connected")
      yield* p(() => quietPage.getByTestId("clipboard-button").click())
      yield* vnc.setServerCutText("second copy on the desktop")
      yield* p(() => page.waitForFunction(() => document.querySelector<HTMLTextAreaElement>("[data-testid=clipboard-from-desktop]")?.value === "second copy on the desktop", undefined, { timeout: WAIT }))
      const typedBefore = (yield* vnc.state).typedText
      yield* p(() => quietPage.locator("#screen canvas").click())
      yield* p(() => quietPage.keyboard.type("q"))
      yield* waitFor("a key from the filtered viewer", Effect.map(vnc.state, (s) => s.typedText === `${typedBefore}q`), { timeout: WAIT })
      yield* p(() => quietPage.locator("[data-testid=viewer-stats][data-fps]").waitFor({ timeout: WAIT }))
      assert.strictEqual(yield* p(() => quietPage.getByTestId("clipboard-from-desktop").inputValue()), "")
      assert.strictEqual(yield* p(() => status(quietPage).getAttribute("data-state")), "connected")
      yield* shot(quietPage, "02b-no-download")
      yield* p(() => quietPage.close())

      // ---- the tunnel drops (the agent closes it): the viewer says why and comes back with a new ticket (every
      // status text is recorded: the reconnecting one may last a second only)
      yield* p(() => page.evaluate(() => {
        const w = window as unknown as { statuses: Array<string> }
        w.statuses = []
        new MutationObserver(() => w.statuses.push(document.querySelector("[data-testid=viewer-status]")!.textContent!)).observe(document.querySelector("[data-testid=viewer-status]")!, { childList: true, characterData: true, subtree: true })
      }))
      yield* agent.tunnels.closeAll("pod_gone")
      yield* p(() => page.waitForFunction(() => (window as unknown as { statuses: Array<string> }).statuses.some((t) => t.startsWith("Connected")), undefined, { timeout: WAIT }))
      const seen = yield* p(() => page.evaluate(() => (window as unknown as { statuses: Array<string> }).statuses))
      assert.match(seen[0] ?? "", /^Reconnecting in \d s \(attempt 1\): tunnel closed by the agent: pod_gone\.$/)
      yield* waitState(page, "connected")

      // ---- the agent's link drops: the viewer says why and comes back by itself once the agent is back
      yield* agent.stop
      yield* waitState(page, "reconnecting", /agent/)
      yield* shot(page, "03-reconnecting")
      // A viewer opened while the agent is away is told at once, and keeps trying.
      const late = yield* open(session.id)
      yield* waitState(late, "reconnecting", /agent running this session is offline/)
      agent = yield* S.startAgent(env)
      yield* S.waitForOnline(cp, "agent-v")
      yield* waitState(page, "connected")
      yield* waitState(late, "connected")
      yield* until("the reconnected viewers on the desktop", () => Effect.runSync(vnc.state).connections >= 2)
      yield* shot(page, "04-reconnected")
      yield* p(() => late.close())

      // ---- the session is deleted: "ended", no more attempts
      assert.include([200, 202], (yield* vic.del(`/sessions/${session.id}`)).status)
      yield* waitState(page, "ended", /ended/)
      yield* shot(page, "05-ended")
      const endedText = yield* p(() => status(page).innerText())
      yield* S.waitForSession(vic, session.id, ["terminated"])
      assert.strictEqual(yield* p(() => status(page).innerText()), endedText, "no retry after the end")
      assert.deepStrictEqual(errors, [])
      yield* p(() => context.close())
    }), { timeout: 240_000 })

  it.live("comes back by itself after the control plane restarts (same port and database)", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cpEnv = { PORT: String(yield* S.freePort), DATABASE_IN_MEMORY: "false", DATA_DIR: join(cluster.dir, "data") }
      const first = yield* S.startControlPlane(cpEnv)
      yield* S.startApprovedAgent(first, S.agentEnv(cluster, first.wsUrl, "agent-r"))
      const token = S.userToken("ray")
      const ray = S.api(first.url, token)
      const session = (yield* ray.post("/sessions", { template: "demo" })).body
      yield* S.waitForSession(ray, session.id, ["running"])
      const b = yield* browser
      const page = yield* p(() => b.newPage({ viewport: { width: 900, height: 650 } }))
      const errors: Array<string> = []
      page.on("pageerror", (e) => errors.push(e.message))
      yield* p(() => page.goto(`${first.url}/#token=${token}`))
      yield* p(() => page.locator("[data-testid=sessions]").waitFor({ timeout: WAIT }))
      yield* p(() => page.goto(`${first.url}/#/sessions/${session.id}/view`))
      yield* waitState(page, "connected")

      yield* first.stop
      yield* waitState(page, "reconnecting", /control plane/)
      yield* shot(page, "10-control-plane-down")
      const second = yield* S.startControlPlane(cpEnv)
      yield* S.waitForOnline(second, "agent-r", WAIT)
      yield* waitState(page, "connected")
      yield* waitFor("the viewer on the desktop again", Effect.map(cluster.vnc.state, (st) => st.connections >= 1), { timeout: WAIT })
      yield* shot(page, "11-control-plane-back")
      assert.deepStrictEqual(errors, [])
      yield* p(() => page.close())
    }), { timeout: 180_000 })
})
