// The Go tools' versions are pinned once, in the wrapper modules; these checks keep the pins coherent.
import { readFileSync } from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { testbedRoot } from "../src/cache.ts"
import { goTools, pinnedVersion, toolDir } from "../src/goTools.ts"

const gomod = (m: string) => readFileSync(path.join(testbedRoot, "go", m, "go.mod"), "utf8")

describe("Go tool pins", () => {
  it("pins each tool's module to one release", () => {
    const pins = [
      pinnedVersion("kubernetes", "k8s.io/kubernetes"),
      pinnedVersion("etcd", "go.etcd.io/etcd/server/v3"),
      pinnedVersion("kwok", "sigs.k8s.io/kwok"),
      pinnedVersion("helm", "helm.sh/helm/v3"),
      pinnedVersion("jaeger", "github.com/jaegertracing/jaeger")
    ]
    for (const v of pins) expect(v).toMatch(/^v\d+\.\d+\.\d+$/)
  })

  it("replaces every Kubernetes staging module with the release matching k8s.io/kubernetes", () => {
    const [, minor, patch] = /^v1\.(\d+)\.(\d+)$/.exec(pinnedVersion("kubernetes", "k8s.io/kubernetes"))!
    const replaces = [...gomod("kubernetes").matchAll(/^\s*(k8s\.io\/[a-z0-9-]+) => (k8s\.io\/[a-z0-9-]+) (v\S+)$/gm)]
    // k8s.io/kubernetes v1.36.3 replaces 33 staging modules; each must point at itself at v0.36.3.
    expect(replaces.length).toBe(33)
    for (const [, from, to, version] of replaces) {
      expect(to).toBe(from)
      expect(version).toBe(`v0.${minor}.${patch}`)
    }
  })

  it("builds each tool from a wrapper module whose cache folder changes with its pins", () => {
    for (const tool of goTools) expect(gomod(tool.module)).toMatch(/^module streamspace\.local\/testbed\//m)
    const modules = [...new Set(goTools.map((t) => t.module))]
    const dirs = modules.map(toolDir)
    expect(new Set(dirs).size).toBe(modules.length)
  })
})
