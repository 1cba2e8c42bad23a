// How the benchmarks start the agent: the way it ships. docker/agent/Dockerfile's final stage says how (its
// ENTRYPOINT's node flags and its ENV); the bundle it runs, packages/agent/dist/main.mjs, is built here first
// when it is missing or older than a source it is built from. BENCH_AGENT=source runs packages/agent/src/main.ts
// with plain node instead (how the agent ran before it was bundled; for before/after figures).
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, renameSync, statSync } from "node:fs"
import { join } from "node:path"
import { shippedImage } from "../../packages/e2e/src/dockerfile.ts"
import { NODE, ROOT } from "./util.ts"

export interface AgentLaunch {
  /** node's arguments before the entry file. */
  readonly nodeArgs: ReadonlyArray<string>
  readonly entry: string
  /** The image's ENV (the caller's variables go over it). */
  readonly env: Record<string, string>
  /** One line for results files. */
  readonly describe: string
}

const AGENT = join(ROOT, "packages", "agent")
const BUNDLE = join(AGENT, "dist", "main.mjs")


const newest = (path: string): number => {
  const s = statSync(path)
  if (!s.isDirectory()) return s.mtimeMs
  return Math.max(0, ...readdirSync(path).map((f) => newest(join(path, f))))
}

/** Rebuilds the bundle when a source is newer; written under another name and renamed, so a concurrent run never reads half a file. */
const ensureBundle = () => {
  const inputs = [join(AGENT, "src"), join(ROOT, "packages", "protocol", "src"), join(AGENT, "rolldown.config.ts"), join(ROOT, "package-lock.json")]
  if (existsSync(BUNDLE) && statSync(BUNDLE).mtimeMs >= Math.max(...inputs.map(newest))) return
  const tmp = join(AGENT, "dist", `.main-${process.pid}.mjs`)
  console.log("  building the agent bundle (packages/agent/dist/main.mjs)")
  execFileSync(NODE, [join(ROOT, "node_modules", "rolldown", "bin", "cli.mjs"), "--config", join(AGENT, "rolldown.config.ts"), "--file", tmp], { cwd: AGENT, stdio: ["ignore", "ignore", "inherit"] })
  renameSync(tmp, BUNDLE)
}

let cached: AgentLaunch | undefined

export const agentLaunch = (): AgentLaunch => {
  if (cached !== undefined) return cached
  if (process.env.BENCH_AGENT === "source") {
    cached = { nodeArgs: [], entry: join(AGENT, "src", "main.ts"), env: {}, describe: "node packages/agent/src/main.ts (BENCH_AGENT=source: the sources, not the shipped bundle)" }
    return cached
  }
  const { entrypoint, env } = shippedImage(join(ROOT, "docker", "agent", "Dockerfile"))
  const [program, ...args] = entrypoint
  if (program !== "node" || args.at(-1) !== "packages/agent/dist/main.mjs") {
    throw new Error(`docker/agent/Dockerfile: expected ENTRYPOINT ["node", ...flags, "packages/agent/dist/main.mjs"], found ${JSON.stringify(entrypoint)}`)
  }
  ensureBundle()
  const nodeArgs = args.slice(0, -1)
  // The image's ports are replaced by free ones by the caller; the rest (NODE_ENV, malloc tuning) applies as shipped.
  const { HEALTH_PORT: _h, METRICS_PORT: _m, ...rest } = env
  const shown = Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ")
  cached = { nodeArgs, entry: BUNDLE, env: rest, describe: `${shown} node ${[...nodeArgs, "packages/agent/dist/main.mjs"].join(" ")} (as docker/agent/Dockerfile runs it)` }
  return cached
}
