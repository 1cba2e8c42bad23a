import { assert, describe, it } from "@effect/vitest"
import type { TemplateName, TunnelId, UserId } from "@streamspace/protocol"
import { decodeBinary } from "@streamspace/protocol"
import { Clock, Context, Duration, Effect, Layer, References, Result } from "effect"
import { HttpRouter } from "effect/http"
import { TestClock } from "effect/testing"
import { waitFor } from "@streamspace/testbed"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Audit } from "../src/Audit.ts"
import { Auth, type User } from "../src/Auth.ts"
import { ControlPlaneConfig } from "../src/ControlPlaneConfig.ts"
import { decodeRecording, Track } from "../src/internal/recording/format.ts"
import { fullUpdateRequest, startRecorder } from "../src/internal/recording/recorder.ts"
import { fileStorage } from "../src/internal/recording/storage.ts"
import { memoryPolicyRepo, type PolicyRepo, Recordings } from "../src/Recordings.ts"
import { makeMemoryRepo, Sessions } from "../src/Sessions.ts"
import { VncProxy } from "../src/VncProxy.ts"
import { fakeDispatcherLayer, makeFakeDispatcher } from "./support/fakeDispatcher.ts"
import { type FakeHub, fakeHubLayer, makeFakeHub } from "./support/fakeHub.ts"
import { connectViewer, serveApp } from "./support/http.ts"
import { bearer, sign, TEST_JWT_SECRET } from "./support/jwt.ts"
import * as Rfb from "./support/rfbStream.ts"

const ann: User = { id: "ann" as UserId, role: "user", groups: [] }
const env = { JWT_SECRET: TEST_JWT_SECRET, LOG_LEVEL: "error", RECORDING_KEYFRAME_INTERVAL: "100ms" }
const until = (what: string, check: () => boolean) => waitFor(what, Effect.sync(check))

const services = (hub: FakeHub, dispatcher: Effect.Success<typeof makeFakeDispatcher>, extraEnv: Record<string, string> = {}) =>
  Layer.mergeAll(fakeHubLayer(hub), fakeDispatcherLayer(dispatcher), ControlPlaneConfig.layerFromRecord({ ...env, ...extraEnv }), Layer.succeed(References.MinimumLogLevel, "Error"))

/** The proxy and the recordings API over a fake agent, with recordings in `dir`; one running session of Ann's. */
const serve = (dir: string, policies: PolicyRepo, repo: ReturnType<typeof makeMemoryRepo>) =>
  Effect.gen(function*() {
    const hub = yield* makeFakeHub
    const dispatcher = yield* makeFakeDispatcher
    hub.addAgent("a")
    dispatcher.responder = (d) =>
      d.request.action === "create_session"
        ? { result: { action: "create_session", session: { session_id: d.request.args.session_id, phase: "running", observed_at: "2026-01-01T00:00:00Z" } } }
        : undefined
    const app = VncProxy.layer.pipe(
      Layer.provideMerge(Recordings.layerWith(fileStorage(dir), policies)),
      Layer.provideMerge(Sessions.layerMemory(repo)),
      Layer.provideMerge(Auth.layer),
      Layer.provideMerge(Audit.layerMemory),
      Layer.provideMerge(services(hub, dispatcher))
    )
    const served = yield* serveApp(app)
    const tokens = {
      ann: yield* Effect.promise(() => sign({ sub: "ann" })),
      bob: yield* Effect.promise(() => sign({ sub: "bob" })),
      admin: yield* Effect.promise(() => sign({ sub: "root", role: "admin" }))
    }
    const call = (method: string, p: string, token: string, body?: unknown) =>
      Effect.promise(async () => {
        const res = await fetch(`${served.base}/api/v1${p}`, {
          method,
          headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) })
        })
        const bytes = new Uint8Array(await res.arrayBuffer())
        let json: any = undefined
        try {
          json = JSON.parse(new TextDecoder().decode(bytes))
        } catch {}
        return { status: res.status, json, bytes, type: res.headers.get("content-type") }
      })
    return { hub, served, tokens, call, sessions: Context.get(served.ctx, Sessions), audit: Context.get(served.ctx, Audit), recordings: Context.get(served.ctx, Recordings) }
  })

