// One recording: the recorded viewer's connection (server track, with keyframes found by rfbServerStream) and
// every viewer's input (input track), appended to one storage object through RecordingWriter, with the
// size limit applied. Its metadata object is written when it starts and again when it ends. Synchronous on
// the byte path (it sits in the proxy's relay callbacks); time comes from the `now` it is given.
import { Effect } from "effect"
import { makeRfbClientParser } from "../vnc/rfbClientMessages.ts"
import { encodeRecord, type Keyframe, MAGIC, RECORD_HEADER_BYTES, type RecordingMeta, Track } from "./format.ts"
import { makeServerStreamParser } from "./rfbServerStream.ts"
import type { RecordingStorage, RecordingStorageError } from "./storage.ts"

export const dataKey = (sessionId: string, id: string) => `${sessionId}/${id}.rec`
export const metaKey = (sessionId: string, id: string) => `${sessionId}/${id}.json`

/** A FramebufferUpdateRequest for the whole screen, not incremental: asks the server for a keyframe. */
export const fullUpdateRequest = (width: number, height: number): Uint8Array =>
  new Uint8Array([3, 0, 0, 0, 0, 0, width >> 8, width & 255, height >> 8, height & 255])

export interface RecorderOptions {
  readonly storage: RecordingStorage
  readonly id: string
  readonly sessionId: string
  readonly userId: string
  readonly viewer: string
  readonly maxBytes: number
  /** Wall-clock milliseconds (the Clock's). */
  readonly now: () => number
}

export interface Recorder {
  readonly id: string
  /** Bytes the server sent to the recorded viewer. */
  readonly server: (bytes: Uint8Array) => void
  /**
   * Bytes the recorded viewer sent; returns a keyframe request to send after them when one is due and the
   * viewer's stream is at a message boundary.
   */
  readonly client: (bytes: Uint8Array) => Uint8Array | undefined
  /** One whole input message (KeyEvent, PointerEvent, ClientCutText) from any viewer of the session. */
  readonly input: (message: Uint8Array) => void
  /** Asks for a keyframe at the next chance (RECORDING_KEYFRAME_INTERVAL). */
  readonly requestKeyframe: () => void
  /** The recording hit its size limit and writes nothing more. */
  readonly full: () => boolean
  readonly meta: () => RecordingMeta
  /** Makes the recording whole and writes its final metadata; once. */
  readonly finish: Effect.Effect<RecordingMeta, RecordingStorageError>
}

export const startRecorder = (options: RecorderOptions): Effect.Effect<Recorder, RecordingStorageError> =>
  Effect.gen(function*() {
    const { storage, id, sessionId, maxBytes, now } = options
    const startedMs = now()
    const writer = yield* storage.create(dataKey(sessionId, id))
    writer.write(MAGIC)
    let bytes = MAGIC.length
    let serverBytes = 0
    let truncated = false
    let handshakeBytes: number | undefined = undefined
    let size: { width: number; height: number } | undefined = undefined
    const keyframes: Array<Keyframe> = []
    let keyframeDue = false
    let securityKnown = false
    let lastMs = 0
    const elapsed = () => {
      // Never backwards, whatever the wall clock does.
      lastMs = Math.max(lastMs, now() - startedMs)
      return lastMs
    }

    const serverParser = makeServerStreamParser({
      onHandshake: (offset, width, height) => {
        handshakeBytes = offset
        size = { width, height }
      },
      onFullUpdate: (offset) => {
        // The first full update (noVNC asks for one after the handshake) is a keyframe too.
        const last = keyframes[keyframes.length - 1]
        if (last === undefined || last.serverOffset < offset) keyframes.push({ timeMs: elapsed(), serverOffset: offset })
      }
    })
    const clientParser = makeRfbClientParser()

    const append = (track: Track, payload: Uint8Array): boolean => {
      if (truncated) return false
      if (bytes + RECORD_HEADER_BYTES + payload.length > maxBytes) {
        truncated = true
        return false
      }
      writer.write(encodeRecord(track, elapsed(), payload))
      bytes += RECORD_HEADER_BYTES + payload.length
      return true
    }

    const meta = (endedMs?: number): RecordingMeta => ({
      id,
      sessionId,
      userId: options.userId,
      viewer: options.viewer,
      startedAt: new Date(startedMs).toISOString(),
      ...(endedMs === undefined ? {} : { endedAt: new Date(endedMs).toISOString() }),
      durationMs: lastMs,
      bytes,
      truncated,
      ...(handshakeBytes === undefined ? {} : { handshakeBytes }),
      keyframes: [...keyframes]
    })
    yield* storage.put(metaKey(sessionId, id), new TextEncoder().encode(JSON.stringify(meta())))

    let finished: RecordingMeta | undefined = undefined
    return {
      id,
      server: (chunk) => {
        if (!append(Track.server, chunk)) return
        serverParser.push(chunk)
        serverBytes += chunk.length
      },
      client: (chunk) => {
        for (const m of clientParser.push(chunk)) {
          if (m.type === "SetPixelFormat") serverParser.setBitsPerPixel(m.raw[4]!)
        }
        if (!securityKnown) {
          for (const step of clientParser.handshake()) {
            if (step.type !== "SecurityType") continue
            securityKnown = true
            serverParser.setSecurityType(step.securityType)
          }
        }
        if (!keyframeDue || truncated || size === undefined) return undefined
        if (clientParser.state().phase !== "messages" || clientParser.buffered() > 0) return undefined
        keyframeDue = false
        return fullUpdateRequest(size.width, size.height)
      },
      input: (message) => void append(Track.input, message),
      requestKeyframe: () => {
        keyframeDue = true
      },
      full: () => truncated,
      meta: () => meta(),
      finish: Effect.suspend(() => {
        if (finished !== undefined) return Effect.succeed(finished)
        const done = meta(startedMs + elapsed())
        finished = done
        return writer.close.pipe(
          Effect.andThen(storage.put(metaKey(sessionId, id), new TextEncoder().encode(JSON.stringify(done)))),
          Effect.as(done)
        )
      })
    } satisfies Recorder
  })
