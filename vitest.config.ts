import { defineConfig } from "vitest/config"

// One project per package; each runs its own test/ folder.
const project = (name: string, testTimeout = 20_000) => ({
  test: {
    name,
    root: `packages/${name}`,
    include: ["test/**/*.test.ts"],
    testTimeout,
    hookTimeout: 30_000
  }
})

export default defineConfig({
  test: {
    projects: [
      project("protocol"),
      project("kube-testserver"),
      project("vnc-testserver"),
      project("agent"),
      project("control-plane"),
      project("testbed", 300_000),
      project("e2e", 120_000)
    ]
  }
})
