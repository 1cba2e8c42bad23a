// The log line both halves write: field order, logfmt quoting, JSON, levels, causes and secrets.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger, Redacted } from "effect"
import { TestClock } from "effect/testing"
import { formatLogEntry, lineLogger, type LogEntry, makeLogThrottle, similarityKey, throttledLineLogger } from "../src/Logs.ts"

const entry: LogEntry = {
  ts: new Date("2026-01-02T03:04:05.678Z"),
  level: "warn",
  msg: "lost the control plane connection: code 1006",
  fields: { agent_id: "agent-7", tunnel_id: 4, ok: true, note: "a=b", none: null }
}

/** What one logger call writes, in `format`. */
const write = (format: "json" | "text", log: Effect.Effect<void>) =>
  Effect.gen(function*() {
    const lines: Array<string> = []
    yield* log.pipe(Effect.provide(Logger.layer([lineLogger(format, (l) => lines.push(l), { agent_id: "agent-7" })])))
    return lines
  })

describe("log lines", () => {
  it("text: ts, level, msg first, then the fields; values with spaces, quotes or = are quoted", () => {
    assert.strictEqual(
      formatLogEntry(entry, "text"),
      `ts=2026-01-02T03:04:05.678Z level=warn msg="lost the control plane connection: code 1006" agent_id=agent-7 tunnel_id=4 ok=true note="a=b" none=null`
    )
  })

  it("json: the same fields in the same order", () => {
    const line = formatLogEntry(entry, "json")
    assert.deepStrictEqual(JSON.parse(line), { ts: "2026-01-02T03:04:05.678Z", level: "warn", msg: entry.msg, ...entry.fields })
    assert.deepStrictEqual(Object.keys(JSON.parse(line)), ["ts", "level", "msg", "agent_id", "tunnel_id", "ok", "note", "none"])
  })

  it.effect("from Effect's logger: lower-case level, the process's fields, annotations, the cause on one line, secrets redacted", () =>
    Effect.gen(function*() {
      const secret = Redacted.make("hunter2-secret")
      const [line] = yield* write(
        "text",
        Effect.logError("could not save", secret).pipe(Effect.annotateLogs({ command_id: "c-1", token: secret }))
      )
      assert.match(line!, /^ts=\S+ level=error msg="could not save <redacted>" agent_id=agent-7 command_id=c-1 token=<redacted>$/)
      assert.notInclude(line!, "hunter2")
      const [failed] = yield* write("json", Effect.fail(new Error("boom\nsecond line")).pipe(Effect.catchCause((cause) => Effect.logWarning("step failed", cause))))
      assert.strictEqual(failed!.split("\n").length, 1)
      const parsed = JSON.parse(failed!)
      assert.deepStrictEqual([parsed.level, parsed.msg, parsed.agent_id], ["warn", "step failed", "agent-7"])
      assert.include(parsed.cause, "boom")
    }))
})

describe("log storms (throttledLineLogger)", () => {
  it("similar lines share a key: numbers, addresses and ids do not count", () => {
    const k = (msg: string) => similarityKey({ level: "warn", msg })
    assert.strictEqual(k("AgentHub: refused a connection from 10.0.0.7: invalid agent token"), k("AgentHub: refused a connection from 192.168.1.20: invalid agent token"))
    assert.strictEqual(k("refused a connection from ::ffff:10.0.0.7"), k("refused a connection from ::ffff:10.0.0.8"))
    assert.strictEqual(k("session s-1a2b3c4d5e6f lost"), k("session s-9f8e7d6c5b4a lost"))
    assert.notStrictEqual(k("AgentHub: refused the agent (4401): bad token"), k("AgentHub: agent reported an error: x"))
    assert.notStrictEqual(similarityKey({ level: "warn", msg: "a" }), similarityKey({ level: "error", msg: "a" }))
  })

  it.effect("1,700 refused dials in a minute write `limit` lines, then one summary a minute later naming how many were suppressed", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      yield* Effect.gen(function*() {
        for (let i = 0; i < 1700; i++) {
          yield* Effect.logWarning(`AgentHub: refused a connection from 10.0.${i >> 8}.${i & 255}: invalid agent token`)
          if (i % 100 === 99) yield* TestClock.adjust("3 seconds") // 1,700 dials over 51 s
        }
        // A different source is not held back by the storm.
        yield* Effect.logInfo("AgentHub: agent online")
        const during = lines.length
        // 20 at once, then 20 per minute as the bucket refills over the 51 s: about 37.
        assert.isAtLeast(during, 21)
        assert.isAtMost(during, 40)
        assert.include(lines.at(-1)!, "agent online")
        yield* TestClock.adjust("9 seconds") // the first summary is due 60 s after the start
        const summary = lines.slice(during)
        assert.strictEqual(summary.length, 1)
        const parsed = JSON.parse(summary[0]!)
        assert.strictEqual(parsed.level, "warn")
        assert.strictEqual(parsed.suppressed, 1700 - (during - 1))
        assert.match(parsed.msg, /^suppressed \d+ similar lines in the last minute, the last: AgentHub: refused a connection from 10\.0\.6\.163: invalid agent token$/)
        assert.strictEqual(parsed.agent_id, "agent-7")
        // Quiet again: no more summaries, and after a minute the source may log in full again.
        yield* TestClock.adjust("2 minutes")
        assert.strictEqual(lines.length, during + 1)
        yield* Effect.logWarning("AgentHub: refused a connection from 10.9.9.9: invalid agent token")
        assert.strictEqual(lines.length, during + 2)
      }).pipe(Effect.provide(Logger.layer([throttledLineLogger("json", (l) => lines.push(l), { agent_id: "agent-7" }, { perMinute: 20 })])))
    }))

  it.effect("perMinute 0 writes every line", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      yield* Effect.gen(function*() {
        for (let i = 0; i < 500; i++) yield* Effect.logWarning(`refused ${i}`)
      }).pipe(Effect.provide(Logger.layer([throttledLineLogger("text", (l) => lines.push(l), {}, { perMinute: 0 })])))
      assert.strictEqual(lines.length, 500)
    }))

  it("a bounded number of keys: the least recently used is forgotten, its count reported", () => {
    const t = makeLogThrottle({ perMinute: 1, maxKeys: 2 })
    const at = (msg: string) => ({ ts: new Date(0), level: "warn", msg, fields: {} })
    assert.isTrue(t.admit(at("alpha one")).write)
    assert.isFalse(t.admit(at("alpha one")).write)
    assert.isTrue(t.admit(at("beta")).write)
    const r = t.admit(at("gamma"))
    assert.isTrue(r.write)
    assert.strictEqual(r.evicted.length, 1)
    assert.include(r.evicted[0]!.msg, "suppressed 1 similar line in the last minute, the last: alpha one")
    assert.strictEqual(t.size(), 2)
  })
})
