// The lifecycle policy in Chromium (playwright-core, Debian's chromium): two open viewers of one session both
// show the expiry banner with a countdown; "Keep working" counts as activity (the banner goes, the API records a
// keep-alive by the user); left alone the session hibernates, and opening its viewer again offers to resume it,
// which brings the desktop back. The control plane, an agent and kube-testserver run in this process.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"

import { launchChromium, p, screenshots } from "./support/chromium.ts"
import * as S from "./support/stack.ts"

const WAIT = 20_000

const browser = launchChromium

const shot = screenshots("browser-lifecycle")

describe("lifecycle policy in the browser", () => {
  it.live("every open viewer shows the expiry banner; Keep working keeps the session; a hibernated session's viewer resumes it", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-b"))
      const token = S.userToken("ann")
      const ann = S.api(cp.url, token)
      // Warned 5 s after it runs without input, for 20 s (time to click on a busy machine).
      yield* cp.admin.post("/templates", { name: "brief", image: "streamspace/demo-desktop:latest", persistent_home: true, idle_timeout: "25s", warn_before: "20s" })
      const created = (yield* ann.post("/sessions", { template: "brief" })).body
      yield* S.waitForSession(ann, created.id, ["running"])

      const b = yield* browser
      const errors: Array<string> = []
      const open = (name: string) =>
        p(async () => {
          const page = await b.newPage({ viewport: { width: 1100, height: 760 } })
          page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`))
          await page.goto(`${cp.url}/#token=${token}`)
          await page.locator("[data-testid=sessions]").waitFor({ timeout: WAIT })
          await page.goto(`${cp.url}/#/sessions/${created.id}/view`)
          await page.locator("[data-testid=viewer-status]").filter({ hasText: "Connected" }).waitFor({ timeout: WAIT })
          return page
        })
      const one = yield* open("one")
      const two = yield* open("two")

      // Both viewers show the banner with a countdown while the session is warned.
      for (const page of [one, two]) {
        yield* p(() => page.locator("[data-testid=expiry-banner]").waitFor({ state: "visible", timeout: WAIT }))
        const text = yield* p(() => page.locator("[data-testid=expiry-banner]").innerText())
        assert.include(text, "will hibernate")
        assert.match(yield* p(() => page.locator("[data-testid=expiry-countdown]").innerText()), /^0:[0-2]\d$/)
      }
      yield* shot(one, "01-warned")
      const before = (yield* ann.get(`/sessions/${created.id}`)).body
      assert.isTrue(before.expiry_warning)

      // Keep working: activity; the banner goes in both viewers and the API names the keep-alive.
      yield* p(() => one.locator("[data-testid=keep-working]").click())
      for (const page of [one, two]) yield* p(() => page.locator("[data-testid=expiry-banner]").waitFor({ state: "hidden", timeout: WAIT }))
      const kept = (yield* ann.get(`/sessions/${created.id}`)).body
      assert.strictEqual(kept.state, "running")
      assert.strictEqual(kept.activity.last_keepalive_by, "ann")
      assert.isAbove(Date.parse(kept.expires_at), Date.parse(before.expires_at))
      yield* shot(one, "02-kept")

      // Left alone: warned again, then hibernated; the viewers lose the desktop.
      yield* S.waitForSession(ann, created.id, ["hibernated"], 40_000)
      yield* p(() => two.close())
      // Opening the viewer of a hibernated session offers to resume it.
      yield* p(() => one.goto(`${cp.url}/#/sessions`))
      yield* p(() => one.locator(`tr[data-session="${created.id}"] [data-testid=view-session]`).filter({ hasText: "Resume" }).click({ timeout: WAIT }))
      yield* p(() => one.locator("[data-testid=resume-session]").waitFor({ timeout: WAIT }))
      assert.include(yield* p(() => one.locator("[data-testid=viewer-status]").innerText()), "hibernated")
      yield* shot(one, "03-offer-resume")
      yield* p(() => one.locator("[data-testid=resume-session]").click())
      yield* p(() => one.locator("[data-testid=viewer-status]").filter({ hasText: "Connected" }).waitFor({ timeout: 40_000 }))
      assert.strictEqual((yield* ann.get(`/sessions/${created.id}`)).body.state, "running")
      yield* shot(one, "04-resumed")
      assert.deepStrictEqual(errors, [])
    }), { timeout: 180_000 })
})
