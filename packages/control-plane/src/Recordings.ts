// Recordings: session recording by the VNC proxy, its policy, retention, and the API to list, download and
// delete recordings (owner and admins; anyone else gets 404, like for a session that is not theirs).
//
// What is recorded: one stream per session, the connection of the first viewer that connects while the session
// is to be recorded (its own RFB handshake included, so a player can replay it as a server), from connect to
// disconnect; when that viewer leaves the recording ends, and the next viewer to connect starts a new one. The
// input of every viewer goes to the same recording as a separate track. Every RECORDING_KEYFRAME_INTERVAL the
// proxy adds a full-screen FramebufferUpdateRequest to the recorded viewer's stream (at a message boundary)
// and notes where the full update starts, so a player can seek without replaying everything before it.
// Storage is RecordingStorage (a directory here: RECORDINGS_DIR); metadata sits next to each recording, the
// policy in the Store.
//
// Modules (internal/recording/): format, storage, recorder, rfbServerStream (keyframes), policy, settings, json.
import type { SessionId } from "@streamspace/protocol"
import { Clock, Context, Duration, Effect, Layer, Schedule, Schema, type Scope } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { Audit } from "./Audit.ts"
import { Auth, type AuthError, requireAdmin, type User } from "./Auth.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { ApiError, decodeStrict, errorResponse, json, readBody } from "./internal/api.ts"
import { answering } from "./internal/httpError.ts"
import type { RecordingMeta } from "./internal/recording/format.ts"
import { recordingJson } from "./internal/recording/json.ts"
import { effective, memoryPolicyRepo, type PolicyRepo, RECORDING_POLICIES, type RecordingPolicy } from "./internal/recording/policy.ts"
import { dataKey, metaKey, type Recorder, startRecorder } from "./internal/recording/recorder.ts"
import { recordingsDir } from "./internal/recording/settings.ts"
import { fileStorage, type RecordingStorage } from "./internal/recording/storage.ts"
import { Sessions, type SessionRecord } from "./Sessions.ts"
import { Store } from "./Store.ts"

export { type RecordingStorage, RecordingStorageError, fileStorage } from "./internal/recording/storage.ts"
export { decodeRecording, type RecordingMeta, Track } from "./internal/recording/format.ts"
export { memoryPolicyRepo, type PolicyRepo, type RecordingPolicy } from "./internal/recording/policy.ts"

/** A session whose template says `always` cannot be recorded now (its viewer is refused). */
export class RecordingsError extends Schema.TaggedError<RecordingsError>()("RecordingsError", { message: Schema.String }) {}

/** What the proxy does with the recorded viewer's bytes (see VncProxy). */
export interface RecordingTap {
  readonly server: (bytes: Uint8Array) => void
  /** Returns bytes to send to the server after `bytes` (a keyframe request), if any. */
  readonly client: (bytes: Uint8Array) => Uint8Array | undefined
}

export interface RecordingsShape {
  /** Starts recording this viewer's connection when the session is to be recorded and nothing records it yet; ends with the scope. */
  readonly attach: (session: SessionRecord, viewer: string) => Effect.Effect<RecordingTap | undefined, RecordingsError, Scope.Scope>
  /** One whole input message from any viewer of the session. */
  readonly input: (sessionId: SessionId, message: Uint8Array) => void
  /** Deletes recordings past RECORDING_RETENTION; returns how many. Runs every RECORDING_SWEEP_INTERVAL. */
  readonly sweep: Effect.Effect<number>
  /** Recordings being written now. */
  readonly active: Effect.Effect<number>
}

const RecordingPath = Schema.Struct({ id: Schema.String, rid: Schema.String.pipe(Schema.check(Schema.isPattern(/^r[a-z0-9-]{1,63}$/, { message: "not a recording id" }))) })
const TemplatePolicyBody = Schema.Struct({ policy: Schema.Literals(RECORDING_POLICIES) })
const SessionChoiceBody = Schema.Struct({ enabled: Schema.Boolean })

type Failure = ApiError | AuthError

const answer = answering((e: Failure) =>
  e._tag === "ApiError"
    ? errorResponse(e.status, e.code, e.message)
    : e.reason === "Forbidden"
    ? errorResponse(403, "forbidden", e.message)
    : errorResponse(401, "unauthorized", e.message)
)

