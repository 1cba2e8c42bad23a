import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Logging from "../src/Logging.ts"

const capture = (format: "json" | "text", level: "Debug" | "Info" | "Warn") => {
  const lines: Array<string> = []
  return { lines, layer: Logging.layerWith(format, level, "agent-7", (l) => lines.push(l)) }
}

describe("Logging", () => {
  it.effect("json: one object per line with agent id and the annotations in scope", () =>
    Effect.gen(function*() {
      const { lines, layer } = capture("json", "Info")
      yield* Effect.logInfo("command create_session completed").pipe(
        Effect.annotateLogs({ command_id: "c-1", session_id: "s-1", trace_id: "4bf92f3577b34da6a3ce929d0e0e4736" }),
        Effect.provide(layer)
      )
      yield* Effect.logDebug("hidden").pipe(Effect.provide(layer))
      assert.strictEqual(lines.length, 1)
      const line = JSON.parse(lines[0]!)
      assert.strictEqual(line.level, "info")
      assert.strictEqual(line.msg, "command create_session completed")
      assert.strictEqual(line.agent_id, "agent-7")
      assert.strictEqual(line.command_id, "c-1")
      assert.strictEqual(line.session_id, "s-1")
      assert.strictEqual(line.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736")
      assert.match(line.ts, /^\d{4}-\d{2}-\d{2}T/)
    }))

  it.effect("text: logfmt on one line; LOG_LEVEL filters", () =>
    Effect.gen(function*() {
      const { lines, layer } = capture("text", "Warn")
      yield* Effect.gen(function*() {
        yield* Effect.logInfo("not shown")
        yield* Effect.logWarning("lost the control plane connection: code 1006").pipe(Effect.annotateLogs({ tunnel_id: 4 }))
      }).pipe(Effect.provide(layer))
      assert.strictEqual(lines.length, 1)
      assert.match(lines[0]!, /^ts=\S+ level=warn msg="lost the control plane connection: code 1006" agent_id=agent-7 tunnel_id=4$/)
    }))
})
