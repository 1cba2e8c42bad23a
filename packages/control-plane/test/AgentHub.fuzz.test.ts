// AgentHub under random frames from a connected agent (fast-check samples, fixed seed): every frame the
// protocol decoder rejects gets exactly one `error` reply, binary frames for no tunnel are dropped and counted,
// and the connection stays up and keeps working.
import { assert, layer } from "@effect/vitest"
import type { AgentId } from "@streamspace/protocol"
import { AGENT_MESSAGE_TYPES, decodeBinary, decodeFromAgent, MAX_FRAME_BYTES } from "@streamspace/protocol"
import { Effect, Option, Result } from "effect"
import fc from "fast-check"
import { waitFor } from "@streamspace/testbed"
import { Store } from "../src/Store.ts"
import { connectApproved, heartbeatPayload, startHub, withTestClock } from "./support/fakeAgent.ts"

const messageLike = fc.record({
  type: fc.oneof(fc.constantFrom(...AGENT_MESSAGE_TYPES, "welcome", "command", "nope"), fc.string()),
  id: fc.oneof(fc.string({ minLength: 1, maxLength: 8 }), fc.integer()),
  ts: fc.oneof(fc.constant(new Date(0).toISOString()), fc.string()),
  payload: fc.oneof(fc.object({ maxDepth: 3 }), fc.constant({ status: "online" }), fc.constant(null))
}, { requiredKeys: [] })

const textFrame = fc.oneof(
  fc.string({ maxLength: 200 }),
  fc.json({ maxDepth: 4 }),
  messageLike.map((m) => JSON.stringify(m))
)
const binaryFrame = fc.uint8Array({ maxLength: 64 })

layer(Store.layerMemory, { excludeTestServices: true, timeout: "180 seconds" })("AgentHub fuzz", (it) => {
  it.effect("random text and binary frames: one error per rejected frame, drops counted, the link stays up", () =>
    Effect.gen(function*() {
      const cp = yield* startHub({})
      const { agent } = yield* connectApproved(cp, "fuzz-1")
      const frames = fc.sample(fc.oneof(textFrame, binaryFrame), { numRuns: 400, seed: 20261126 })
      let expectedErrors = 0
      let expectedDrops = 0
      for (const frame of frames) {
        if (typeof frame === "string") {
          assert.isBelow(frame.length, MAX_FRAME_BYTES)
          const decoded = decodeFromAgent(frame)
          if (Result.isFailure(decoded) || decoded.success.type === "hello") expectedErrors++
        } else {
          if (Result.isFailure(decodeBinary(frame))) expectedErrors++
          else expectedDrops++
        }
        yield* agent.sendRaw(frame)
      }
      assert.isAbove(expectedErrors, 100)
      yield* waitFor(
        `${expectedErrors} error replies`,
        Effect.sync(() => agent.pending().filter((m) => m.type === "error").length === expectedErrors),
        { timeout: 20_000 }
      )
      assert.strictEqual(yield* cp.hub.droppedFrames, expectedDrops)
      assert.isFalse(agent.isClosed())
      // Still a working link.
      yield* agent.send("heartbeat", heartbeatPayload({ status: "warning", active_sessions: 7 }))
      yield* waitFor("the heartbeat", Effect.map(cp.hub.get("fuzz-1" as AgentId), (v) => Option.getOrThrow(v).activeSessions === 7))
      yield* cp.hub.send("fuzz-1" as AgentId, "drain", { draining: false })
      yield* agent.next("drain")
    }).pipe(withTestClock), 60_000)
})
