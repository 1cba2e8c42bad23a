// Opening an embedded PGlite database quickly.
//
// A fresh PGlite cluster runs initdb inside WebAssembly: 7-10 s of CPU, and over 30 s on a busy
// machine. A fresh cluster is the same bytes every time, so the first one is dumped to a tarball
// and every later fresh database (in memory or in an empty DATA_DIR) is unpacked from it in
// about 1 s. The tarball (~40 MB) is kept on disk in a private per-user directory under the OS
// temp dir, keyed by the PGlite version, and read for each fresh database, not kept in memory
// (each database opens in its own worker thread, which would hold it for as long as it runs).
// A bad or foreign cache file is ignored and rebuilt, never trusted blindly.
//
// PostgreSQL's shared buffers are WebAssembly memory that PGlite's PostgreSQL fills at start:
// its default 128MB was most of the control plane's idle RSS. The control plane's embedded
// database is small (one replica; a large install uses DATABASE_URL) and its files stay in the
// OS page cache, so PGlite runs with SHARED_BUFFERS.
import { PGlite } from "@electric-sql/pglite"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"

const pgliteVersion = (): string => {
  try {
    const require = createRequire(import.meta.url)
    let dir = path.dirname(require.resolve("@electric-sql/pglite"))
    for (let i = 0; i < 4; i++) {
      const file = path.join(dir, "package.json")
      if (fs.existsSync(file)) {
        const pkg = JSON.parse(fs.readFileSync(file, "utf8")) as { name?: string; version?: string }
        if (pkg.name === "@electric-sql/pglite" && typeof pkg.version === "string") return pkg.version
      }
      dir = path.dirname(dir)
    }
  } catch {
    // fall through: an unknown version only disables the disk cache
  }
  return "unknown"
}

/** The cache directory, or undefined when it is not private to this user (then only memory is used). */
const cacheDir = (): string | undefined => {
  const uid = typeof process.getuid === "function" ? process.getuid() : undefined
  if (uid === undefined) return undefined
  const dir = path.join(os.tmpdir(), `streamspace-pglite-${uid}`)
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    const st = fs.lstatSync(dir)
    if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o077) !== 0) return undefined
    return dir
  } catch {
    return undefined
  }
}

const cacheFile = (): string | undefined => {
  const version = pgliteVersion()
  const dir = version === "unknown" ? undefined : cacheDir()
  return dir === undefined ? undefined : path.join(dir, `template-${version}.tar`)
}

/** Whether `file` is a cache file this user wrote (a regular file it owns). */
const isCached = (file: string | undefined): file is string => {
  if (file === undefined) return false
  try {
    const st = fs.lstatSync(file)
    return st.isFile() && st.uid === process.getuid?.()
  } catch {
    return false
  }
}

const readCache = (file: string | undefined): Blob | undefined => {
  if (!isCached(file)) return undefined
  try {
    return new Blob([fs.readFileSync(file)])
  } catch {
    return undefined
  }
}

/**
 * Unpacks the template tarball into `dir` a block at a time: only directories and regular files, as PGlite's
 * dumpDataDir("none") writes them, files 0600 and directories 0700. (PGlite's own `loadDataDir` reads the whole
 * tarball into memory, and the instance keeps it reachable for as long as it is open.)
 */
const unpackTemplate = (file: string, dir: string): void => {
  const fd = fs.openSync(file, "r")
  try {
    const header = Buffer.alloc(512)
    const chunk = Buffer.alloc(1 << 20)
    for (let at = 0;;) {
      if (fs.readSync(fd, header, 0, 512, at) < 512 || header.every((b) => b === 0)) return
      const field = (from: number, length: number) => header.toString("latin1", from, from + length).replace(/\0.*$/s, "")
      const prefix = field(257, 6) === "ustar" ? field(345, 155) : ""
      const name = path.posix.normalize(`/${prefix === "" ? "" : `${prefix}/`}${field(0, 100)}`)
      const target = path.join(dir, name) // normalized from "/": it stays under dir
      const size = parseInt(field(124, 12).trim() || "0", 8)
      const type = field(156, 1)
      at += 512
      if (type === "5") fs.mkdirSync(target, { recursive: true, mode: 0o700 })
      else if (type === "0" || type === "") {
        fs.mkdirSync(path.dirname(target), { recursive: true, mode: 0o700 })
        const out = fs.openSync(target, "w", 0o600)
        try {
          for (let done = 0; done < size;) {
            const n = fs.readSync(fd, chunk, 0, Math.min(chunk.length, size - done), at + done)
            if (n === 0) throw new Error(`${file}: truncated at ${name}`)
            fs.writeSync(out, chunk, 0, n)
            done += n
          }
        } finally {
          fs.closeSync(out)
        }
      } else throw new Error(`${file}: unexpected entry type ${JSON.stringify(type)} (${name})`)
      at += Math.ceil(size / 512) * 512
    }
  } finally {
    fs.closeSync(fd)
  }
}

