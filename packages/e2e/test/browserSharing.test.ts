// Sharing and control in Chromium (playwright-core, Debian's chromium), with the control plane, an agent and
// kube-testserver in this process and vnc-testserver recording what reaches the desktop. Ann shares her session
// with Bob (view) and Cat (control) through the sharing panel; each opens the viewer in a browser context of
// their own. Keys and clicks from a browser without control never reach vnc-testserver (the proxy drops them;
// the browser sends them anyway); control moves between browser contexts by request and grant and back; the
// owner ends a viewer; a view-only share link opens the viewer without an account.
//
// Ordering makes "never" checkable: a viewer's bytes reach the VNC server in order through one tunnel, so
// once a key typed later in the same viewer has arrived, everything it sent before has been dealt with.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import type { Browser, Page } from "playwright-core"
import { launchChromium, p, screenshots } from "./support/chromium.ts"
import * as S from "./support/stack.ts"

const WAIT = 20_000

const launch = launchChromium

const shot = screenshots("browser-sharing")

/** A browser context of its own (its own localStorage: its own login) with the user's viewer of the session open. */
const openViewer = (b: Browser, url: string, token: string, sessionId: string, errors: Array<string>, name: string) =>
  p(async () => {
    const context = await b.newContext({ viewport: { width: 1100, height: 800 } })
    const page = await context.newPage()
    page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`))
    await page.goto(`${url}/#token=${token}`)
    await page.locator("[data-testid=sessions]").waitFor({ timeout: WAIT })
    await page.goto(`${url}/#/sessions/${sessionId}/view`)
    await page.locator("[data-testid=viewer-status]").filter({ hasText: "Connected" }).waitFor({ timeout: WAIT })
    await page.locator(`[data-testid=presence] li`).first().waitFor({ timeout: WAIT })
    return page
  })

/** Clicks the remote desktop (focusing the viewer) and types: noVNC sends both, whatever the access. */
const clickAndType = (page: Page, text: string) =>
  p(async () => {
    const canvas = page.locator("#screen canvas")
    const box = (await canvas.boundingBox())!
    await canvas.click({ position: { x: box.width * 0.5, y: box.height * 0.6 } })
    await page.keyboard.type(text)
  })

const controlState = (page: Page, text: string) => p(() => page.locator("[data-testid=control-state]").filter({ hasText: text }).waitFor({ timeout: WAIT }))

