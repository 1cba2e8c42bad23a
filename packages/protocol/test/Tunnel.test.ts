import { Result } from "effect"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  BINARY_HEADER_BYTES,
  creditedBytes,
  creditThreshold,
  decodeBinary,
  encodeData,
  encodeDataFrames,
  encodeLinkWindow,
  encodeWindow,
  MAX_BINARY_PAYLOAD_BYTES,
  MAX_FRAME_BYTES,
  MAX_TUNNEL_ID,
  type TunnelId
} from "../src/index.ts"

const tid = (n: number) => n as TunnelId
const ok = <A, E>(r: Result.Result<A, E>): A => {
  if (Result.isFailure(r)) throw new Error(`expected success: ${String(r.failure)}`)
  return r.success
}
const err = <A, E>(r: Result.Result<A, E>): E => {
  if (Result.isSuccess(r)) throw new Error("expected a failure")
  return r.failure
}

describe("binary frames", () => {
  it("data frame round trip, header layout and zero-copy payload view", () => {
    const frame = encodeData(tid(0x01020304), new Uint8Array([9, 8, 7]))
    expect([...frame]).toEqual([1, 1, 2, 3, 4, 9, 8, 7])
    const decoded = ok(decodeBinary(frame))
    expect(decoded).toMatchObject({ kind: "data", tunnelId: 0x01020304 })
    if (decoded.kind !== "data") throw new Error("kind")
    expect(decoded.payload.buffer).toBe(frame.buffer)
    expect([...decoded.payload]).toEqual([9, 8, 7])
  })

  it("window frame round trip", () => {
    expect(ok(decodeBinary(encodeWindow(tid(MAX_TUNNEL_ID), 0xffffffff)))).toEqual({ kind: "window", tunnelId: MAX_TUNNEL_ID, credit: 0xffffffff })
  })

  it("decodes frames that sit at an offset inside a larger buffer", () => {
    const big = new Uint8Array(100)
    big.set(encodeWindow(tid(5), 4096), 50)
    expect(ok(decodeBinary(big.subarray(50, 59)))).toEqual({ kind: "window", tunnelId: 5, credit: 4096 })
  })

  it("splits chunks at MAX_BINARY_PAYLOAD_BYTES", () => {
    const chunk = new Uint8Array(MAX_BINARY_PAYLOAD_BYTES * 2 + 3).map((_, i) => i & 0xff)
    const frames = encodeDataFrames(tid(1), chunk)
    expect(frames.map((f) => f.length)).toEqual([MAX_BINARY_PAYLOAD_BYTES + 5, MAX_BINARY_PAYLOAD_BYTES + 5, 3 + 5])
    const joined = Buffer.concat(frames.map((f) => {
      const d = ok(decodeBinary(f))
      return d.kind === "data" ? d.payload : new Uint8Array()
    }))
    expect(joined.equals(chunk)).toBe(true)
  })

  it("payload exactly at MAX_BINARY_PAYLOAD_BYTES passes, one over fails", () => {
    expect(ok(decodeBinary(encodeData(tid(1), new Uint8Array(MAX_BINARY_PAYLOAD_BYTES)))).kind).toBe("data")
    const over = new Uint8Array(BINARY_HEADER_BYTES + MAX_BINARY_PAYLOAD_BYTES + 1)
    over.set([1, 0, 0, 0, 1])
    expect(err(decodeBinary(over)).reason).toBe("TooLarge")
    expect(() => encodeData(tid(1), new Uint8Array(MAX_BINARY_PAYLOAD_BYTES + 1))).toThrow(RangeError)
  })

  it("a maximal binary frame fits MAX_FRAME_BYTES", () => {
    expect(encodeData(tid(1), new Uint8Array(MAX_BINARY_PAYLOAD_BYTES)).length).toBeLessThanOrEqual(MAX_FRAME_BYTES)
  })

  it("rejects truncated headers, unknown kinds, tunnel 0, bad window frames", () => {
    for (let n = 0; n < BINARY_HEADER_BYTES; n++) expect(err(decodeBinary(new Uint8Array(n))).reason).toBe("TruncatedBinary")
    expect(err(decodeBinary(new Uint8Array([9, 0, 0, 0, 1]))).reason).toBe("UnknownBinaryKind")
    expect(err(decodeBinary(new Uint8Array([1, 0, 0, 0, 0, 1]))).message).toMatch(/tunnel 0/)
    expect(err(decodeBinary(new Uint8Array([2, 0, 0, 0, 0, 0, 0, 0, 0]))).message).toMatch(/0 bytes of credit/)
    expect(err(decodeBinary(encodeWindow(tid(1), 100).subarray(0, 8))).reason).toBe("TruncatedBinary")
    expect(err(decodeBinary(new Uint8Array([2, 0, 0, 0, 1, 0, 0, 0, 0]))).message).toMatch(/0 bytes of credit/)
  })

  it("a window frame naming tunnel 0 is link credit; only data bytes count against windows", () => {
    expect(ok(decodeBinary(encodeLinkWindow(65536)))).toEqual({ kind: "link_window", credit: 65536 })
    expect(creditedBytes(encodeData(tid(7), new Uint8Array(1234)))).toBe(1234)
    expect(creditedBytes(encodeWindow(tid(7), 1234))).toBe(0)
    expect(creditedBytes(encodeLinkWindow(1234))).toBe(0)
  })

  it("credit is returned in batches of a quarter window", () => {
    expect(creditThreshold(1024 * 1024)).toBe(256 * 1024)
    expect(creditThreshold(1)).toBe(1)
  })

  it("property: random bytes only ever give a frame or a typed error", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const r = decodeBinary(bytes)
      if (Result.isFailure(r)) expect(r.failure._tag).toBe("ProtocolError")
    }))
  })

  it("property: data and window frames round-trip", () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: MAX_TUNNEL_ID }),
      fc.uint8Array({ maxLength: 2048 }),
      fc.integer({ min: 1, max: 0xffffffff }),
      (id, payload, credit) => {
        const d = ok(decodeBinary(encodeData(tid(id), payload)))
        expect(d.kind === "data" && d.tunnelId === id && Buffer.from(d.payload).equals(Buffer.from(payload))).toBe(true)
        expect(ok(decodeBinary(encodeWindow(tid(id), credit)))).toEqual({ kind: "window", tunnelId: id, credit })
      }
    ))
  })
})
