// How the API shows a recording (snake_case, like the rest of /api/v1).
import type { RecordingMeta } from "./format.ts"

export const recordingJson = (m: RecordingMeta, active: boolean, bytes?: number) => ({
  id: m.id,
  session_id: m.sessionId,
  user_id: m.userId,
  viewer: m.viewer,
  started_at: m.startedAt,
  ended_at: m.endedAt ?? null,
  /** Still being written (the recorded viewer is connected). */
  active,
  /** Ended without its end being written (the control plane stopped while recording): playable up to there. */
  incomplete: !active && m.endedAt === undefined,
  duration_ms: m.durationMs,
  bytes: bytes ?? m.bytes,
  truncated: m.truncated,
  handshake_bytes: m.handshakeBytes ?? null,
  keyframes: m.keyframes.map((k) => ({ time_ms: k.timeMs, offset: k.serverOffset }))
})
