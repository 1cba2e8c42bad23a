// The read side of an agent link. Tunnel bytes are nearly everything an agent sends, so once the agent is
// admitted its binary frames go to a fast path as they arrive, on the socket's own callback: no copy into an
// ArrayBuffer, no queue, no fiber hop per frame. Everything else queues, in arrival order, for the read loop's
// `pull`; and while anything waits there (or the loop is still busy with its last batch) binary frames queue
// behind it, so frames are handled in the order the agent sent them.
import { Data, Effect, Scope } from "effect"
import type { RawData, WebSocket } from "ws"

export class LinkClosed extends Data.TaggedError("LinkClosed")<{}> {}

export type Frame = string | Uint8Array

export interface LinkReader {
  /** The frames that arrived since the last pull, waiting for one; fails once the socket closed and all were read. */
  readonly pull: Effect.Effect<ReadonlyArray<Frame>, LinkClosed>
  /** From now on binary frames go to `fast` while nothing waits ahead of them; it returns false for one it leaves to the loop. */
  readonly fastPath: (fast: (frame: Uint8Array) => boolean) => void
}

/** The socket is paused while this many bytes wait for the read loop. */
const HIGH_WATER_BYTES = 1024 * 1024

const bytesOf = (data: RawData): Buffer =>
  Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)

export const makeLinkReader = (ws: WebSocket): Effect.Effect<LinkReader, never, Scope.Scope> =>
  Effect.gen(function*() {
    ws.binaryType = "nodebuffer"
    let queued: Array<Frame> = []
    let queuedBytes = 0
    let paused = false
    let closed = false
    /** Set while the loop waits in `pull` with nothing left of its last batch. */
    let waiter: ((frames: ReadonlyArray<Frame> | undefined) => void) | undefined
    let fast: ((frame: Uint8Array) => boolean) | undefined

    const wake = () => {
      const w = waiter
      if (w === undefined) return
      waiter = undefined
      w(take())
    }
    const take = (): ReadonlyArray<Frame> | undefined => {
      if (queued.length === 0) return closed ? undefined : []
      const out = queued
      queued = []
      queuedBytes = 0
      if (paused && !closed) {
        paused = false
        ws.resume()
      }
      return out
    }
    /** A defect the fast path threw: the loop dies with it (as it would have in a fiber) and the socket is dropped. */
    let defect: { readonly cause: unknown } | undefined
    const onMessage = (data: RawData, isBinary: boolean) => {
      if (defect !== undefined) return
      const bytes = bytesOf(data)
      if (isBinary && fast !== undefined && waiter !== undefined) {
        try {
          if (fast(bytes)) return
        } catch (cause) {
          defect = { cause }
          ws.terminate()
          return wake()
        }
      }
      queued.push(isBinary ? bytes : bytes.toString("utf8"))
      queuedBytes += bytes.length
      if (queuedBytes > HIGH_WATER_BYTES && !paused) {
        paused = true
        ws.pause()
      }
      wake()
    }
    const onClose = () => {
      closed = true
      wake()
    }
    ws.on("message", onMessage)
    ws.once("close", onClose)
    // A socket error is followed by its close; handling it keeps the process from throwing.
    const onError = () => undefined
    ws.on("error", onError)
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        ws.off("message", onMessage)
        ws.off("close", onClose)
        // Let the close handshake proceed once nothing reads.
        if (paused) ws.resume()
      })
    )

    const pull: Effect.Effect<ReadonlyArray<Frame>, LinkClosed> = Effect.suspend(() => {
      if (defect !== undefined) return Effect.die(defect.cause)
      const now = take()
      if (now === undefined) return Effect.fail(new LinkClosed())
      if (now.length > 0) return Effect.succeed(now)
      return Effect.callback<ReadonlyArray<Frame>, LinkClosed>((resume) => {
        waiter = (frames) =>
          resume(defect !== undefined ? Effect.die(defect.cause) : frames === undefined ? Effect.fail(new LinkClosed()) : Effect.succeed(frames))
        return Effect.sync(() => {
          waiter = undefined
        })
      })
    })
    return { pull, fastPath: (f) => void (fast = f) }
  })
