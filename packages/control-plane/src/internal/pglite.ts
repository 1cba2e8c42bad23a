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

const readCache = (file: string | undefined): Blob | undefined => {
  if (file === undefined) return undefined
  try {
    const st = fs.lstatSync(file)
    if (!st.isFile() || st.uid !== process.getuid?.()) return undefined
    return new Blob([fs.readFileSync(file)])
  } catch {
    return undefined
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

const isFreshDir = (dir: string): boolean => !fs.existsSync(dir) || fs.readdirSync(dir).length === 0

/**
 * Opens PGlite persisted in `dataDir`, or in memory when `dataDir` is undefined.
 * An existing cluster in `dataDir` is opened as it is; a missing or empty one is created.
 */
export const openPglite = async (dataDir: string | undefined): Promise<PGlite> => {
  if (dataDir !== undefined && !isFreshDir(dataDir)) return PGlite.create(dataDir, options)
  // Unpacked into DATA_DIR, the cluster is closed and opened again as an existing one: the instance that
  // unpacked it keeps the whole tarball (~40 MB) reachable for as long as it is open.
  const open = async (blob: Blob) => {
    if (dataDir === undefined) return PGlite.create({ ...options, loadDataDir: blob })
    await (await PGlite.create(dataDir, { ...options, loadDataDir: blob })).close()
    return PGlite.create(dataDir, options)
  }
  try {
    return await open(await getTemplate(false))
  } catch {
    // A stale or damaged template (e.g. from another PGlite build): rebuild it once, from scratch.
    dropCache(cacheFile())
    if (dataDir !== undefined && fs.existsSync(dataDir)) {
      // it was empty before: clear what the failed unpack left, keep the directory (it may be a mount point)
      for (const entry of fs.readdirSync(dataDir)) fs.rmSync(path.join(dataDir, entry), { recursive: true, force: true })
    }
    return open(await getTemplate(true))
  }
}
