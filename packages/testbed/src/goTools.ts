// The Go tools of the test bed, built from the Go module proxy into the cache (never into the repository).
// Versions are pinned in one place: the wrapper modules under packages/testbed/go/ (go.mod + go.sum). A tool
// is rebuilt only when its module's files change (they are the cache key), so a warm machine skips it all.
import { spawn } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs"
import * as path from "node:path"
import { cacheRoot, formatElapsed, hashInputs, testbedRoot } from "./cache.ts"

export type GoModule = "kubernetes" | "etcd" | "kwok" | "helm" | "jaeger"

export interface GoTool {
  readonly name: string
  readonly module: GoModule
  /** Package path to build, relative to the wrapper module. */
  readonly pkg: string
}

export const goTools: ReadonlyArray<GoTool> = [
  { name: "kube-apiserver", module: "kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-apiserver" },
  { name: "kube-controller-manager", module: "kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-controller-manager" },
  { name: "kube-scheduler", module: "kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-scheduler" },
  { name: "kubectl", module: "kubernetes", pkg: "k8s.io/kubernetes/cmd/kubectl" },
  { name: "etcd", module: "etcd", pkg: "." },
  { name: "kwok", module: "kwok", pkg: "sigs.k8s.io/kwok/cmd/kwok" },
  { name: "helm", module: "helm", pkg: "helm.sh/helm/v3/cmd/helm" },
  { name: "jaeger", module: "jaeger", pkg: "github.com/jaegertracing/jaeger/cmd/jaeger" }
]

/** What a cold build costs on 2 cores, for the progress line. */
const COLD_BUILD: Record<GoModule, string> = {
  kubernetes: "~15 min",
  etcd: "~3 min",
  kwok: "~3 min",
  helm: "~3 min",
  jaeger: "~4 min"
}

const moduleDir = (module: GoModule) => path.join(testbedRoot, "go", module)

/** The version the wrapper module requires of `modulePath` (e.g. "v1.36.3"). */
export const pinnedVersion = (module: GoModule, modulePath: string): string => {
  const gomod = readFileSync(path.join(moduleDir(module), "go.mod"), "utf8")
  const m = new RegExp(`^\\s*(?:require\\s+)?${modulePath.replaceAll(".", "\\.")}\\s+(v\\S+)`, "m").exec(gomod)
  if (m === null) throw new Error(`${module}/go.mod does not require ${modulePath}`)
  return m[1]!
}

/** -ldflags for the Kubernetes binaries: unstamped they report v0.0.0-master and helm refuses `kubeVersion`. */
const ldflags = (module: GoModule): ReadonlyArray<string> => {
  if (module !== "kubernetes") return []
  const v = pinnedVersion("kubernetes", "k8s.io/kubernetes")
  const [, major, minor] = /^v(\d+)\.(\d+)\./.exec(v) ?? []
  const pkg = "k8s.io/component-base/version"
  return [
    "-ldflags",
    [`-X ${pkg}.gitVersion=${v}`, `-X ${pkg}.gitMajor=${major}`, `-X ${pkg}.gitMinor=${minor}`, `-X ${pkg}.gitTreeState=clean`].join(" ")
  ]
}

const moduleFiles = (module: GoModule) =>
  readdirSync(moduleDir(module)).filter((f) => /\.(mod|sum|go)$/.test(f)).sort().map((f) => path.join(moduleDir(module), f))

/** The folder a module's binaries live in: keyed by the module's pinned files and the build flags. */
export const toolDir = (module: GoModule): string =>
  path.join(cacheRoot(), "tools", `${module}-${hashInputs(moduleFiles(module), ldflags(module))}`)

/** The path of a built tool; fails with what to run when it is not built. */
export const toolPath = (name: string): string => {
  const tool = goTools.find((t) => t.name === name)
  if (tool === undefined) throw new Error(`unknown test-bed tool ${name}`)
  const file = path.join(toolDir(tool.module), name)
  if (!existsSync(file)) {
    throw new Error(`${name} is not built (looked for ${file}): run \`npm run kube:build\` (npm test builds what is missing)`)
  }
  return file
}

const run = (cmd: string, args: ReadonlyArray<string>, cwd: string, onLine: (line: string) => void) =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, GOFLAGS: "-mod=mod" } })
    let tail = ""
    const lines = (chunk: Buffer) => {
      const text = chunk.toString("utf8")
      tail = (tail + text).slice(-4000)
      for (const l of text.split("\n")) if (l.trim() !== "") onLine(l)
    }
    child.stdout.on("data", lines)
    child.stderr.on("data", lines)
    child.on("error", (e) =>
      reject(new Error(`${cmd} could not start (${e.message}); the test bed needs Go >= 1.26 on PATH (https://go.dev/dl)`)))
    child.on("close", (code) => code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(" ")} failed (exit ${code}):\n${tail}`)))
  })

/**
 * Builds every tool of `modules` that is missing from the cache, printing progress (packages compiled and
 * time taken every 30 s, since the Kubernetes build is long). Binaries are written to a temporary folder and
 * renamed into place, so an interrupted build is never mistaken for a finished one.
 */
export const buildGoTools = async (
  modules: ReadonlyArray<GoModule> = ["kubernetes", "etcd", "kwok", "helm", "jaeger"],
  log: (line: string) => void = console.log
): Promise<void> => {
  for (const module of modules) {
    const dir = toolDir(module)
    const missing = goTools.filter((t) => t.module === module && !existsSync(path.join(dir, t.name)))
    if (missing.length === 0) continue
    const names = missing.map((t) => t.name).join(", ")
    log(`building ${names} from packages/testbed/go/${module} into ${dir} (cold: ${COLD_BUILD[module]} on 2 cores; cached afterwards)`)
    const started = Date.now()
    const tmp = `${dir}.tmp-${process.pid}`
    rmSync(tmp, { recursive: true, force: true })
    mkdirSync(tmp, { recursive: true })
    let compiled = 0
    const progress = setInterval(() => log(`  ... ${module}: ${compiled} packages compiled, ${formatElapsed(Date.now() - started)}`), 30_000)
    try {
      // `-v` names each package as it is compiled: the count is the progress.
      await run("go", ["build", "-v", ...ldflags(module), "-o", `${tmp}/`, ...missing.map((t) => t.pkg)], moduleDir(module), () => compiled++)
    } finally {
      clearInterval(progress)
    }
    mkdirSync(dir, { recursive: true })
    for (const t of missing) renameSync(path.join(tmp, t.name), path.join(dir, t.name))
    rmSync(tmp, { recursive: true, force: true })
    log(`built ${names} in ${formatElapsed(Date.now() - started)}`)
  }
}
