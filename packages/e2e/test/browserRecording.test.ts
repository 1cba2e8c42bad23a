// Session recording in Chromium (playwright-core, Debian's chromium): the admin makes recording optional for
// the demo template, the owner creates a session with "Record" ticked (and toggles it on the session's
// Recordings page), views the session (the viewer shows the recording mark)
// and clicks twice on vnc-testserver's desktop (each click draws a red cross). The recording is then played in
// the UI with the same noVNC decoder: the crosses appear as recorded, a seek back between the clicks shows
// only the first (rebuilt from a keyframe; and, with the keyframes hidden from the player, replayed from the
// start), a seek before the first shows none, and a paused player stays put.
// The control plane, an agent and kube-testserver run in this process.
import { assert, describe, it } from "@effect/vitest"
import { decodeRecording, Track } from "@streamspace/control-plane"
import { Effect } from "effect"
import type { Page } from "playwright-core"
import { launchChromium, p, screenshots } from "./support/chromium.ts"
import * as S from "./support/stack.ts"

const WAIT = 20_000
const MARK = [0xff, 0x40, 0x40] // vnc-testserver's click cross
const BACKGROUND = [0x20, 0x40, 0x60]

const browser = launchChromium

const shot = screenshots("browser-recording")

/** The colour of one framebuffer pixel of the noVNC canvas under `selector` (its backing store is the framebuffer's size). */
const pixel = (page: Page, selector: string, x: number, y: number) =>
  page.evaluate(([sel, px, py]) => {
    const canvas = document.querySelector(sel) as HTMLCanvasElement | null
    if (canvas === null || canvas.width === 0) return [-1, -1, -1]
    return [...canvas.getContext("2d")!.getImageData(px, py, 1, 1).data.slice(0, 3)]
  }, [selector, x, y] as const)
const near = (a: ReadonlyArray<number>, b: ReadonlyArray<number>) => a.every((v, i) => Math.abs(v - b[i]!) <= 8)
const until = (what: string, check: () => Promise<boolean>) =>
  S.waitFor(what, Effect.promise(check), { timeout: WAIT })