const unavailable = (message: string) => new ApiError({ status: 503, code: "unavailable", message })
const notFound = (message: string) => new ApiError({ status: 404, code: "not_found", message })

export const make = (storage: RecordingStorage, policies: PolicyRepo) =>
  Effect.gen(function*() {
    const config = yield* ControlPlaneConfig
    const sessions = yield* Sessions
    const auth = yield* Auth
    const audit = yield* Audit
    const router = yield* HttpRouter.HttpRouter
    const settings = config.recording
    const clock = yield* Clock.Clock
    /** The recording of each session being recorded; a `null` entry reserves the slot while one starts. */
    const recording = new Map<string, Recorder | null>()
    const decoder = new TextDecoder()

    const storeFailed = (e: { readonly message: string }) => unavailable(`recording policy unavailable: ${e.message}`)

    const recordedNow = (session: SessionRecord) =>
      Effect.gen(function*() {
        const policy = yield* policies.templatePolicy(session.template)
        const choice = policy === "optional" ? yield* policies.sessionChoice(session.id) : undefined
        return { policy, enabled: effective(policy, choice) }
      })

    const attach = (session: SessionRecord, viewer: string) =>
      Effect.gen(function*() {
        const { enabled, policy } = yield* recordedNow(session).pipe(Effect.mapError((e) => ({ policy: "always" as const, message: e.message })))
        if (!enabled || recording.has(session.id)) return undefined
        recording.set(session.id, null)
        const now = () => clock.currentTimeMillisUnsafe()
        const id = `r${now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`
        const started = yield* startRecorder({ storage, id, sessionId: session.id, userId: session.userId, viewer, maxBytes: settings.maxBytes, now }).pipe(
          Effect.mapError((e) => ({ policy, message: e.message })),
          Effect.tapError(() => Effect.sync(() => recording.delete(session.id)))
        )
        recording.set(session.id, started)
        yield* Effect.addFinalizer(() =>
          started.finish.pipe(
            Effect.tap((m) => Effect.logInfo("Recordings: recording ended").pipe(Effect.annotateLogs({ recording_id: m.id, bytes: m.bytes, truncated: m.truncated }))),
            Effect.catch((e) => Effect.logError(`Recordings: could not finish recording ${id}: ${e.message}`)),
            Effect.ensuring(Effect.sync(() => recording.delete(session.id)))
          )
        )
        yield* Effect.forkScoped(Effect.repeat(Effect.sync(started.requestKeyframe), Schedule.spaced(settings.keyframeInterval)))
        yield* Effect.logInfo("Recordings: recording started").pipe(Effect.annotateLogs({ recording_id: id, viewer }))
        return { server: started.server, client: started.client } satisfies RecordingTap
      }).pipe(
        Effect.catch((e) =>
          Effect.andThen(
            Effect.logError(`Recordings: cannot record session ${session.id}: ${e.message}`),
            // Under `always` the viewer is refused (the policy says no unrecorded viewing); under `optional` the
            // owner's choice must not take the desktop away, so it is served unrecorded.
            e.policy === "always" ? Effect.fail(new RecordingsError({ message: `this session must be recorded, and the recording cannot start: ${e.message}` })) : Effect.succeed(undefined)
          )
        ),
        Effect.annotateLogs({ session_id: session.id })
      )

    /** The stored metadata of every recording under `prefix`, with the size of its data. */
    const stored = (prefix: string) =>
      Effect.gen(function*() {
        const objects = yield* storage.list(prefix)
        const sizes = new Map(objects.map((o) => [o.key, o.size]))
        const out: Array<{ meta: RecordingMeta; bytes: number | undefined }> = []
        for (const o of objects) {
          if (!o.key.endsWith(".json")) continue
          const meta = yield* storage.get(o.key).pipe(
            Effect.map((b) => JSON.parse(decoder.decode(b)) as RecordingMeta),
            Effect.catchCause(() => Effect.succeed(undefined))
          )
          if (meta !== undefined) out.push({ meta, bytes: sizes.get(dataKey(meta.sessionId, meta.id)) })
        }
        return out
      })

    const sweep = Effect.gen(function*() {
      const retention = settings.retention
      if (retention === undefined) return 0
      const now = yield* Clock.currentTimeMillis
      let removed = 0
      for (const { meta } of yield* stored("")) {
        if (recording.get(meta.sessionId)?.id === meta.id) continue
        const end = Date.parse(meta.endedAt ?? meta.startedAt) + (meta.endedAt === undefined ? meta.durationMs : 0)
        if (end + Duration.toMillis(retention) > now) continue
        yield* storage.remove(dataKey(meta.sessionId, meta.id))
        yield* storage.remove(metaKey(meta.sessionId, meta.id))
        removed++
      }
      if (removed > 0) yield* Effect.logInfo(`Recordings: deleted ${removed} recording(s) past RECORDING_RETENTION`)
      return removed
    }).pipe(Effect.catch((e) => Effect.logError(`Recordings: retention sweep failed: ${e.message}`).pipe(Effect.as(0))))

    yield* Effect.forkScoped(Effect.repeat(sweep, Schedule.spaced(settings.sweepInterval)))

    // ---- API
    const p = "/api/v1"
    const user: Effect.Effect<User, AuthError, HttpServerRequest.HttpServerRequest> = Effect.flatMap(
      HttpServerRequest.HttpServerRequest,
      (request) => auth.authenticateRequest(request)
    )
    const params = Effect.flatMap(HttpRouter.params, (ps) => decodeStrict(Schema.Struct({ id: Schema.String }), { id: ps.id ?? "" }, "path"))
    /** The session, if the user may see it at all (shared users included, once sharing exists). */
    const visible = (u: User, id: string) =>
      sessions.get(u, id).pipe(Effect.mapError(() => notFound(`no session "${id.slice(0, 80)}"`)))
    /** The session, if the user owns it or is an admin: only they may list, watch and delete its recordings. */
    const owned = (u: User, id: string) =>
      Effect.flatMap(visible(u, id), (s) => (s.userId === u.id || u.role === "admin" ? Effect.succeed(s) : Effect.fail(notFound(`no session "${id.slice(0, 80)}"`))))
    const findRecording = (sessionId: string, rid: string) =>
      Effect.flatMap(stored(`${sessionId}/`).pipe(Effect.mapError((e) => unavailable(e.message))), (all) => {
        const found = all.find((r) => r.meta.id === rid)
        return found === undefined ? Effect.fail(notFound(`no recording "${rid}" of session "${sessionId}"`)) : Effect.succeed(found)
      })

    yield* router.add("GET", `${p}/templates/:name/recording`, answer("Recordings.templatePolicy", Effect.gen(function*() {
      yield* user
      const name = (yield* HttpRouter.params).name ?? ""
      const template = yield* sessions.getTemplate(name).pipe(Effect.mapError(() => notFound(`no template "${name.slice(0, 80)}"`)))
      return json({ template: template.name, policy: yield* policies.templatePolicy(template.name).pipe(Effect.mapError(storeFailed)) })
    })))
    yield* router.add("PUT", `${p}/templates/:name/recording`, answer("Recordings.setTemplatePolicy", Effect.gen(function*() {
      const actor = yield* Effect.tap(user, requireAdmin)
      const name = (yield* HttpRouter.params).name ?? ""
      const template = yield* sessions.getTemplate(name).pipe(Effect.mapError(() => notFound(`no template "${name.slice(0, 80)}"`)))
      const { policy } = yield* readBody(TemplatePolicyBody, config.maxBodyBytes)
      yield* policies.setTemplatePolicy(template.name, policy).pipe(Effect.mapError(storeFailed))
      yield* audit.record(actor, "template.recording_policy", { type: "template", id: template.name }, { policy })
      return json({ template: template.name, policy })
    })))
    yield* router.add("GET", `${p}/sessions/:id/recording`, answer("Recordings.status", Effect.gen(function*() {
      const u = yield* user
      const session = yield* visible(u, (yield* params).id)
      const { policy, enabled } = yield* recordedNow(session).pipe(Effect.mapError(storeFailed))
      const now = recording.get(session.id)
      return json({ session_id: session.id, policy, enabled, recording: now !== undefined && now !== null, recording_id: now?.id ?? null })
    })))
    yield* router.add("PUT", `${p}/sessions/:id/recording`, answer("Recordings.choose", Effect.gen(function*() {
      const u = yield* user
      const session = yield* owned(u, (yield* params).id)
      const { enabled } = yield* readBody(SessionChoiceBody, config.maxBodyBytes)
      const policy: RecordingPolicy = yield* policies.templatePolicy(session.template).pipe(Effect.mapError(storeFailed))
      if (policy !== "optional" && effective(policy, enabled) !== enabled) {
        return yield* new ApiError({
          status: 409,
          code: "conflict",
          message: `template "${session.template}" has recording policy "${policy}": ${policy === "always" ? "its sessions are always recorded" : "its sessions cannot be recorded"}`
        })
      }
      yield* policies.setSessionChoice(session.id, enabled).pipe(Effect.mapError(storeFailed))
      yield* audit.record(u, enabled ? "session.recording_on" : "session.recording_off", { type: "session", id: session.id })
      return json({ session_id: session.id, policy, enabled })
    })))
    yield* router.add("GET", `${p}/sessions/:id/recordings`, answer("Recordings.list", Effect.gen(function*() {
      const u = yield* user
      const session = yield* owned(u, (yield* params).id)
      const all = yield* stored(`${session.id}/`).pipe(Effect.mapError((e) => unavailable(e.message)))
      const items = all.map(({ meta, bytes }) => {
        const live = recording.get(session.id)
        return live?.id === meta.id ? recordingJson(live.meta(), true) : recordingJson(meta, false, bytes)
      }).sort((a, b) => (a.started_at < b.started_at ? 1 : -1))
      return json({ recordings: items })
    })))
    yield* router.add("GET", `${p}/sessions/:id/recordings/:rid`, answer("Recordings.download", Effect.gen(function*() {
      const u = yield* user
      const { id, rid } = yield* Effect.flatMap(HttpRouter.params, (ps) => decodeStrict(RecordingPath, ps, "path"))
      const session = yield* owned(u, id)
      const { meta } = yield* findRecording(session.id, rid)
      // Read up to the size at this moment: a recording being written keeps growing.
      const { size, bytes } = yield* storage.read(dataKey(session.id, meta.id)).pipe(Effect.mapError((e) => e.reason === "NotFound" ? notFound(e.message) : unavailable(e.message)))
      return HttpServerResponse.stream(bytes, {
        contentType: "application/vnd.streamspace.recording",
        contentLength: size,
        headers: { "content-disposition": `attachment; filename="${session.id}-${meta.id}.ssrec"`, "cache-control": "no-store" }
      })
    })))
    yield* router.add("DELETE", `${p}/sessions/:id/recordings/:rid`, answer("Recordings.remove", Effect.gen(function*() {
      const u = yield* user
      const { id, rid } = yield* Effect.flatMap(HttpRouter.params, (ps) => decodeStrict(RecordingPath, ps, "path"))
      const session = yield* owned(u, id)
      const { meta } = yield* findRecording(session.id, rid)
      if (recording.get(session.id)?.id === meta.id) {
        return yield* new ApiError({ status: 409, code: "conflict", message: `recording "${rid}" is still being written (its viewer is connected)` })
      }
      yield* Effect.all([storage.remove(dataKey(session.id, meta.id)), storage.remove(metaKey(session.id, meta.id))]).pipe(Effect.mapError((e) => unavailable(e.message)))
      yield* audit.record(u, "recording.delete", { type: "session", id: session.id }, { recording_id: meta.id, started_at: meta.startedAt })
      return json({ id: meta.id, session_id: session.id, deleted: true })
    })))

    yield* Effect.logInfo(`Recordings: stored in ${storage.location}`)
    return Recordings.of({
      attach,
      input: (sessionId, message) => {
        const r = recording.get(sessionId)
        if (r !== undefined && r !== null) r.input(message)
      },
      sweep,
      active: Effect.sync(() => [...recording.values()].filter((r) => r !== null).length)
    })
  })

export class Recordings extends Context.Service<Recordings, RecordingsShape>()("control-plane/Recordings") {
  /** Recordings in RECORDINGS_DIR (default `<DATA_DIR>/recordings`), the policy in the Store; registers its routes. */
  static readonly layer = Layer.effect(
    Recordings,
    Effect.gen(function*() {
      const config = yield* ControlPlaneConfig
      const store = yield* Store
      return yield* make(fileStorage(recordingsDir(config.recording, config.database.dataDir)), store.recordingPolicies)
    })
  )
  /** The seam for tests: any storage and policy repository. */
  static readonly layerWith = (storage: RecordingStorage, policies: PolicyRepo = memoryPolicyRepo()) => Layer.effect(Recordings, make(storage, policies))
}
