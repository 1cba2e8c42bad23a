// `npm run images:build`: assembles the base images when missing and builds docker/agent, docker/control-plane
// and docker/session-desktop with buildah when their inputs changed (packages/testbed/src/images.ts).
import { ensureImages } from "./images.ts"

const started = Date.now()
try {
  await ensureImages((line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}`))
} catch (e) {
  console.error(`images:build: ${(e as Error).message}`)
  process.exitCode = 1
}
