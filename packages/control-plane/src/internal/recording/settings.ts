// The recording settings (part of ControlPlaneConfig): where recordings go, how big one may grow, how long
// they are kept, and how often a recording asks for a full screen (a keyframe the player can seek to).
import { DurationString, IntString, parseDuration, setting, SettingError } from "@streamspace/protocol"
import { Duration, Effect, Schema } from "effect"
import * as path from "node:path"

export interface RecordingSettings {
  /** RECORDINGS_DIR; unset: `<DATA_DIR>/recordings`. */
  readonly dir: string | undefined
  /** RECORDING_MAX_BYTES: one recording stops (marked truncated) when it would grow past this. */
  readonly maxBytes: number
  /** RECORDING_RETENTION: a recording is deleted this long after it ended; undefined (`off`): kept. */
  readonly retention: Duration.Duration | undefined
  /** RECORDING_KEYFRAME_INTERVAL: how often the recorded viewer's connection is asked for a full update. */
  readonly keyframeInterval: Duration.Duration
  /** RECORDING_SWEEP_INTERVAL: how often retention is applied. */
  readonly sweepInterval: Duration.Duration
}

export const DEFAULT_RECORDING_MAX_BYTES = 1024 * 1024 * 1024

/** The directory recordings go to when RECORDINGS_DIR is unset. */
export const recordingsDir = (settings: RecordingSettings, dataDir: string): string => settings.dir ?? path.join(dataDir, "recordings")

export const readRecordingSettings: Effect.Effect<RecordingSettings, SettingError> = Effect.gen(function*() {
  const duration = (name: string, def: string) => setting(name, DurationString, { default: def, expected: "a duration such as 500ms, 30s, 5m or 1h" })
  const dir = (yield* setting("RECORDINGS_DIR", Schema.String, { default: "", expected: "a directory" })).trim()
  const maxBytes = yield* setting("RECORDING_MAX_BYTES", IntString(1024 * 1024, Number.MAX_SAFE_INTEGER), {
    default: String(DEFAULT_RECORDING_MAX_BYTES),
    expected: "bytes, at least 1048576"
  })
  const retentionText = (yield* setting("RECORDING_RETENTION", Schema.String, { default: "720h", expected: "off or a duration such as 720h" })).trim()
  let retention: Duration.Duration | undefined = undefined
  if (retentionText !== "off") {
    const d = parseDuration(retentionText)
    if (d === undefined || Duration.toMillis(d) <= 0) {
      return yield* new SettingError({ variable: "RECORDING_RETENTION", message: `RECORDING_RETENTION=${JSON.stringify(retentionText)} is invalid: expected off or a duration such as 720h` })
    }
    retention = d
  }
  const keyframeInterval = yield* duration("RECORDING_KEYFRAME_INTERVAL", "10s")
  if (Duration.toMillis(keyframeInterval) < 100) {
    return yield* new SettingError({ variable: "RECORDING_KEYFRAME_INTERVAL", message: "RECORDING_KEYFRAME_INTERVAL must be at least 100ms" })
  }
  const sweepInterval = yield* duration("RECORDING_SWEEP_INTERVAL", "10m")
  return { dir: dir === "" ? undefined : dir, maxBytes, retention, keyframeInterval, sweepInterval }
})
