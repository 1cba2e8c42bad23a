// Where the test bed keeps what it builds: outside the repository, so a fresh clone (and CI) reuses the Go
// tools and images built before. STREAMSPACE_CACHE_DIR overrides; else $XDG_CACHE_HOME/streamspace, else
// ~/.cache/streamspace.
import { createHash } from "node:crypto"
import { readFileSync } from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
export const testbedRoot = path.join(repoRoot, "packages/testbed")

export const cacheRoot = (): string =>
  process.env.STREAMSPACE_CACHE_DIR ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "streamspace")

/**
 * A short content hash of files (by name and content, not where the checkout is, so every clone and worktree
 * shares the cache) and extra strings: a cache key that changes when any input does.
 */
export const hashInputs = (files: ReadonlyArray<string>, extra: ReadonlyArray<string> = []): string => {
  const h = createHash("sha256")
  for (const f of files) h.update(path.basename(f)).update("\0").update(readFileSync(f)).update("\0")
  for (const e of extra) h.update(e).update("\0")
  return h.digest("hex").slice(0, 12)
}

/** "3m07s" */
export const formatElapsed = (ms: number): string => {
  const s = Math.round(ms / 1000)
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`
}
