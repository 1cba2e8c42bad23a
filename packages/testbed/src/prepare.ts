// The first step of `npm test`: make sure everything the tests need is on this machine. Installs missing
// Debian packages (as root; otherwise says what to install) and builds missing Go tools into the cache.
// Everything is skipped when present, so a warm machine passes through in a second.
import { formatElapsed } from "./cache.ts"
import { ensureDebianPackages, testPackages } from "./debian.ts"
import { buildGoTools } from "./goTools.ts"

const log = (line: string) => console.log(`prepare: ${line}`)
const started = Date.now()
try {
  ensureDebianPackages(testPackages, log)
  await buildGoTools(undefined, log)
} catch (e) {
  console.error(`prepare: ${(e as Error).message}`)
  process.exit(1)
}
log(`ready (${formatElapsed(Date.now() - started)})`)