describe("recording in the browser", () => {
  it.live("records a viewed session, then plays it back in the UI with pause and seek", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const dir = yield* S.tempDir("recordings-")
      const cp = yield* S.startControlPlane({ RECORDINGS_DIR: dir, RECORDING_KEYFRAME_INTERVAL: "500ms" })
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-rec"))
      const token = S.userToken("ann")
      const ann = S.api(cp.url, token)
      const policy = yield* S.request(cp.url, "PUT", "/api/v1/templates/demo/recording", { token: S.adminToken(), body: { policy: "optional" } })
      assert.strictEqual(policy.status, 200)
      const b = yield* browser
      const page = yield* p(() => b.newPage({ viewport: { width: 1000, height: 760 } }))
      const errors: Array<string> = []
      page.on("pageerror", (e) => errors.push(e.message))
      page.setDefaultTimeout(WAIT)
      yield* p(() => page.goto(`${cp.url}/#token=${token}`))
      yield* p(() => page.locator("[data-testid=sessions]").waitFor())

      // ---- the owner creates the session with recording on
      yield* p(() => page.getByTestId("template-select").locator('option[value="demo"]').waitFor({ state: "attached" }))
      yield* p(() => page.getByTestId("create-record").check())
      yield* p(() => page.getByTestId("create-session").click())
      const created = yield* S.waitFor("the session", Effect.map(ann.get("/sessions"), (r) => r.body.sessions?.[0]), { timeout: WAIT })
      yield* S.waitForSession(ann, created.id, ["running"])
      const sessionPath = `/sessions/${created.id}`
      yield* until("recording enabled", async () => (await Effect.runPromise(ann.get(`${sessionPath}/recording`))).body.enabled === true)

      // ---- the session's Recordings page shows the choice; turned off and on again there
      yield* p(() => page.locator(`tr[data-session="${created.id}"] [data-testid=session-recordings]`).click())
      yield* p(() => page.getByTestId("record-session").waitFor())
      assert.isTrue(yield* p(() => page.getByTestId("record-session").isChecked()))
      yield* p(() => page.getByTestId("record-session").uncheck())
      yield* until("recording disabled", async () => (await Effect.runPromise(ann.get(`${sessionPath}/recording`))).body.enabled === false)
      yield* p(() => page.getByTestId("record-session").check())
      yield* until("recording enabled again", async () => (await Effect.runPromise(ann.get(`${sessionPath}/recording`))).body.enabled === true)

      // ---- view it: the mark shows; click twice, some time apart
      yield* p(() => page.goto(`${cp.url}/#${sessionPath}/view`))
      yield* p(() => page.getByTestId("viewer-status").filter({ hasText: "Connected" }).waitFor())
      yield* p(() => page.getByTestId("recording-mark").waitFor({ state: "visible" }))
      yield* shot(page, "01-viewer-recording")
      const vnc = cluster.vnc
      const { width, height } = yield* vnc.state
      const clickAt = (fx: number, fy: number) =>
        Effect.gen(function*() {
          const before = (yield* vnc.state).clicks.length
          const box = (yield* p(() => page.locator("#screen canvas").boundingBox()))!
          yield* p(() => page.mouse.click(box.x + (fx + 0.5) * box.width / width, box.y + (fy + 0.5) * box.height / height))
          yield* S.waitFor("the click reached the desktop", Effect.map(vnc.state, (s) => s.clicks.length > before), { timeout: WAIT })
          const click = (yield* vnc.state).clicks.at(-1)!
          yield* until("the cross in the viewer", async () => near(await pixel(page, "#screen canvas", click.x, click.y), MARK))
          return click
        })
      yield* Effect.sleep("1 second") // some recording before the first click
      const c1 = yield* clickAt(Math.round(width / 4), Math.round(height * 0.6))
      yield* Effect.sleep("2 seconds") // keyframes every 500ms in between
      const c2 = yield* clickAt(Math.round(width * 3 / 4), Math.round(height * 0.6))
      yield* Effect.sleep("500 millis")
      yield* shot(page, "02-viewer-clicked")
      yield* p(() => page.goto(`${cp.url}/#${sessionPath}/recordings`))

      // ---- the recording: ended, with keyframes; the input track holds the clicks and their times
      const list = yield* S.waitFor("the recording ended", Effect.map(ann.get(`${sessionPath}/recordings`), (r) => (r.body.recordings?.[0]?.active === false ? r.body.recordings : undefined)), { timeout: WAIT })
      assert.strictEqual(list.length, 1)
      const rec = list[0]
      assert.isAtLeast(rec.keyframes.length, 3)
      const bytes = yield* p(async () => new Uint8Array(await (await fetch(`${cp.url}/api/v1${sessionPath}/recordings/${rec.id}`, { headers: { authorization: `Bearer ${token}` } })).arrayBuffer()))
      let buttons = 0
      const downs: Array<number> = []
      for (const r of decodeRecording(bytes)) {
        if (r.track !== Track.input || r.payload[0] !== 5) continue
        if ((r.payload[1]! & 1) === 1 && (buttons & 1) === 0) downs.push(r.timeMs)
        buttons = r.payload[1]!
      }
      assert.strictEqual(downs.length, 2, "both clicks are in the input track")
      const [t1, t2] = downs as [number, number]

      // ---- play it from the start: both crosses appear, as recorded
      yield* p(() => page.locator(`tr[data-recording="${rec.id}"] [data-testid=play-recording]`).click())
      const player = page.getByTestId("player")
      const screen = "#player-screen canvas"
      const at = (c: { x: number; y: number }) => p(() => pixel(page, screen, c.x, c.y))
      yield* until("the first cross plays", async () => near(await pixel(page, screen, c1.x, c1.y), MARK))
      yield* until("the second cross plays", async () => near(await pixel(page, screen, c2.x, c2.y), MARK))
      yield* p(() => player.and(page.locator("[data-state=ended]")).waitFor())
      yield* shot(page, "03-played")

      const seekTo = (ms: number) =>
        p(async () => {
          await page.getByTestId("player-seek").evaluate((el, v) => {
            const input = el as HTMLInputElement
            input.value = String(v)
            input.dispatchEvent(new Event("change"))
          }, ms)
          await player.and(page.locator(`[data-position-ms="${Math.round(ms / 10) * 10}"]`)).waitFor()
        })

      // ---- seek back between the clicks: from a keyframe, the first cross only
      const middle = Math.round((t1 + t2) / 2 / 10) * 10
      yield* seekTo(middle)
      yield* until("the first cross after the seek", async () => near(await pixel(page, screen, c1.x, c1.y), MARK))
      assert.isFalse(near(yield* at(c2), MARK), "the second click comes later")
      const from = yield* p(() => player.getAttribute("data-seek-from"))
      assert.match(from ?? "", /^keyframe@\d+$/, "rebuilt from a keyframe")
      assert.isAbove(Number(from!.split("@")[1]), 0, "a keyframe after the start")
      assert.isAtMost(Number(from!.split("@")[1]), middle)
      yield* shot(page, "04-seek-middle")

      // ---- seek before the first click: the desktop, no cross
      const before = Math.floor((t1 - 1) / 10) * 10
      yield* seekTo(before)
      yield* until("the desktop before the clicks", async () => near(await pixel(page, screen, 1, Math.round(height * 0.6)), BACKGROUND))
      assert.isFalse(near(yield* at(c1), MARK))
      assert.isFalse(near(yield* at(c2), MARK))

      // ---- pause holds the position; play resumes to the end
      yield* p(() => page.getByTestId("player-toggle").click())
      yield* p(() => player.and(page.locator("[data-state=playing]")).waitFor())
      yield* p(() => page.getByTestId("player-toggle").click())
      yield* p(() => player.and(page.locator("[data-state=paused]")).waitFor())
      const paused = yield* p(() => player.getAttribute("data-position-ms"))
      yield* Effect.sleep("700 millis")
      assert.strictEqual(yield* p(() => player.getAttribute("data-position-ms")), paused, "a paused player does not move")
      assert.strictEqual(yield* p(() => player.getAttribute("data-state")), "paused")
      yield* p(() => page.getByTestId("player-toggle").click())
      yield* until("both crosses again", async () => near(await pixel(page, screen, c1.x, c1.y), MARK) && near(await pixel(page, screen, c2.x, c2.y), MARK))
      yield* shot(page, "05-resumed")

      // ---- without keyframes (what a recording in Tight or ZRLE has), a seek replays from the start
      yield* p(() =>
        page.route(`**/api/v1${sessionPath}/recordings`, async (route) => {
          const res = await route.fetch()
          const body = await res.json()
          for (const r of body.recordings) {
            r.keyframes = []
            r.handshake_bytes = null
          }
          await route.fulfill({ response: res, json: body })
        })
      )
      yield* p(() => page.goto(`${cp.url}/#${sessionPath}/recordings`))
      yield* p(() => page.goto(`${cp.url}/#${sessionPath}/recordings/${rec.id}`))
      yield* p(() => player.and(page.locator("[data-state=playing]")).waitFor())
      yield* p(() => page.getByTestId("player-toggle").click())
      yield* seekTo(Math.round((t2 + 100) / 10) * 10) // forward: fed as it comes
      assert.strictEqual(yield* p(() => player.getAttribute("data-seek-from")), "continued")
      yield* seekTo(middle) // backward, no keyframe: a fresh decoder fed from the start
      yield* until("the first cross, replayed from the start", async () => near(await pixel(page, screen, c1.x, c1.y), MARK))
      assert.isFalse(near(yield* at(c2), MARK))
      assert.strictEqual(yield* p(() => player.getAttribute("data-seek-from")), "start")
      yield* p(() => page.unroute(`**/api/v1${sessionPath}/recordings`))

      // ---- delete it from the UI
      yield* p(() => page.locator(`tr[data-recording="${rec.id}"] [data-testid=delete-recording]`).click())
      yield* S.waitFor("deleted", Effect.map(ann.get(`${sessionPath}/recordings`), (r) => r.body.recordings.length === 0), { timeout: WAIT })
      assert.deepStrictEqual(errors, [])
    }), { timeout: 120_000 })
})
