import { defineConfig } from "vitest/config"

// One project per package; each runs its own test/ folder. The e2e package's real-cluster suite is a project
// of its own: it shares one real Kubernetes control plane, started once by its global setup.
const project = (name: string, testTimeout = 20_000) => ({
  test: {
    name,
    root: `packages/${name}`,
    include: ["test/**/*.test.ts"],
    exclude: ["test/real-cluster/**"],
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
      project("testkit"),
      project("agent"),
      project("control-plane"),
      project("testbed"),
      project("e2e", 120_000),
      {
        test: {
          name: "real-cluster",
          root: "packages/e2e",
          include: ["test/real-cluster/**/*.test.ts"],
          globalSetup: ["test/real-cluster/globalSetup.ts"],
          testTimeout: 180_000,
          hookTimeout: 180_000
        }
      }
    ]
  }
})
