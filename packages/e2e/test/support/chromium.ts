// Debian's Chromium driven by playwright-core, as the browser tests use it: one browser per test file (a scoped
// resource), a Promise-to-Effect shorthand, and screenshots under packages/e2e/test-output/<dir>.
import { Effect } from "effect"
import { mkdirSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { chromium, type Page } from "playwright-core"
import { REPO } from "./stack.ts"

export const launchChromium = Effect.acquireRelease(
  Effect.promise(() =>
    chromium.launch({
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-component-update", "--disable-sync", "--no-first-run"]
    })
  ),
  (b) => Effect.promise(() => b.close())
)

export const p = <A>(f: () => Promise<A>) => Effect.promise(f)

/** Saves full-page screenshots as packages/e2e/test-output/<dir>/<name>.png. */
export const screenshots = (dir: string) => (page: Page, name: string) =>
  p(async () => {
    const output = path.join(REPO, "packages/e2e/test-output", dir)
    mkdirSync(output, { recursive: true })
    writeFileSync(path.join(output, `${name}.png`), await page.screenshot({ fullPage: true }))
  })
