// Property tests: whatever arrives on the socket, the decoders answer with a message or a typed error.
import { Result } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import { decodeText, encodeText, type MessageType, Payloads } from "../src/index.ts"
import { samples } from "./samples.ts"

const allTypes = Object.keys(Payloads) as Array<MessageType>
const decode = (raw: string) => decodeText(raw, allTypes)
const typedOrOk = (raw: string) => {
  const r = decode(raw) // must not throw
  if (Result.isFailure(r)) {
    expect(r.failure._tag).toBe("ProtocolError")
    expect(r.failure.message.length).toBeGreaterThan(0)
  }
  return r
}
const goldens = Object.values(samples).map((m) => encodeText(m))

describe("decoder properties", () => {
  it("random strings", () => {
    fc.assert(fc.property(fc.string({ unit: "binary", maxLength: 300 }), (s) => void typedOrOk(s)), { numRuns: 500 })
  })

  it("random JSON values", () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => void typedOrOk(JSON.stringify(v))), { numRuns: 500 })
  })

  it("random envelopes of known types with random payloads", () => {
    fc.assert(fc.property(fc.constantFrom(...allTypes), fc.jsonValue({ maxDepth: 4 }), (type, payload) => {
      void typedOrOk(JSON.stringify({ type, id: "m1", ts: "2026-01-01T00:00:00Z", payload }))
    }), { numRuns: 500 })
  })

  it("truncated valid frames are MalformedJson", () => {
    fc.assert(fc.property(fc.constantFrom(...goldens).chain((g) => fc.tuple(fc.constant(g), fc.integer({ min: 0, max: g.length - 1 }))), ([g, cut]) => {
      const r = decode(g.slice(0, cut))
      expect(Result.isFailure(r) && r.failure.reason).toBe("MalformedJson")
    }))
  })

  it("valid frames with one field removed or retyped give a typed error or still decode", () => {
    // Walk to a random object node in the frame and delete or replace one key.
    const mutate = (value: unknown, path: ReadonlyArray<number>, replacement: unknown, remove: boolean): unknown => {
      if (typeof value !== "object" || value === null) return value
      const entries = Object.entries(value)
      if (entries.length === 0) return value
      const [i, ...rest] = path
      const idx = (i ?? 0) % entries.length
      const copy: Record<string, unknown> = Array.isArray(value) ? ([...value] as never) : { ...value }
      const [key, child] = entries[idx]!
      if (rest.length === 0 || typeof child !== "object" || child === null) {
        if (remove) delete copy[key]
        else copy[key] = replacement
      } else copy[key] = mutate(child, rest, replacement, remove)
      return copy
    }
    fc.assert(fc.property(
      fc.constantFrom(...goldens),
      fc.array(fc.nat(), { minLength: 1, maxLength: 5 }),
      fc.jsonValue({ maxDepth: 2 }),
      fc.boolean(),
      (g, path, replacement, remove) => void typedOrOk(JSON.stringify(mutate(JSON.parse(g), path, replacement, remove)))
    ), { numRuns: 1000 })
  })

  it("generated valid messages round-trip through encode and decode", () => {
    const label = fc.stringMatching(/^[a-z]([-a-z0-9]{0,20}[a-z0-9])?$/)
    const ts = fc.date({ min: new Date("2000-01-01T00:00:00Z"), max: new Date("2100-01-01T00:00:00Z"), noInvalidDate: true }).map((d) => d.toISOString())
    const phase = fc.constantFrom("pending", "creating", "running", "terminating", "terminated", "failed")
    const status = fc.record({ session_id: label, phase, observed_at: ts }, { requiredKeys: ["session_id", "phase", "observed_at"] })
    const capacity = fc.record({
      cpu: fc.integer({ min: 0, max: 64_000 }).map((n) => `${n}m`),
      memory: fc.integer({ min: 0, max: 512 }).map((n) => `${n}Gi`),
      max_sessions: fc.nat(10_000)
    })
    const message = fc.oneof(
      fc.record({ type: fc.constant("hello"), payload: fc.record({
        agent_id: label, platform: fc.constant("kubernetes"), region: fc.string(), version: fc.string(),
        protocol_versions: fc.constant(["v1"]), capacity, sessions: fc.array(status, { maxLength: 5 })
      }) }),
      fc.record({ type: fc.constant("heartbeat"), payload: fc.record({
        status: fc.constantFrom("online", "warning", "error"), capacity, active_sessions: fc.nat(), active_tunnels: fc.nat()
      }) }),
      fc.record({ type: fc.constant("session_status"), payload: status }),
      fc.record({ type: fc.constant("command"), payload: fc.record({
        command_id: label, deadline: ts, action: fc.constant("delete_session"), args: fc.record({ session_id: label })
      }) }),
      fc.record({ type: fc.constant("vnc_closed"), payload: fc.record({
        tunnel_id: fc.integer({ min: 1, max: 0xffffffff }),
        reason: fc.constantFrom("disconnect", "idle_timeout", "pod_gone", "upstream_closed", "shutdown", "error")
      }) })
    )
    fc.assert(fc.property(message, label, ts, (m, id, at) => {
      const frame = { type: m.type, id, ts: at, payload: m.payload }
      const r = decode(JSON.stringify(frame))
      expect(Result.isSuccess(r) ? r.success : r.failure).toEqual(frame)
      if (Result.isSuccess(r)) expect(JSON.parse(encodeText(r.success))).toEqual(frame)
    }), { numRuns: 300 })
  })
})
