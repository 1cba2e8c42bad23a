import { assert, describe, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { decodeRecording, encodeRecord, MAGIC, Track } from "../src/internal/recording/format.ts"
import { fullUpdateRequest, startRecorder } from "../src/internal/recording/recorder.ts"
import { makeServerStreamParser } from "../src/internal/recording/rfbServerStream.ts"
import { fileStorage } from "../src/internal/recording/storage.ts"
import * as Rfb from "./support/rfbStream.ts"

const tmpDir = () => fs.mkdtempSync(path.join(os.tmpdir(), "ss-rec-"))

/** Runs the server parser over `stream` cut into `chunk`-byte pieces; returns what it found. */
const parse = (stream: Uint8Array, chunk: number, securityType = 1) => {
  const found = { handshake: -1, full: [] as Array<number> }
  const p = makeServerStreamParser({ onHandshake: (o) => (found.handshake = o), onFullUpdate: (o) => found.full.push(o) })
  p.setSecurityType(securityType)
  for (let o = 0; o < stream.length; o += chunk) p.push(stream.subarray(o, o + chunk))
  return { ...found, stopped: p.stopped() }
}

describe("recording storage (directory)", () => {
  it.effect("create streams an object that get, list and remove see; files are 0600 in 0700 directories", () =>
    Effect.gen(function*() {
      const dir = tmpDir()
      const storage = fileStorage(path.join(dir, "recs"))
      const w = yield* storage.create("s1/r1.rec")
      w.write(new Uint8Array([1, 2, 3]))
      w.write(new Uint8Array(300_000).fill(9)) // past the flush threshold
      w.write(new Uint8Array([4]))
      yield* w.close
      yield* storage.put("s1/r1.json", new TextEncoder().encode("{}"))
      yield* storage.put("s2/r2.json", new TextEncoder().encode("{}"))
      const got = yield* storage.get("s1/r1.rec")
      assert.strictEqual(got.length, 300_004)
      assert.deepStrictEqual([...got.subarray(0, 3)], [1, 2, 3])
      assert.strictEqual(got[300_003], 4)
      const read = yield* storage.read("s1/r1.rec")
      assert.strictEqual(read.size, 300_004)
      const chunks = yield* Stream.runCollect(read.bytes)
      assert.isAbove(chunks.length, 1, "streamed in pieces")
      assert.deepStrictEqual(Buffer.concat(chunks), Buffer.from(got))
      assert.strictEqual((yield* Effect.flip(storage.read("s1/none.rec"))).reason, "NotFound")
      assert.deepStrictEqual((yield* storage.list("s1/")).map((o) => [o.key, o.size]), [["s1/r1.json", 2], ["s1/r1.rec", 300_004]])
      assert.deepStrictEqual((yield* storage.list("")).map((o) => o.key), ["s1/r1.json", "s1/r1.rec", "s2/r2.json"])
      assert.strictEqual(fs.statSync(path.join(dir, "recs", "s1", "r1.rec")).mode & 0o777, 0o600)
      assert.strictEqual(fs.statSync(path.join(dir, "recs", "s1")).mode & 0o777, 0o700)
      yield* storage.remove("s2/r2.json")
      yield* storage.remove("s2/r2.json") // a missing object: still fine
      assert.isFalse(fs.existsSync(path.join(dir, "recs", "s2")), "an emptied session folder goes too")
      const missing = yield* Effect.flip(storage.get("s9/none.rec"))
      assert.strictEqual(missing.reason, "NotFound")
    }))

  it.effect("refuses keys that could leave the directory", () =>
    Effect.gen(function*() {
      const storage = fileStorage(tmpDir())
      for (const key of ["../x", "a/../../x", "/etc/passwd", "a//b", ".hidden", "a/./b", ""]) {
        const e = yield* Effect.flip(storage.get(key))
        assert.strictEqual(e.reason, "InvalidKey", key)
      }
      assert.strictEqual((yield* Effect.flip(storage.list("../"))).reason, "InvalidKey")
    }))
})

describe("recording format", () => {
  it("records round-trip; a record cut short at the end is left out", () => {
    const bytes = new Uint8Array([...MAGIC, ...encodeRecord(Track.server, 5, new Uint8Array([1, 2])), ...encodeRecord(Track.input, 70_000, new Uint8Array([3]))])
    const all = decodeRecording(bytes)
    assert.deepStrictEqual(all.map((r) => [r.track, r.timeMs, [...r.payload]]), [[0, 5, [1, 2]], [1, 70_000, [3]]])
    assert.strictEqual(decodeRecording(bytes.subarray(0, bytes.length - 1)).length, 1)
    assert.throws(() => decodeRecording(new Uint8Array([1, 2, 3])), /bad magic/)
  })
})

describe("server stream parser (keyframes)", () => {
  const stream = Rfb.cat(
    Rfb.serverHandshake,
    Rfb.fullRawUpdate(1), // keyframe
    Rfb.rawUpdate(2, 2, 4, 4), // partial
    Rfb.bell,
    Rfb.serverCutText("hi"),
    Rfb.fullCopyRect(), // whole screen, but from old content
    Rfb.fullHextileUpdate() // keyframe
  )
  const h = Rfb.serverHandshake.length
  const raw = Rfb.fullRawUpdate(1).length
  const expectedFull = [h, h + raw + Rfb.rawUpdate(2, 2, 4, 4).length + 1 + Rfb.serverCutText("hi").length + Rfb.fullCopyRect().length]

  it("finds the handshake's end and the full updates, however the stream is cut", () => {
    for (const chunk of [1, 3, 7, 64, 100_000]) {
      const r = parse(stream, chunk)
      assert.strictEqual(r.handshake, h, `chunk ${chunk}`)
      assert.deepStrictEqual(r.full, expectedFull, `chunk ${chunk}`)
      assert.strictEqual(r.stopped, undefined)
    }
  })

  it("passes over pixel data without holding it: a 1920x1080 Raw update in 64 KiB chunks", () => {
    const w = 1920
    const h = 1080
    const init = Rfb.cat(Rfb.serverHandshake.subarray(0, 18), [w >> 8, w & 255, h >> 8, h & 255], Rfb.serverHandshake.subarray(22))
    const update = Rfb.cat([0, 0, 0, 1, 0, 0, 0, 0, w >> 8, w & 255, h >> 8, h & 255, 0, 0, 0, 0], new Uint8Array(w * h * 4))
    const found: Array<number> = []
    const p = makeServerStreamParser({ onFullUpdate: (o) => found.push(o) })
    p.setSecurityType(1)
    p.push(init)
    let most = 0
    for (let o = 0; o < update.length; o += 65536) {
      p.push(update.subarray(o, o + 65536))
      most = Math.max(most, p.buffered())
    }
    assert.deepStrictEqual(found, [init.length])
    assert.isBelow(most, 16)
  })

  it("waits for the client's security choice, follows VNC authentication, and stops at an encoding it cannot measure", () => {
    const vncAuth = Rfb.cat(new TextEncoder().encode("RFB 003.008\n"), [1, 2], new Uint8Array(16), [0, 0, 0, 0], Rfb.serverHandshake.subarray(18))
    const found: Array<number> = []
    const p = makeServerStreamParser({ onFullUpdate: (o) => found.push(o) })
    p.push(Rfb.cat(vncAuth, Rfb.fullRawUpdate()))
    assert.deepStrictEqual(found, [], "nothing before the client says which security type")
    p.setSecurityType(2)
    assert.deepStrictEqual(found, [vncAuth.length])
    p.push(Rfb.tightUpdate())
    assert.match(p.stopped() ?? "", /encoding 7/)
    p.push(Rfb.fullRawUpdate())
    assert.strictEqual(found.length, 1, "nothing after it stopped")
  })
})

describe("recorder", () => {
  const run = (maxBytes: number) =>
    Effect.gen(function*() {
      const storage = fileStorage(tmpDir())
      let t = 1_000_000
      const rec = yield* startRecorder({ storage, id: "r1", sessionId: "s1", userId: "ann", viewer: "ann (viewer 1)", maxBytes, now: () => t })
      return { storage, rec, tick: (ms: number) => (t += ms) }
    })

  it.effect("writes both tracks with times, indexes keyframes, asks for one at a message boundary, and finishes with metadata", () =>
    Effect.gen(function*() {
      const { storage, rec, tick } = yield* run(10_000_000)
      rec.server(Rfb.serverHandshake)
      assert.isUndefined(rec.client(Rfb.clientHandshake))
      assert.isUndefined(rec.client(Rfb.cat(Rfb.setPixelFormat, Rfb.setEncodings)))
      tick(40)
      rec.server(Rfb.fullRawUpdate())
      rec.requestKeyframe()
      const request = Rfb.updateRequest(true)
      assert.isUndefined(rec.client(request.subarray(0, 4)), "not in the middle of a message")
      assert.deepStrictEqual([...(rec.client(request.subarray(4)) ?? [])], [...fullUpdateRequest(Rfb.WIDTH, Rfb.HEIGHT)])
      assert.isUndefined(rec.client(request), "once per request")
      tick(60)
      rec.input(Rfb.keyEvent(0x61))
      rec.server(Rfb.fullHextileUpdate())
      const meta = yield* rec.finish
      assert.strictEqual(meta.handshakeBytes, Rfb.serverHandshake.length)
      assert.deepStrictEqual(meta.keyframes, [
        { timeMs: 40, serverOffset: Rfb.serverHandshake.length },
        { timeMs: 100, serverOffset: Rfb.serverHandshake.length + Rfb.fullRawUpdate().length }
      ])
      assert.strictEqual(meta.durationMs, 100)
      assert.strictEqual(meta.endedAt, new Date(1_000_100).toISOString())
      const records = decodeRecording(yield* storage.get("s1/r1.rec"))
      assert.deepStrictEqual(records.map((r) => [r.track, r.timeMs]), [[0, 0], [0, 40], [1, 100], [0, 100]])
      assert.deepStrictEqual([...records[2]!.payload], [...Rfb.keyEvent(0x61)])
      const stored = JSON.parse(new TextDecoder().decode(yield* storage.get("s1/r1.json")))
      assert.deepStrictEqual(stored, JSON.parse(JSON.stringify(meta)))
      assert.strictEqual(meta.bytes, (yield* storage.get("s1/r1.rec")).length)
    }))

  it.effect("stops at the size limit, marked truncated, never past it", () =>
    Effect.gen(function*() {
      const limit = 4096
      const { storage, rec } = yield* run(limit)
      rec.server(Rfb.serverHandshake)
      for (let i = 0; i < 10; i++) rec.server(Rfb.fullRawUpdate(i)) // 2 KiB each
      assert.isTrue(rec.full())
      rec.input(Rfb.keyEvent(1))
      const meta = yield* rec.finish
      const bytes = yield* storage.get("s1/r1.rec")
      assert.isTrue(meta.truncated)
      assert.isAtMost(bytes.length, limit)
      assert.strictEqual(meta.bytes, bytes.length)
      assert.deepStrictEqual(decodeRecording(bytes).map((r) => r.track), [0, 0], "the handshake and the first update fit")
    }))
})