/** Bytes the viewer sent towards the agent on a tunnel. */
const toAgent = (hub: FakeHub, tunnelId: number) =>
  hub.binary.flatMap((b) => {
    const f = decodeBinary(b.frame)
    return Result.isSuccess(f) && f.success.kind === "data" && f.success.tunnelId === tunnelId ? [...f.success.payload] : []
  })
const contains = (haystack: ReadonlyArray<number>, needle: Uint8Array) =>
  haystack.some((_, i) => needle.every((b, j) => haystack[i + j] === b))

describe("Recordings", () => {
  it.live("policy, recording a viewer with keyframes and every viewer's input, list, download and delete by owner and admin only, kept across a restart", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ss-recs-"))
      const policies = memoryPolicyRepo()
      const repo = makeMemoryRepo()
      const sessionId = yield* Effect.scoped(Effect.gen(function*() {
        const t = yield* serve(dir, policies, repo)
        const s = yield* t.sessions.create(ann, { template: "demo" as TemplateName })
        yield* waitFor("session running", Effect.map(t.sessions.get(ann, s.id), (x) => x.state === "running"))
        const sp = `/sessions/${s.id}`

        // ---- policy: the admin's per template, the owner's choice where it is optional
        assert.strictEqual((yield* t.call("PUT", "/templates/demo/recording", t.tokens.ann, { policy: "optional" })).status, 403)
        assert.strictEqual((yield* t.call("PUT", "/templates/demo/recording", t.tokens.admin, { policy: "sometimes" })).status, 400)
        assert.strictEqual((yield* t.call("PUT", "/templates/nope/recording", t.tokens.admin, { policy: "optional" })).status, 404)
        assert.strictEqual((yield* t.call("PUT", `${sp}/recording`, t.tokens.ann, { enabled: true })).status, 409, "policy off: cannot be enabled")
        assert.deepStrictEqual((yield* t.call("PUT", "/templates/demo/recording", t.tokens.admin, { policy: "optional" })).json, { template: "demo", policy: "optional" })
        assert.deepStrictEqual((yield* t.call("GET", "/templates/demo/recording", t.tokens.ann)).json, { template: "demo", policy: "optional" })
        assert.strictEqual((yield* t.call("GET", `${sp}/recording`, t.tokens.ann)).json.enabled, false)
        assert.strictEqual((yield* t.call("PUT", `${sp}/recording`, t.tokens.bob, { enabled: true })).status, 404)
        assert.strictEqual((yield* t.call("PUT", `${sp}/recording`, t.tokens.ann, { enabled: true })).status, 200)
        assert.deepStrictEqual((yield* t.call("GET", `${sp}/recording`, t.tokens.ann)).json, { session_id: s.id, policy: "optional", enabled: true, recording: false, recording_id: null })

        // ---- a viewer connects: its connection is recorded
        const v = connectViewer(`${t.served.wsBase}/api/v1/sessions/${s.id}/vnc`, bearer(t.tokens.ann))
        yield* Effect.promise(() => v.opened)
        yield* until("the tunnel", () => t.hub.opens.length === 1)
        const tunnelId = t.hub.opens[0]!.tunnelId
        yield* until("sink", () => t.hub.tunnels.has(`a/${tunnelId}`))
        const sink = t.hub.tunnels.get(`a/${tunnelId}`)!
        const agentSends = (payload: Uint8Array) => Effect.sync(() => sink.onFrame({ kind: "data", tunnelId: tunnelId as TunnelId, payload }))
        const status = yield* t.call("GET", `${sp}/recording`, t.tokens.ann)
        assert.isTrue(status.json.recording, "the viewer's mark: this session is being recorded")
        yield* agentSends(Rfb.serverHandshake)
        v.ws.send(Rfb.cat(Rfb.clientHandshake, Rfb.setPixelFormat, Rfb.setEncodings, Rfb.updateRequest(false)))
        yield* agentSends(Rfb.fullRawUpdate(1))
        // A second viewer is not recorded separately; its input goes to the same recording.
        const w = connectViewer(`${t.served.wsBase}/api/v1/sessions/${s.id}/vnc`, bearer(t.tokens.ann))
        yield* Effect.promise(() => w.opened)
        w.ws.send(Rfb.cat(Rfb.clientHandshake, Rfb.setPixelFormat, Rfb.keyEvent(0x62)))
        // Keyframes: the proxy asks the server for a full update after one of the viewer's requests.
        const injected = fullUpdateRequest(Rfb.WIDTH, Rfb.HEIGHT)
        yield* waitFor("a keyframe request", Effect.gen(function*() {
          v.ws.send(Rfb.updateRequest(true))
          yield* Effect.sleep("20 millis")
          return contains(toAgent(t.hub, tunnelId), injected)
        }))
        yield* agentSends(Rfb.fullHextileUpdate())
        v.ws.send(Rfb.keyEvent(0x61))
        yield* until("viewer got it all", () => v.receivedBytes() === Rfb.serverHandshake.length + Rfb.fullRawUpdate().length + Rfb.fullHextileUpdate().length)
        yield* waitFor("both inputs recorded", Effect.map(t.call("GET", `${sp}/recordings`, t.tokens.ann), (r) => r.json.recordings[0]?.keyframes.length === 2))
        const live = (yield* t.call("GET", `${sp}/recordings`, t.tokens.ann)).json.recordings
        assert.strictEqual(live.length, 1, "one recording per session")
        assert.isTrue(live[0].active)
        assert.strictEqual((yield* t.call("DELETE", `${sp}/recordings/${live[0].id}`, t.tokens.ann)).status, 409, "not while it is written")
        w.ws.close()
        v.ws.close()
        yield* waitFor("the recording ended", Effect.map(t.call("GET", `${sp}/recordings`, t.tokens.ann), (r) => r.json.recordings[0]?.active === false))

        // ---- who may see it
        const list = yield* t.call("GET", `${sp}/recordings`, t.tokens.ann)
        const rec = list.json.recordings[0]
        assert.strictEqual(rec.user_id, "ann")
        assert.isString(rec.ended_at)
        assert.isFalse(rec.truncated)
        assert.isFalse(rec.incomplete)
        assert.strictEqual(rec.handshake_bytes, Rfb.serverHandshake.length)
        assert.deepStrictEqual(rec.keyframes.map((k: any) => k.offset), [Rfb.serverHandshake.length, Rfb.serverHandshake.length + Rfb.fullRawUpdate().length])
        assert.strictEqual((yield* t.call("GET", `${sp}/recordings`, t.tokens.bob)).status, 404)
        assert.strictEqual((yield* t.call("GET", `${sp}/recordings/${rec.id}`, t.tokens.bob)).status, 404)
        assert.strictEqual((yield* t.call("DELETE", `${sp}/recordings/${rec.id}`, t.tokens.bob)).status, 404)
        assert.strictEqual((yield* t.call("GET", `${sp}/recordings`, t.tokens.admin)).json.recordings.length, 1)
        assert.strictEqual((yield* t.call("GET", `${sp}/recordings/rnope`, t.tokens.ann)).status, 404)
        assert.strictEqual((yield* t.call("GET", `${sp}/recordings/..%2Fx`, t.tokens.ann)).status, 400)

        // ---- the download is the recorded stream
        const download = yield* t.call("GET", `${sp}/recordings/${rec.id}`, t.tokens.ann)
        assert.strictEqual(download.status, 200)
        assert.strictEqual(download.type, "application/vnd.streamspace.recording")
        const records = decodeRecording(download.bytes)
        const server = records.filter((r) => r.track === Track.server).flatMap((r) => [...r.payload])
        assert.deepStrictEqual(server, [...Rfb.cat(Rfb.serverHandshake, Rfb.fullRawUpdate(1), Rfb.fullHextileUpdate())])
        const input = records.filter((r) => r.track === Track.input).map((r) => [...r.payload])
        assert.deepStrictEqual(input, [[...Rfb.keyEvent(0x62)], [...Rfb.keyEvent(0x61)]])
        assert.strictEqual(rec.bytes, download.bytes.length)
        return s.id
      }))

      // ---- a restart (a new control plane on the same directory and store) still lists, serves and deletes it
      yield* Effect.scoped(Effect.gen(function*() {
        const t = yield* serve(dir, policies, repo)
        const sp = `/sessions/${sessionId}`
        const list = (yield* t.call("GET", `${sp}/recordings`, t.tokens.ann)).json.recordings
        assert.strictEqual(list.length, 1)
        assert.strictEqual((yield* t.call("GET", `${sp}/recordings/${list[0].id}`, t.tokens.admin)).status, 200)
        assert.deepStrictEqual((yield* t.call("DELETE", `${sp}/recordings/${list[0].id}`, t.tokens.ann)).json, { id: list[0].id, session_id: sessionId, deleted: true })
        assert.deepStrictEqual((yield* t.call("GET", `${sp}/recordings`, t.tokens.ann)).json.recordings, [])
        const events = (yield* t.audit.list({ limit: 10 })).events
        const deleted = events.find((e) => e.action === "recording.delete")
        assert.isDefined(deleted)
        assert.strictEqual(deleted!.actor, "ann")
        assert.strictEqual(deleted!.details.recording_id, list[0].id)
        assert.deepStrictEqual(fs.readdirSync(dir), [], "nothing left behind")
      }))
    }))

  it.live("policy always: the owner cannot turn it off; off: nothing is recorded", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ss-recs-"))
      const policies = memoryPolicyRepo()
      const t = yield* serve(dir, policies, makeMemoryRepo())
      const s = yield* t.sessions.create(ann, { template: "demo" as TemplateName })
      yield* waitFor("session running", Effect.map(t.sessions.get(ann, s.id), (x) => x.state === "running"))
      // off (no policy): a viewer is not recorded
      const v = connectViewer(`${t.served.wsBase}/api/v1/sessions/${s.id}/vnc`, bearer(t.tokens.ann))
      yield* Effect.promise(() => v.opened)
      yield* until("the tunnel", () => t.hub.opens.length === 1)
      assert.strictEqual(yield* t.recordings.active, 0)
      assert.isFalse((yield* t.call("GET", `/sessions/${s.id}/recording`, t.tokens.ann)).json.recording)
      v.ws.close()
      yield* t.call("PUT", "/templates/demo/recording", t.tokens.admin, { policy: "always" })
      const off = yield* t.call("PUT", `/sessions/${s.id}/recording`, t.tokens.ann, { enabled: false })
      assert.strictEqual(off.status, 409)
      assert.match(off.json.error.message, /always recorded/)
      const w = connectViewer(`${t.served.wsBase}/api/v1/sessions/${s.id}/vnc`, bearer(t.tokens.ann))
      yield* Effect.promise(() => w.opened)
      yield* until("recording", () => Effect.runSync(t.recordings.active) === 1)
      w.ws.close()
      yield* until("recording ended", () => Effect.runSync(t.recordings.active) === 0)
      assert.strictEqual((yield* t.call("GET", `/sessions/${s.id}/recordings`, t.tokens.ann)).json.recordings.length, 1)
    }))

  it.live("a recording that cannot start refuses the viewer under `always` (close 4507) and serves it unrecorded under `optional`", () =>
    Effect.gen(function*() {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "ss-recs-"))
      const notADir = path.join(tmp, "file")
      fs.writeFileSync(notADir, "")
      const policies = memoryPolicyRepo()
      const t = yield* serve(notADir, policies, makeMemoryRepo())
      const s = yield* t.sessions.create(ann, { template: "demo" as TemplateName })
      yield* waitFor("session running", Effect.map(t.sessions.get(ann, s.id), (x) => x.state === "running"))
      yield* t.call("PUT", "/templates/demo/recording", t.tokens.admin, { policy: "always" })
      const v = connectViewer(`${t.served.wsBase}/api/v1/sessions/${s.id}/vnc`, bearer(t.tokens.ann))
      const closed = yield* Effect.promise(() => v.closed)
      assert.strictEqual(closed.code, 4507)
      assert.match(closed.reason, /must be recorded/)
      assert.strictEqual(t.hub.opens.length, 0, "no tunnel was opened")
      yield* t.call("PUT", "/templates/demo/recording", t.tokens.admin, { policy: "optional" })
      yield* t.call("PUT", `/sessions/${s.id}/recording`, t.tokens.ann, { enabled: true })
      const w = connectViewer(`${t.served.wsBase}/api/v1/sessions/${s.id}/vnc`, bearer(t.tokens.ann))
      yield* Effect.promise(() => w.opened)
      yield* until("the tunnel", () => t.hub.opens.length === 1)
      assert.strictEqual(yield* t.recordings.active, 0)
      w.ws.close()
    }))

  it.effect("settings: defaults, and a bad value is refused naming the variable", () =>
    Effect.gen(function*() {
      const read = (extra: Record<string, string>) =>
        Effect.gen(function*() {
          return (yield* ControlPlaneConfig).recording
        }).pipe(Effect.provide(ControlPlaneConfig.layerFromRecord({ JWT_SECRET: TEST_JWT_SECRET, ...extra })))
      const defaults = yield* read({})
      assert.strictEqual(defaults.dir, undefined)
      assert.strictEqual(defaults.maxBytes, 1024 * 1024 * 1024)
      assert.strictEqual(Duration.toMillis(defaults.retention!), 720 * 3600_000)
      assert.strictEqual(Duration.toMillis(defaults.keyframeInterval), 10_000)
      assert.isUndefined((yield* read({ RECORDING_RETENTION: "off" })).retention)
      assert.strictEqual((yield* read({ RECORDINGS_DIR: "/var/rec" })).dir, "/var/rec")
      for (const [variable, value] of [["RECORDING_RETENTION", "soon"], ["RECORDING_MAX_BYTES", "1000"], ["RECORDING_KEYFRAME_INTERVAL", "10ms"], ["RECORDING_SWEEP_INTERVAL", "often"]] as const) {
        const e = yield* Effect.flip(read({ [variable]: value }))
        assert.include(String((e as { message?: string }).message), variable, `${variable}=${value}`)
      }
    }))

  it.effect("retention: a recording is deleted RECORDING_RETENTION after it ended, on the sweep", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ss-recs-"))
      const storage = fileStorage(dir)
      const clock = yield* Clock.Clock
      const now = () => clock.currentTimeMillisUnsafe()
      const record = (sessionId: string, id: string) =>
        Effect.flatMap(startRecorder({ storage, id, sessionId, userId: "ann", viewer: "v", maxBytes: 1 << 20, now }), (r) => {
          r.server(Rfb.serverHandshake)
          return r.finish
        })
      yield* record("s1", "rold")
      const hub = yield* makeFakeHub
      const dispatcher = yield* makeFakeDispatcher
      yield* Layer.build(Recordings.layerWith(storage).pipe(
        Layer.provide(Layer.mergeAll(Sessions.layerMemory(makeMemoryRepo()), Auth.layer, Audit.layerMemory, HttpRouter.layer).pipe(
          Layer.provideMerge(services(hub, dispatcher, { RECORDING_RETENTION: "1h", RECORDING_SWEEP_INTERVAL: "10m" }))
        ))
      ))
      const keys = () => fs.readdirSync(dir).flatMap((s) => fs.readdirSync(path.join(dir, s)).map((f) => `${s}/${f}`)).sort()
      yield* TestClock.adjust("30 minutes")
      yield* record("s2", "rnew")
      yield* TestClock.adjust("20 minutes")
      assert.deepStrictEqual(keys(), ["s1/rold.json", "s1/rold.rec", "s2/rnew.json", "s2/rnew.rec"], "50 min: both kept")
      yield* TestClock.adjust("10 minutes")
      assert.deepStrictEqual(keys(), ["s2/rnew.json", "s2/rnew.rec"], "60 min: the first is an hour old")
      yield* TestClock.adjust("30 minutes")
      assert.deepStrictEqual(keys(), [], "90 min: the second too")
    }).pipe(Effect.scoped))
})
