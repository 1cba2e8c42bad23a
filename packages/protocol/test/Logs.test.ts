// The log line both halves write: field order, logfmt quoting, JSON, levels, causes and secrets.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Logger, Redacted } from "effect"
import { formatLogEntry, lineLogger, type LogEntry } from "../src/Logs.ts"

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
