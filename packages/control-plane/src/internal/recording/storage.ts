// Where recordings live: one small interface over named objects, so a directory (a local disk or a mounted
// PVC, `fileStorage` below) or an S3-compatible bucket can hold them. Keys are `<session>/<recording>.rec`
// (the stream) and `<session>/<recording>.json` (its metadata and keyframe index); nothing else is needed
// from the backend:
// * `create` streams one object in order; `close` writes out the rest. `write` never blocks the caller: a
//   backend buffers and reports a failure at `close`. A directory shows the object as it grows, so what was
//   written before a crash stays readable; an S3 backend would upload the stream as numbered part objects
//   (or a multipart upload completed at close, losing a crashed one's tail) and join them on `get`.
// * `put`/`get` whole small objects (the metadata; S3 PUT/GET); `read` streams a recording for download
//   (S3 GET with a streamed body), so a large one is never held in memory.
// * `list(prefix)` (S3 ListObjectsV2 with a prefix) and `remove` (DELETE).
// Metadata is kept next to the data, not in the database, so a recording and its index travel together and
// survive a control-plane restart or a move to another replica sharing the same volume or bucket.
import { Data, Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as path from "node:path"

export class RecordingStorageError extends Data.TaggedError("RecordingStorageError")<{
  readonly reason: "NotFound" | "InvalidKey" | "Io"
  readonly message: string
}> {}

export interface RecordingWriter {
  /** Appends bytes (buffered; never throws: a write failure is reported by `close`). */
  readonly write: (bytes: Uint8Array) => void
  /** Writes what is buffered and makes the object whole. */
  readonly close: Effect.Effect<void, RecordingStorageError>
}

export interface StoredObject {
  readonly key: string
  readonly size: number
}

export interface RecordingStorage {
  /** Human-readable place, for logs (a directory, a bucket URL). */
  readonly location: string
  readonly create: (key: string) => Effect.Effect<RecordingWriter, RecordingStorageError>
  readonly put: (key: string, bytes: Uint8Array) => Effect.Effect<void, RecordingStorageError>
  readonly get: (key: string) => Effect.Effect<Uint8Array, RecordingStorageError>
  /** The object's size and its bytes as a stream (NotFound when it is missing). */
  readonly read: (key: string) => Effect.Effect<{ readonly size: number; readonly bytes: Stream.Stream<Uint8Array, RecordingStorageError> }, RecordingStorageError>
  readonly list: (prefix: string) => Effect.Effect<ReadonlyArray<StoredObject>, RecordingStorageError>
  /** Removing a missing object succeeds. */
  readonly remove: (key: string) => Effect.Effect<void, RecordingStorageError>
}

const KEY = /^[A-Za-z0-9][A-Za-z0-9._-]*(\/[A-Za-z0-9][A-Za-z0-9._-]*)*$/

const checkKey = (key: string, prefix = false): Effect.Effect<string, RecordingStorageError> =>
  (prefix && key === "") || (KEY.test(key) && key.length <= 512 && !key.split("/").some((p) => p === "." || p === ".."))
    ? Effect.succeed(key)
    : Effect.fail(new RecordingStorageError({ reason: "InvalidKey", message: `invalid recording key ${JSON.stringify(key.slice(0, 80))}` }))

const io = (what: string) => (e: unknown) => {
  const code = (e as { code?: string }).code
  return new RecordingStorageError({
    reason: code === "ENOENT" ? "NotFound" : "Io",
    message: `${what}: ${e instanceof Error ? e.message : String(e)}`
  })
}

/** Bytes a file writer holds before writing them out. */
const FLUSH_BYTES = 256 * 1024

/**
 * Recordings in a directory (created 0700; files 0600: they hold what users saw and typed). An object being
 * written is readable under its key up to what was flushed (every FLUSH_BYTES, and at close).
 */
export const fileStorage = (root: string): RecordingStorage => {
  const abs = path.resolve(root)
  const file = (key: string) => path.join(abs, ...key.split("/"))
  const ensureDir = (p: string) => fs.mkdirSync(path.dirname(p), { recursive: true, mode: 0o700 })

  const create = (key: string) =>
    Effect.flatMap(checkKey(key), (k) =>
      Effect.try({
        try: (): RecordingWriter => {
          const target = file(k)
          ensureDir(target)
          const fd = fs.openSync(target, "w", 0o600)
          let pending: Array<Uint8Array> = []
          let pendingBytes = 0
          let failure: unknown = undefined
          let closed = false
          const flush = () => {
            if (pendingBytes === 0 || failure !== undefined) return
            try {
              fs.writeSync(fd, Buffer.concat(pending, pendingBytes))
            } catch (e) {
              failure = e
            }
            pending = []
            pendingBytes = 0
          }
          return {
            write: (bytes) => {
              if (closed) return
              pending.push(bytes)
              pendingBytes += bytes.length
              if (pendingBytes >= FLUSH_BYTES) flush()
            },
            close: Effect.suspend(() => {
              if (closed) return Effect.void
              closed = true
              flush()
              return Effect.try({
                try: () => {
                  fs.closeSync(fd)
                  if (failure !== undefined) throw failure
                },
                catch: io(`cannot write recording ${k}`)
              })
            })
          }
        },
        catch: io(`cannot create recording ${k}`)
      }))

  return {
    location: abs,
    create,
    put: (key, bytes) =>
      Effect.flatMap(checkKey(key), (k) =>
        Effect.try({
          try: () => {
            const target = file(k)
            ensureDir(target)
            // Written whole to a temporary name and renamed: a reader never sees half of it.
            fs.writeFileSync(`${target}.tmp`, bytes, { mode: 0o600 })
            fs.renameSync(`${target}.tmp`, target)
          },
          catch: io(`cannot write ${k}`)
        })),
    get: (key) =>
      Effect.flatMap(checkKey(key), (k) =>
        Effect.try({ try: () => new Uint8Array(fs.readFileSync(file(k))), catch: io(`cannot read ${k}`) })),
    read: (key) =>
      Effect.flatMap(checkKey(key), (k) =>
        Effect.try({
          try: () => {
            const size = fs.statSync(file(k)).size
            const bytes = Stream.fromAsyncIterable(
              { [Symbol.asyncIterator]: () => fs.createReadStream(file(k), { highWaterMark: FLUSH_BYTES, end: Math.max(0, size - 1), start: 0 })[Symbol.asyncIterator]() },
              io(`cannot read ${k}`)
            ).pipe(Stream.map((chunk: Buffer) => new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)))
            return { size, bytes: size === 0 ? Stream.empty : bytes }
          },
          catch: io(`cannot read ${k}`)
        })),
    list: (prefix) =>
      Effect.flatMap(checkKey(prefix.replace(/\/$/, ""), true), () =>
        Effect.try({
          try: () => {
            const out: Array<StoredObject> = []
            const walk = (dir: string, rel: string) => {
              let entries: Array<fs.Dirent>
              try {
                entries = fs.readdirSync(dir, { withFileTypes: true })
              } catch (e) {
                if ((e as { code?: string }).code === "ENOENT") return
                throw e
              }
              for (const entry of entries) {
                const key = rel === "" ? entry.name : `${rel}/${entry.name}`
                if (entry.isDirectory()) walk(path.join(dir, entry.name), key)
                else if (entry.isFile() && KEY.test(key) && !key.endsWith(".tmp") && key.startsWith(prefix)) {
                  out.push({ key, size: fs.statSync(path.join(dir, entry.name)).size })
                }
              }
            }
            walk(abs, "")
            return out.sort((a, b) => (a.key < b.key ? -1 : 1))
          },
          catch: io(`cannot list recordings under ${abs}`)
        })),
    remove: (key) =>
      Effect.flatMap(checkKey(key), (k) =>
        Effect.try({
          try: () => {
            fs.rmSync(file(k), { force: true })
            const dir = path.dirname(file(k))
            if (dir !== abs && fs.existsSync(dir) && fs.readdirSync(dir).length === 0) fs.rmdirSync(dir)
          },
          catch: io(`cannot delete ${k}`)
        }))
  }
}