describe("sharing in the browser", () => {
  it.live("view-only input never reaches the VNC server; control moves between browsers by request and grant; the owner ends a viewer; a share link opens the viewer", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-share"))
      const tokens = { ann: S.userToken("ann"), bob: S.userToken("bob"), cat: S.userToken("cat") }
      const ann = S.api(cp.url, tokens.ann)
      const created = (yield* ann.post("/sessions", { template: "demo" })).body
      yield* S.waitForSession(ann, created.id, ["running"])
      const vnc = () => Effect.runPromise(cluster.vnc.state)
      const b = yield* launch
      const errors: Array<string> = []

      // Ann opens her viewer (she has control) and shares through the panel: Bob may view, Cat may control.
      const annPage = yield* openViewer(b, cp.url, tokens.ann, created.id, errors, "ann")
      yield* controlState(annPage, "You have control")
      yield* p(async () => {
        await annPage.locator("[data-testid=share-manage] summary").click()
        for (const [user, access] of [["bob", "view"], ["cat", "control"]] as const) {
          await annPage.locator("[data-testid=share-user]").fill(user)
          await annPage.locator("[data-testid=share-access]").selectOption(access)
          await annPage.locator("[data-testid=share-add]").click()
          await annPage.locator(`[data-testid=shares] li[data-share=${user}]`).waitFor({ timeout: WAIT })
        }
      })

      // Bob sees the session in his list, marked as shared, and opens it view-only.
      const bobPage = yield* p(async () => {
        const context = await b.newContext({ viewport: { width: 1100, height: 800 } })
        const page = await context.newPage()
        page.on("pageerror", (e) => errors.push(`bob: ${e.message}`))
        await page.goto(`${cp.url}/#token=${tokens.bob}`)
        await page.locator(`tr[data-session="${created.id}"] [data-testid=session-shared]`).filter({ hasText: "shared by ann · view" }).waitFor({ timeout: WAIT })
        await page.locator(`tr[data-session="${created.id}"] [data-testid=view-session]`).click()
        await page.locator("[data-testid=viewer-status]").filter({ hasText: "Connected" }).waitFor({ timeout: WAIT })
        return page
      })
      yield* controlState(bobPage, "View only")
      assert.strictEqual(yield* p(() => bobPage.locator("[data-testid=request-control]").count()), 0)
      const catPage = yield* openViewer(b, cp.url, tokens.cat, created.id, errors, "cat")
      yield* controlState(catPage, "ann has control")
      yield* shot(annPage, "01-three-viewers")

      // Bob and Cat (no control yet) click and type: noVNC sends it, the proxy drops it.
      const before = yield* p(vnc)
      yield* clickAndType(bobPage, "bbb")
      yield* clickAndType(catPage, "zzz")

      // Cat asks; Ann sees the request and grants it; Cat's page says so, Ann's no longer.
      yield* p(() => catPage.locator("[data-testid=request-control]").click())
      yield* p(() => annPage.locator("[data-testid=presence] li[data-user=cat] [data-testid=requested]").waitFor({ timeout: WAIT }))
      yield* shot(annPage, "02-cat-asks")
      yield* p(() => annPage.locator("[data-testid=presence] li[data-user=cat] [data-testid=grant-control]").click())
      yield* controlState(catPage, "You have control")
      yield* controlState(annPage, "cat has control")
      // Cat clicks and types. Her earlier bytes went first through the same tunnel.
      yield* clickAndType(catPage, "c")
      const afterCat = yield* S.waitFor("cat's key at the VNC server", Effect.promise(async () => {
        const st = await vnc()
        return st.typedText.includes("c") ? st : undefined
      }))
      assert.strictEqual(afterCat.typedText, `${before.typedText}c`)
      assert.strictEqual(afterCat.clicks.length, before.clicks.length + 1)

      // Ann, without control now, types; she takes control back and types again: only the second arrives.
      yield* clickAndType(annPage, "x")
      yield* p(() => annPage.locator("[data-testid=take-control]").click())
      yield* controlState(annPage, "You have control")
      yield* controlState(catPage, "ann has control")
      yield* clickAndType(annPage, "y")
      const afterAnn = yield* S.waitFor("ann's key at the VNC server", Effect.promise(async () => {
        const st = await vnc()
        return st.typedText.includes("y") ? st : undefined
      }))
      assert.strictEqual(afterAnn.typedText, `${before.typedText}cy`)
      assert.strictEqual(afterAnn.clicks.length, before.clicks.length + 2)
      yield* shot(annPage, "03-ann-took-control-back")

      // Ann ends Bob's viewer: his page says it is disconnected; the presence list no longer has him.
      yield* p(() => annPage.locator("[data-testid=presence] li[data-user=bob] [data-testid=end-viewer]").click())
      yield* p(() => bobPage.locator("[data-testid=viewer-status]").filter({ hasText: "This viewer was ended" }).waitFor({ timeout: WAIT }))
      yield* p(() => annPage.locator("[data-testid=presence] li[data-user=bob]").waitFor({ state: "detached", timeout: WAIT }))

      // A view-only link: created in the panel, opened by a browser with no login at all.
      yield* p(() => annPage.locator("[data-testid=link-create]").click())
      const linkUrl = yield* p(() => annPage.locator("[data-testid=new-link-url]").inputValue())
      assert.match(linkUrl, /#share=[\w-]{40,}$/)
      const guest = yield* p(async () => {
        const context = await b.newContext({ viewport: { width: 900, height: 700 } })
        const page = await context.newPage()
        page.on("pageerror", (e) => errors.push(`guest: ${e.message}`))
        await page.goto(linkUrl)
        await page.locator("[data-testid=viewer-status]").filter({ hasText: "Watching (view only)" }).waitFor({ timeout: WAIT })
        return page
      })
      yield* p(() => annPage.locator("[data-testid=presence] li[data-user^='link:']").waitFor({ timeout: WAIT }))
      yield* shot(guest, "04-guest-by-link")
      // Revoking the link ends the guest's viewer.
      yield* p(() => annPage.locator("[data-testid=revoke-link]").click())
      yield* p(() => guest.locator("[data-testid=viewer-status]").filter({ hasText: "Disconnected" }).waitFor({ timeout: WAIT }))

      const audit = (yield* cp.admin.get("/audit?limit=100")).body.events.map((e: any) => e.action)
      for (const a of ["share.create", "control.grant", "control.take", "viewer.end", "share_link.create", "share_link.redeem", "share_link.revoke"]) assert.include(audit, a)
      assert.deepStrictEqual(errors, [])
    }), 120_000)
})