const writeCache = async (file: string | undefined, blob: Blob): Promise<void> => {
  if (file === undefined) return
  const tmp = `${file}.${process.pid}.${Date.now()}.tmp`
  try {
    fs.writeFileSync(tmp, Buffer.from(await blob.arrayBuffer()), { mode: 0o600 })
    fs.renameSync(tmp, file) // atomic: concurrent writers each publish a complete file
  } catch {
    fs.rmSync(tmp, { force: true })
  }
}

const dropCache = (file: string | undefined): void => {
  if (file !== undefined) fs.rmSync(file, { force: true })
}

/** PostgreSQL's buffer cache in the embedded database (see the header). */
export const SHARED_BUFFERS = "16MB"
const options = { startParams: [...PGlite.defaultStartParams, "-c", `shared_buffers=${SHARED_BUFFERS}`] }

const buildTemplate = async (): Promise<Blob> => {
  const db = await PGlite.create(options)
  try {
    return await db.dumpDataDir("none")
  } finally {
    await db.close()
  }
}

/** The fresh-cluster tarball: from the disk cache unless `fresh`, else built (and cached). */
const getTemplate = async (fresh: boolean): Promise<Blob> => {
  const file = cacheFile()
  const cached = fresh ? undefined : readCache(file)
  if (cached !== undefined) return cached
  const blob = await buildTemplate()
  await writeCache(file, blob)
  return blob
}

/** What is in `dir` (nothing when it is missing). */
const entries = (dir: string): ReadonlyArray<string> => (fs.existsSync(dir) ? fs.readdirSync(dir) : [])
/**
 * A directory holds a cluster once it has PG_VERSION. Other entries are not one: the quick start keeps its own
 * files in DATA_DIR before the database opens, and a fresh volume may hold `lost+found`.
 */
const hasCluster = (dir: string): boolean => fs.existsSync(path.join(dir, "PG_VERSION"))

/**
 * Opens PGlite persisted in `dataDir`, or in memory when `dataDir` is undefined.
 * An existing cluster in `dataDir` is opened as it is; otherwise one is created there (from the template).
 */
export const openPglite = async (dataDir: string | undefined): Promise<PGlite> => {
  if (dataDir !== undefined && hasCluster(dataDir)) return PGlite.create(dataDir, options)
  const before = new Set(dataDir === undefined ? [] : entries(dataDir))
  const open = async (fresh: boolean) => {
    const file = cacheFile()
    if (dataDir !== undefined && file !== undefined) {
      if (fresh || !isCached(file)) await writeCache(file, await buildTemplate())
      if (isCached(file)) {
        unpackTemplate(file, dataDir)
        return PGlite.create(dataDir, options)
      }
    }
    const blob = await getTemplate(fresh)
    if (dataDir === undefined) return PGlite.create({ ...options, loadDataDir: blob })
    // Without a cache file: unpacked by PGlite, then closed and opened again as an existing cluster, as the
    // unpacking instance keeps the whole tarball reachable for as long as it is open.
    await (await PGlite.create(dataDir, { ...options, loadDataDir: blob })).close()
    return PGlite.create(dataDir, options)
  }
  try {
    return await open(false)
  } catch {
    // A stale or damaged template (e.g. from another PGlite build): rebuild it once, from scratch.
    dropCache(cacheFile())
    if (dataDir !== undefined) {
      // clear what the failed unpack left, keep the directory (it may be a mount point) and what was there before
      for (const entry of entries(dataDir)) if (!before.has(entry)) fs.rmSync(path.join(dataDir, entry), { recursive: true, force: true })
    }
    return open(true)
  }
}
