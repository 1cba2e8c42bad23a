// The public packages as npm tarballs: each is built to JavaScript + .d.ts (its tsconfig.build.json), staged in
// a temporary folder with its published manifest, and packed there with `npm pack`.
//
//   npm run pack:public -- <out-dir>     (default: ./dist-packages)
//
// Why a staged copy: inside this repository every package's `exports` points at its TypeScript sources (Node
// strips types outside node_modules, so `node packages/*/src/main.ts`, vitest and tsc all run the sources with
// nothing built). Node does not strip types inside node_modules, so the published manifest points at dist/
// instead: it is the repository manifest with `publishConfig.exports` as `exports` (the convention pnpm and
// yarn apply on publish), and without `scripts`, `devDependencies` and `publishConfig`. The repository's own
// manifests are never rewritten, so nothing running beside a pack sees a half-published package.
import { execFileSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { builtinModules } from "node:module"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { repoRoot } from "./cache.ts"

/** Publishable packages, in dependency order. */
export const PUBLIC_PACKAGES = ["protocol", "kube-testserver", "vnc-testserver", "testkit", "agent", "control-plane"] as const

export interface PackedPackage {
  readonly name: string
  readonly version: string
  /** packages/<dir> */
  readonly dir: string
  /** Absolute path of the .tgz. */
  readonly tarball: string
}

type Manifest = Record<string, any>

const readManifest = (dir: string): Manifest => JSON.parse(readFileSync(path.join(dir, "package.json"), "utf8"))

/** The manifest as published: `publishConfig.exports` becomes `exports`; repository-only fields go. */
export const publishedManifest = (manifest: Manifest): Manifest => {
  const { scripts: _s, devDependencies: _d, publishConfig, ...rest } = manifest
  if (publishConfig?.exports === undefined) throw new Error(`${manifest.name}: no publishConfig.exports (what the published package exports)`)
  return { ...rest, exports: publishConfig.exports }
}

/** Builds one package's library (tsc -p tsconfig.build.json, into dist/). */
export const buildPackage = (dir: string): void => {
  // Stale outputs of a removed source go first; anything else in dist/ stays (the agent's image bundle,
  // dist/main.mjs, which another test may be running).
  if (existsSync(path.join(dir, "dist"))) for (const f of walk(path.join(dir, "dist"))) if (/\.(js|d\.ts)$/.test(f)) rmSync(f)
  execFileSync(path.join(repoRoot, "node_modules/.bin/tsc"), ["-p", "tsconfig.build.json"], { cwd: dir, stdio: "pipe" })
}

const walk = (dir: string): Array<string> =>
  readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f)
    return statSync(p).isDirectory() ? walk(p) : [p]
  })

/** Bare module specifiers a built file imports (static, dynamic and type imports). */
export const importedPackages = (source: string): Array<string> => {
  const out = new Set<string>()
  const statements = /^\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^"']+)["']|^\s*import\s*["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/gm
  for (const m of source.matchAll(statements)) {
    const spec = (m[1] ?? m[2] ?? m[3])!
    if (spec.startsWith(".") || !/^(@[a-z0-9-~][a-z0-9-._~]*\/)?[a-z0-9-~][a-z0-9-._~]*(\/.*)?$/.test(spec)) continue
    if (spec.startsWith("node:") || builtinModules.includes(spec)) continue
    const parts = spec.split("/")
    out.add(spec.startsWith("@") ? `${parts[0]}/${parts[1]}` : parts[0]!)
  }
  return [...out]
}

const typesPackage = (pkg: string) => `@types/${pkg.replace(/^@/, "").replace("/", "__")}`

/** Whether an installed package carries its own type declarations. */
const shipsTypes = (pkg: string): boolean => {
  if (pkg.startsWith("@streamspace/")) return true // ours: published with dist/*.d.ts
  const file = path.join(repoRoot, "node_modules", pkg, "package.json")
  if (!existsSync(file)) return false
  const m = JSON.parse(readFileSync(file, "utf8"))
  return m.types !== undefined || m.typings !== undefined || JSON.stringify(m.exports ?? {}).includes("types") ||
    ["index.d.ts", "dist/index.d.ts", "dist/dts/index.d.ts"].some((f) => existsSync(path.join(repoRoot, "node_modules", pkg, f)))
}

/**
 * Packages the built files import that the manifest does not declare (a dependency that only resolves here
 * because the workspace hoisted it). Type-only imports count too: a missing types package turns into `any`.
 */
export const undeclaredImports = (dir: string): Array<{ readonly file: string; readonly pkg: string }> => {
  const manifest = readManifest(dir)
  const declared = new Set([...Object.keys(manifest.dependencies ?? {}), ...Object.keys(manifest.peerDependencies ?? {}), manifest.name])
  const missing: Array<{ file: string; pkg: string }> = []
  for (const file of walk(path.join(dir, "dist")).filter((f) => f.endsWith(".js") || f.endsWith(".d.ts"))) {
    for (const pkg of importedPackages(readFileSync(file, "utf8"))) {
      if (!declared.has(pkg)) missing.push({ file: path.relative(dir, file), pkg })
      // A declaration file importing a package without types of its own needs its @types package too.
      const types = typesPackage(pkg)
      if (file.endsWith(".d.ts") && !shipsTypes(pkg) && !declared.has(types)) missing.push({ file: path.relative(dir, file), pkg: types })
    }
  }
  return missing
}

/** Stages and packs one built package into `outDir`. */
export const packPackage = (dir: string, outDir: string): PackedPackage => {
  const manifest = readManifest(dir)
  const stage = mkdtempSync(path.join(tmpdir(), "streamspace-pack-"))
  try {
    writeFileSync(path.join(stage, "package.json"), JSON.stringify(publishedManifest(manifest), null, 2) + "\n")
    // Built library files only (the agent's dist/ may also hold its image bundle, main.mjs).
    cpSync(path.join(dir, "dist"), path.join(stage, "dist"), { recursive: true, filter: (src) => statSync(src).isDirectory() || /\.(js|d\.ts)$/.test(src) })
    // Everything else `files` names (README.md, the control plane's web/).
    for (const extra of (manifest.files ?? []) as Array<string>) {
      if (!extra.startsWith("dist") && existsSync(path.join(dir, extra))) cpSync(path.join(dir, extra), path.join(stage, extra), { recursive: true })
    }
    const out = execFileSync("npm", ["pack", "--json", "--pack-destination", outDir], { cwd: stage, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] })
    const [info] = JSON.parse(out) as Array<{ filename: string }>
    return { name: manifest.name, version: manifest.version, dir, tarball: path.join(outDir, info!.filename) }
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
}

/** Builds, checks and packs every public package into `outDir`. */
export const packPublic = (outDir: string): Array<PackedPackage> => {
  mkdirSync(outDir, { recursive: true })
  return PUBLIC_PACKAGES.map((name) => {
    const dir = path.join(repoRoot, "packages", name)
    buildPackage(dir)
    const missing = undeclaredImports(dir)
    if (missing.length > 0) {
      throw new Error(`${name} imports packages its package.json does not declare: ${missing.map((m) => `${m.pkg} (${m.file})`).join(", ")}`)
    }
    return packPackage(dir, outDir)
  })
}

if (import.meta.main) {
  const out = path.resolve(process.argv[2] ?? "dist-packages")
  for (const p of packPublic(out)) console.log(`${p.name}@${p.version}  ${p.tarball}`)
}
