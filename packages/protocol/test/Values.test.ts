import { Duration, Result, Schema } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  AgentId,
  DurationString,
  formatDuration,
  negotiateVersion,
  parseDuration,
  parseQuantity,
  PROTOCOL_VERSIONS,
  SessionId,
  TunnelId,
  UserId
} from "../src/index.ts"

const valid = (schema: Schema.Decoder<unknown>, v: unknown) => Result.isSuccess(Schema.decodeUnknownResult(schema)(v))

describe("Duration", () => {
  it.each([
    ["500ms", 500],
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["1h30m", 5_400_000],
    ["1m30s", 90_000],
    ["2h0m5s250ms", 7_205_250]
  ])("accepts %s", (input, ms) => {
    expect(Duration.toMillis(Schema.decodeUnknownSync(DurationString)(input))).toBe(ms)
  })
  it.each(["", "30", "5 minutes", "1.5h", "-5s", "5x", "30m1h", "1d", " "])("rejects %j quoting the value", (input) => {
    const r = Schema.decodeUnknownResult(DurationString)(input)
    expect(Result.isFailure(r) && r.failure.message).toContain(`invalid duration "${input}"`)
  })
  it("formats in the same short form and round-trips", () => {
    expect(formatDuration(Duration.millis(5_400_000))).toBe("1h30m")
    expect(formatDuration(Duration.zero)).toBe("0s")
    fc.assert(fc.property(fc.integer({ min: 0, max: 10 ** 9 }), (ms) => {
      expect(Duration.toMillis(parseDuration(formatDuration(Duration.millis(ms)))!)).toBe(ms)
    }))
  })
})

describe("ids", () => {
  it("session ids are DNS labels starting with a letter, at most 63 characters", () => {
    expect(valid(SessionId, "s-" + "a".repeat(61))).toBe(true)
    expect(valid(SessionId, "s-" + "a".repeat(62))).toBe(false)
    for (const bad of ["", "1abc", "Abc", "abc-", "a_b", "a.b"]) expect(valid(SessionId, bad)).toBe(false)
  })
  it("agent ids are DNS-1123 labels", () => {
    expect(valid(AgentId, "k8s-prod-us-east-1")).toBe(true)
    expect(valid(AgentId, "1-cluster")).toBe(true)
    expect(valid(AgentId, "a".repeat(64))).toBe(false)
    expect(valid(AgentId, "Prod")).toBe(false)
  })
  it("user ids are label values", () => {
    expect(valid(UserId, "alice.smith_2")).toBe(true)
    expect(valid(UserId, "alice@example.com")).toBe(false)
    expect(valid(UserId, "a".repeat(64))).toBe(false)
  })
  it("tunnel ids are 1..2^32-1", () => {
    expect(valid(TunnelId, 1)).toBe(true)
    expect(valid(TunnelId, 0xffffffff)).toBe(true)
    expect(valid(TunnelId, 0)).toBe(false)
    expect(valid(TunnelId, 0x100000000)).toBe(false)
    expect(valid(TunnelId, 1.5)).toBe(false)
  })
})

describe("quantities", () => {
  it("parses CPU and memory", () => {
    expect(parseQuantity("500m")).toBe(0.5)
    expect(parseQuantity("2")).toBe(2)
    expect(parseQuantity("512Mi")).toBe(512 * 2 ** 20)
    expect(parseQuantity("1G")).toBe(1e9)
    expect(parseQuantity("1.5Gi")).toBe(1.5 * 2 ** 30)
    expect(parseQuantity("lots")).toBeUndefined()
  })
})

describe("version negotiation", () => {
  it("picks the newest common version", () => {
    expect(negotiateVersion(["v2", "v1"], ["v1"])).toEqual(Result.succeed("v1"))
    expect(negotiateVersion(["v1", "v2"], ["v2", "v1"])).toEqual(Result.succeed("v2"))
    expect(PROTOCOL_VERSIONS).toContain("v1")
  })
  it("no common version is a typed error", () => {
    const r = negotiateVersion(["v9"])
    expect(Result.isFailure(r) && r.failure.reason).toBe("NoCommonVersion")
  })
})
