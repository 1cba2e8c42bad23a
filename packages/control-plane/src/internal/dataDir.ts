// DATA_DIR holds the whole embedded database (users, agent credential hashes, sessions): only the control
// plane's user may read it. The directory is created 0700, an existing one that others can read is tightened
// (with a warning naming it), and the files PGlite writes are made 0600 when the database opens and again when
// it closes (PGlite writes through Node's fs under the process umask, which is often 022 or 000 in containers;
// the 0700 directory already keeps others out in between).
import { Effect } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

/** Creates `dir` 0700, or tightens an existing one; warns when it had to. */
export const secureDataDir = (dir: string) =>
  Effect.gen(function*() {
    const existed = fs.existsSync(dir)
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    const mode = fs.statSync(dir).mode & 0o777
    if (mode & 0o077) {
      fs.chmodSync(dir, mode & 0o700 | 0o700)
      if (existed) {
        yield* Effect.logWarning(
          `DATA_DIR ${dir} was readable by others (mode ${mode.toString(8).padStart(4, "0")}): changed it to 0700, as the database in it holds credential hashes`
        )
      }
    }
  })

/** Makes every file under `dir` 0600 and every directory 0700 (symlinks are left alone). */
export const tightenFiles = (dir: string): void => {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name)
    if (entry.isDirectory()) {
      fs.chmodSync(p, 0o700)
      tightenFiles(p)
    } else if (entry.isFile()) {
      fs.chmodSync(p, 0o600)
    }
  }
}
