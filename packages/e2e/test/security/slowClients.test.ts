// Slow clients against the real process (`node packages/control-plane/src/main.ts`, what the image runs) with
// small HTTP_HEADERS_TIMEOUT and HTTP_REQUEST_TIMEOUT: raw TCP sockets that dribble a request one byte at a
// time, faster than any idle timer would notice but slower than the limits allow. Each must be answered 408
// and closed, within the limit plus Node's check interval plus slack for a loaded machine — not kept open.
// (These are real network events on real sockets, so real time is measured; the limits are set small.)
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { connect } from "node:net"
import * as S from "../support/stack.ts"

const HEADERS_TIMEOUT_MS = 1000
const REQUEST_TIMEOUT_MS = 2000
/** Node checks the timeouts every HEADERS_TIMEOUT/4 (at most 1 s); a busy 2-core machine adds more. */
const SLACK_MS = 2500
const BYTE_EVERY_MS = 50

interface Outcome {
  /** Everything the server wrote back. */
  readonly answer: string
  /** From the first byte written to the close. */
  readonly closedAfterMs: number
  /** How much of the request had been written when the server closed. */
  readonly bytesWritten: number
  readonly total: number
}

/**
 * Writes `head` at once, then `dribble` one byte every BYTE_EVERY_MS, and resolves when the server closes
 * the socket (or after `giveUpMs`, with the socket still open: then `closedAfterMs` is Infinity).
 */
const slowRequest = (port: number, head: string, dribble: string, giveUpMs: number) =>
  Effect.callback<Outcome>((resume) => {
    const socket = connect(port, "127.0.0.1")
    socket.setNoDelay(true)
    let answer = ""
    let written = head.length
    let started = 0
    let timer: ReturnType<typeof setInterval> | undefined
    const done = (closedAfterMs: number) => {
      clearInterval(timer)
      clearTimeout(giveUp)
      socket.destroy()
      resume(Effect.succeed({ answer, closedAfterMs, bytesWritten: written, total: head.length + dribble.length }))
    }
    const giveUp = setTimeout(() => done(Infinity), giveUpMs)
    socket.on("connect", () => {
      started = Date.now()
      if (head !== "") socket.write(head)
      let i = 0
      timer = setInterval(() => {
        if (i < dribble.length && socket.writable) {
          socket.write(dribble[i++]!)
          written++
        } else clearInterval(timer)
      }, BYTE_EVERY_MS)
    })
    socket.on("data", (d) => (answer += d.toString("latin1")))
    socket.on("error", () => {}) // a reset after the 408 is a close too
    socket.on("close", () => done(Date.now() - started))
    return Effect.sync(() => done(Infinity))
  })

const limits = { HTTP_HEADERS_TIMEOUT: `${HEADERS_TIMEOUT_MS}ms`, HTTP_REQUEST_TIMEOUT: `${REQUEST_TIMEOUT_MS}ms` }

/** The four slow clients at once against a control plane on `port`, then checks it still serves. */
const slowClientsAreCutOff = (cp: { readonly port: number; readonly url: string; readonly admin: ReturnType<typeof S.api> }) =>
  Effect.gen(function*() {
    const port = cp.port
    const token = S.userToken("alice")
    // 1. request line and headers one byte at a time (20 bytes/s: the whole head would take ~8 s)
    const headers = `GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ${"a".repeat(100)}\r\n\r\n`
    // 2. full headers of an authenticated POST at once, then its 200-byte body one byte at a time (~10 s)
    const body = JSON.stringify({ template: "demo", region: "x".repeat(170) })
    const postHead = `POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`
    // 3. the same without a token: answered 401 before the body is read; the dribbling body must not keep the socket
    const anonHead = `POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`
    const giveUp = 15_000
    const [slowHeaders, slowBody, slowAnonBody, silent] = yield* Effect.all([
      slowRequest(port, "", headers, giveUp),
      slowRequest(port, postHead, body, giveUp),
      slowRequest(port, anonHead, body, giveUp),
      // 4. connects and sends nothing
      slowRequest(port, "", "", giveUp)
    ], { concurrency: "unbounded" })

    const report = JSON.stringify({ slowHeaders, slowBody, slowAnonBody, silent }, null, 1)
    assert.match(slowHeaders.answer, /^HTTP\/1\.1 408 /, report)
    assert.isAtLeast(slowHeaders.closedAfterMs, HEADERS_TIMEOUT_MS - 50, report)
    assert.isBelow(slowHeaders.closedAfterMs, HEADERS_TIMEOUT_MS + SLACK_MS, report)
    assert.isBelow(slowHeaders.bytesWritten, slowHeaders.total, "cut off before the headers were complete")

    assert.match(slowBody.answer, /^HTTP\/1\.1 408 /, report)
    assert.isAtLeast(slowBody.closedAfterMs, REQUEST_TIMEOUT_MS - 50, report)
    assert.isBelow(slowBody.closedAfterMs, REQUEST_TIMEOUT_MS + SLACK_MS, report)
    assert.isBelow(slowBody.bytesWritten, slowBody.total, "cut off before the body was complete")

    assert.match(slowAnonBody.answer, /^HTTP\/1\.1 (401|408) /, report)
    assert.isBelow(slowAnonBody.closedAfterMs, REQUEST_TIMEOUT_MS + SLACK_MS, report)

    assert.match(silent.answer, /^(HTTP\/1\.1 408 |$)/, report)
    assert.isBelow(silent.closedAfterMs, HEADERS_TIMEOUT_MS + SLACK_MS, report)

    // nothing was stored from the cut-off POSTs, and the server still answers
    assert.strictEqual((yield* cp.admin.get("/sessions")).body.sessions.length, 0)
    assert.strictEqual((yield* S.request(cp.url, "GET", "/api/v1/health")).status, 200)

  })

describe("slow clients (HTTP_HEADERS_TIMEOUT=1s, HTTP_REQUEST_TIMEOUT=2s)", () => {
  it.live("main.ts: headers, a body, or nothing at all sent one byte at a time are answered 408 and closed at the limit", () =>
    Effect.gen(function*() {
      const port = yield* S.freePort
      const cp = yield* S.startControlPlaneProcess(port, { DATABASE_IN_MEMORY: "true", LOG_LEVEL: "warn", ...limits })
      yield* slowClientsAreCutOff({ ...cp, port })
    }), 120_000)

  it.live("the in-process ControlPlane layer (what the other e2e tests run) behaves the same", () =>
    Effect.gen(function*() {
      const cp = yield* S.startControlPlane(limits)
      yield* slowClientsAreCutOff(cp)
    }), 120_000)
})
