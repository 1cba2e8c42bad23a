// The packages as a user gets them: every public package is built and packed (`npm pack`, as
// `npm run pack:public` does), the tarballs are installed into a new project in a temporary folder outside the
// workspace (dependencies from the npm cache when it has them), and examples/harness runs there under Node 24 —
// the control plane's layers, Agent.layer and the testkit in one Effect program that enrols the agent, creates a
// session and reads the desktop's RFB banner through the VNC proxy. The harness is then type-checked against
// the published .d.ts (examples/harness/types.ts: no `any` out of the entry points, Effect types intact).
import { packPublic, PUBLIC_PACKAGES, repoRoot } from "@streamspace/testbed"
import { execFile } from "node:child_process"
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, describe, expect, it } from "vitest"

const run = promisify(execFile)
const NODE_BIN = path.join(repoRoot, "node_modules/.bin")
// npm and tsc under Node 24 (the workspace's), never the machine's older node.
const env = { ...process.env, PATH: `${NODE_BIN}${path.delimiter}${process.env.PATH ?? ""}`, npm_config_update_notifier: "false" }

const temp: Array<string> = []
const tempDir = (prefix: string) => {
  const d = mkdtempSync(path.join(tmpdir(), prefix))
  temp.push(d)
  return d
}
afterAll(async () => {
  await Promise.all(temp.map((d) => rm(d, { recursive: true, force: true })))
}, 300_000) // a fresh node_modules is thousands of files on a loaded machine

const filesUnder = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f)
    return statSync(p).isDirectory() ? filesUnder(p) : [p]
  })

describe("the public packages installed from their tarballs", () => {
  it("run examples/harness in a fresh project and type-check it against the published .d.ts", async () => {
    const packed = packPublic(tempDir("streamspace-tarballs-"))
    expect(packed.map((p) => p.name).sort()).toEqual(PUBLIC_PACKAGES.map((n) => `@streamspace/${n}`).sort())

    const project = tempDir("streamspace-harness-")
    expect(path.relative(repoRoot, project).startsWith("..")).toBe(true) // outside the workspace: no hoisted node_modules above it
    for (const f of ["harness.ts", "types.ts", "tsconfig.json"]) cpSync(path.join(repoRoot, "examples/harness", f), path.join(project, f))
    // examples/harness/package.json with the tarballs in place of the registry versions.
    const manifest = JSON.parse(readFileSync(path.join(repoRoot, "examples/harness/package.json"), "utf8"))
    const tarballs = Object.fromEntries(packed.map((p) => [p.name, `file:${p.tarball}`]))
    manifest.dependencies = { ...manifest.dependencies, ...tarballs }
    // Dependencies between the packages resolve to these tarballs too, not to the registry.
    manifest.overrides = Object.fromEntries(packed.map((p) => [p.name, `$${p.name}`]))
    delete manifest.devDependencies.typescript // the workspace's tsc checks it (the same version)
    writeFileSync(path.join(project, "package.json"), JSON.stringify(manifest, null, 2))
    await run("npm", ["install", "--prefer-offline", "--no-audit", "--no-fund", "--ignore-scripts"], { cwd: project, env, maxBuffer: 16 * 1024 * 1024 })

    // What got installed is JavaScript and declarations only, and its exports point at them.
    for (const p of packed) {
      const dir = path.join(project, "node_modules", p.name)
      const installed = JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"))
      expect(installed.exports["."]).toEqual({ types: "./dist/index.d.ts", import: "./dist/index.js" })
      expect(installed.engines.node).toBe(">=24")
      expect(filesUnder(dir).filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"))).toEqual([])
      expect(existsSync(path.join(dir, "README.md"))).toBe(true)
    }

    const harness = await run(path.join(NODE_BIN, "node"), ["harness.ts"], { cwd: project, env, timeout: 180_000 })
    expect(harness.stdout).toMatch(/session s-[0-9a-f]+: "RFB 003\.008\\n"/)

    // tsc with skipLibCheck off: the published declarations themselves must check too.
    const typecheck = await run(path.join(NODE_BIN, "tsc"), ["--noEmit", "-p", "."], { cwd: project, env }).catch((e) => e)
    expect(`${typecheck.stdout ?? ""}${typecheck.stderr ?? ""}`).toBe("")
  }, 900_000)
})
