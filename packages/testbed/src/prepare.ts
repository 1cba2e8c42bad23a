// The first step of `npm test`: make sure everything the tests need is on this machine. Installs missing
// Debian packages (as root; otherwise says what to install), builds missing Go tools into the cache, and
// builds the container images whose inputs changed. Everything is skipped when present, so a warm machine
// passes through in seconds.
import { formatElapsed } from "./cache.ts"
import { ensureDebianPackages, testPackages } from "./debian.ts"
import { buildGoTools } from "./goTools.ts"
import { ensureImages, imageDebianPackages } from "./images.ts"

const log = (line: string) => console.log(`prepare: ${line}`)
const started = Date.now()
try {
  ensureDebianPackages({
    ...testPackages,
    ...Object.fromEntries(imageDebianPackages.map((p) => [p, "building the container images without a Docker engine"]))
  }, log)
  await buildGoTools(undefined, log)
  await ensureImages(log)
} catch (e) {
  console.error(`prepare: ${(e as Error).message}`)
  process.exit(1)
}
log(`ready (${formatElapsed(Date.now() - started)})`)
