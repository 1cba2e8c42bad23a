import { readdirSync, readFileSync } from "node:fs"
import { Result } from "effect"
import { describe, expect, it } from "vitest"
import {
  AGENT_MESSAGE_TYPES,
  CONTROL_PLANE_MESSAGE_TYPES,
  decodeFromAgent,
  decodeFromControlPlane,
  decodeText,
  encodeText,
  MAX_SESSIONS_PER_MESSAGE,
  MAX_TEXT_FRAME_BYTES,
  MAX_TUNNELS_PER_CONNECTION,
  MAX_LINK_WINDOW_BYTES,
  MAX_WINDOW_BYTES,
  MIN_LINK_WINDOW_BYTES,
  MIN_WINDOW_BYTES,
  Payloads,
  type MessageType,
  utf8Length,
  validatePayload
} from "../src/index.ts"
import { samples } from "./samples.ts"

const goldenDir = new URL("./golden/", import.meta.url)
const allTypes = Object.keys(Payloads) as Array<MessageType>
const decodeAny = (raw: string) => decodeText(raw, allTypes)
const failure = <A, E>(r: Result.Result<A, E>): E => {
  if (Result.isSuccess(r)) throw new Error(`expected a failure, got ${JSON.stringify(r.success)}`)
  return r.failure
}

describe("golden fixtures", () => {
  it("cover every message type and every command action", () => {
    const types = new Set(Object.values(samples).map((m) => m.type))
    expect([...types].sort()).toEqual([...allTypes].sort())
    const actions = Object.values(samples).flatMap((m) => (m.type === "command" ? [m.payload.action] : []))
    expect(actions.sort()).toEqual([
      "create_session",
      "delete_home",
      "delete_session",
      "hibernate_session",
      "list_homes",
      "list_sessions",
      "resume_session",
      "set_warm_pools",
      "vnc_connect",
      "vnc_disconnect"
    ])
  })

  it("has exactly one fixture file per sample", () => {
    const files = readdirSync(goldenDir).filter((f) => f.endsWith(".json")).map((f) => f.slice(0, -5))
    expect(files.sort()).toEqual(Object.keys(samples).sort())
  })

  for (const [name, message] of Object.entries(samples)) {
    it(`${name}: encodes to the checked-in JSON and decodes back`, () => {
      const golden = readFileSync(new URL(`${name}.json`, goldenDir), "utf8")
      expect(JSON.parse(encodeText(message))).toEqual(JSON.parse(golden))
      const decoded = decodeAny(golden)
      expect(Result.isSuccess(decoded) ? decoded.success : decoded.failure).toEqual(message)
    })
  }
})

describe("direction", () => {
  it("agent frames decode on the control plane and are refused by the agent, and vice versa", () => {
    for (const message of Object.values(samples)) {
      const raw = encodeText(message)
      const fromAgent = decodeFromAgent(raw)
      const fromControlPlane = decodeFromControlPlane(raw)
      expect(Result.isSuccess(fromAgent)).toBe((AGENT_MESSAGE_TYPES as ReadonlyArray<string>).includes(message.type))
      expect(Result.isSuccess(fromControlPlane)).toBe((CONTROL_PLANE_MESSAGE_TYPES as ReadonlyArray<string>).includes(message.type))
      if (Result.isFailure(fromAgent)) expect(fromAgent.failure.reason).toBe("UnexpectedType")
    }
  })

  it("goaway goes from the control plane to the agent only, with a reason", () => {
    const raw = encodeText(samples.goaway!)
    expect(Result.isSuccess(decodeFromControlPlane(raw))).toBe(true)
    expect(failure(decodeFromAgent(raw)).reason).toBe("UnexpectedType")
    expect(failure(validatePayload("goaway", {})).message).toMatch(/payload\.reason/)
  })
})

describe("bad input yields a typed error naming the problem", () => {
  const hello = JSON.parse(encodeText(samples.hello!))
  const cases: Array<[string, string, string, RegExp]> = [
    ["not JSON", "{nope", "MalformedJson", /not valid JSON/],
    ["a JSON array", "[1,2]", "MalformedJson", /must be a JSON object/],
    ["unknown type", JSON.stringify({ ...hello, type: "explode" }), "UnknownType", /unknown message type "explode"/],
    ["missing payload", JSON.stringify({ type: "hello", id: "m1", ts: hello.ts }), "InvalidEnvelope", /payload/],
    ["bad timestamp", JSON.stringify({ ...hello, ts: "yesterday" }), "InvalidEnvelope", /ts: must be an ISO 8601 timestamp/],
    ["bad frame id", JSON.stringify({ ...hello, id: "" }), "InvalidEnvelope", /^id: /],
    ["wrong type", JSON.stringify({ ...hello, payload: { ...hello.payload, capacity: { ...hello.payload.capacity, max_sessions: "ten" } } }), "InvalidPayload", /payload\.capacity\.max_sessions: Expected number/],
    ["missing field", JSON.stringify({ ...hello, payload: { ...hello.payload, agent_id: undefined } }), "InvalidPayload", /payload\.agent_id: Missing key/],
    ["invalid id", JSON.stringify({ ...hello, payload: { ...hello.payload, agent_id: "Not_A_Label" } }), "InvalidPayload", /payload\.agent_id: agent id must be a DNS-1123 label/],
    ["session id too long", JSON.stringify({ ...hello, payload: { ...hello.payload, sessions: [{ ...hello.payload.sessions[0], session_id: "s" + "a".repeat(63) }] } }), "InvalidPayload", /payload\.sessions\.0\.session_id: session id must be at most 63 characters/]
  ]
  for (const [what, raw, reason, message] of cases) {
    it(what, () => {
      const error = failure(decodeFromAgent(raw))
      expect(error._tag).toBe("ProtocolError")
      expect(error.reason).toBe(reason)
      expect(error.message).toMatch(message)
    })
  }

  it("names the frame id so the reply can refer to it", () => {
    const error = failure(decodeFromAgent(JSON.stringify({ ...hello, type: "explode", id: "m-42" })))
    expect(error.frameId).toBe("m-42")
  })

  it("rejects an unknown command action by name", () => {
    const command = JSON.parse(encodeText(samples.command_list_sessions!))
    const error = failure(decodeFromControlPlane(JSON.stringify({ ...command, payload: { ...command.payload, action: "rm_rf" } })))
    expect(error.message).toMatch(/payload\.action: unknown command action "rm_rf"/)
  })

  it("rejects bad environment variable names instead of dropping them", () => {
    const command = JSON.parse(encodeText(samples.command_create_session!))
    command.payload.args.spec.env = { "1BAD": "x" }
    expect(failure(decodeFromControlPlane(JSON.stringify(command))).message).toMatch(/env\.1BAD: environment variable name "1BAD"/)
  })

  it("validates payloads built at run time", () => {
    expect(Result.isSuccess(validatePayload("drain", { draining: true }))).toBe(true)
    expect(failure(validatePayload("drain", { draining: "yes" })).message).toMatch(/payload\.draining: Expected boolean/)
  })
})

describe("text frame size limit", () => {
  const padTo = (bytes: number, char = "x") => {
    const base = encodeText({ ...samples.goodbye!, payload: { reason: "" } } as never)
    return base.replace('"reason":""', `"reason":"${char.repeat(bytes - utf8Length(base))}"`)
  }
  it("exactly at MAX_TEXT_FRAME_BYTES passes", () => {
    const raw = padTo(MAX_TEXT_FRAME_BYTES)
    expect(utf8Length(raw)).toBe(MAX_TEXT_FRAME_BYTES)
    expect(Result.isSuccess(decodeFromAgent(raw))).toBe(true)
  })
  it("one byte over fails with TooLarge", () => {
    expect(failure(decodeFromAgent(padTo(MAX_TEXT_FRAME_BYTES + 1))).reason).toBe("TooLarge")
  })
  it("counts UTF-8 bytes, not characters", () => {
    const raw = padTo(MAX_TEXT_FRAME_BYTES - 1) // then swap one 1-byte char for a 2-byte one: +1 byte
    const twoByte = raw.replace("xx", "xé")
    expect(raw.length).toBe(twoByte.length)
    expect(utf8Length(twoByte)).toBe(MAX_TEXT_FRAME_BYTES)
    expect(Result.isSuccess(decodeFromAgent(twoByte))).toBe(true)
    expect(failure(decodeFromAgent(twoByte.replace("xx", "x€"))).reason).toBe("TooLarge")
  })
  it("utf8Length agrees with TextEncoder", () => {
    for (const s of ["", "abc", "é", "€", "😀", "a😀é€z", "\ud800"]) expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length)
  })
})

describe("other limits", () => {
  it(`a hello inventory of exactly MAX_SESSIONS_PER_MESSAGE sessions passes, one more fails`, () => {
    const hello = JSON.parse(encodeText(samples.hello!))
    const status = hello.payload.sessions[0]
    const withSessions = (n: number) => JSON.stringify({ ...hello, payload: { ...hello.payload, sessions: Array.from({ length: n }, () => status) } })
    expect(Result.isSuccess(decodeFromAgent(withSessions(MAX_SESSIONS_PER_MESSAGE)))).toBe(true)
    expect(failure(decodeFromAgent(withSessions(MAX_SESSIONS_PER_MESSAGE + 1))).message).toMatch(/at most 4096 sessions/)
  })
  it("vnc_connect windows from MIN_WINDOW_BYTES to MAX_WINDOW_BYTES pass, outside fails", () => {
    const connect = JSON.parse(encodeText(samples.command_vnc_connect!))
    const withWindow = (w: number) => JSON.stringify({ ...connect, payload: { ...connect.payload, args: { ...connect.payload.args, window: w } } })
    expect(Result.isSuccess(decodeFromControlPlane(withWindow(MIN_WINDOW_BYTES)))).toBe(true)
    expect(Result.isSuccess(decodeFromControlPlane(withWindow(MAX_WINDOW_BYTES)))).toBe(true)
    expect(failure(decodeFromControlPlane(withWindow(MIN_WINDOW_BYTES - 1))).message).toMatch(/window must be between/)
    expect(failure(decodeFromControlPlane(withWindow(MAX_WINDOW_BYTES + 1))).message).toMatch(/window must be between/)
  })
  it("welcome link_window from MIN_LINK_WINDOW_BYTES to MAX_LINK_WINDOW_BYTES passes, outside fails, absent is allowed", () => {
    const welcome = JSON.parse(encodeText(samples.welcome!))
    const withLink = (w: number | undefined) => JSON.stringify({ ...welcome, payload: { ...welcome.payload, link_window: w } })
    expect(Result.isSuccess(decodeFromControlPlane(withLink(MIN_LINK_WINDOW_BYTES)))).toBe(true)
    expect(Result.isSuccess(decodeFromControlPlane(withLink(MAX_LINK_WINDOW_BYTES)))).toBe(true)
    expect(Result.isSuccess(decodeFromControlPlane(withLink(undefined)))).toBe(true)
    expect(failure(decodeFromControlPlane(withLink(MIN_LINK_WINDOW_BYTES - 1))).message).toMatch(/link_window must be between/)
    expect(failure(decodeFromControlPlane(withLink(MAX_LINK_WINDOW_BYTES + 1))).message).toMatch(/link_window must be between/)
  })
  it("heartbeat tunnel_ids: absent (an older agent) passes, up to MAX_TUNNELS_PER_CONNECTION ids pass, more or a bad id fail", () => {
    const beat = JSON.parse(encodeText(samples.heartbeat!))
    const withIds = (ids: unknown) => JSON.stringify({ ...beat, payload: { ...beat.payload, tunnel_ids: ids } })
    const { tunnel_ids: _ids, ...older } = beat.payload
    expect(Result.isSuccess(decodeFromAgent(JSON.stringify({ ...beat, payload: older })))).toBe(true)
    expect(Result.isSuccess(decodeFromAgent(withIds([])))).toBe(true)
    expect(Result.isSuccess(decodeFromAgent(withIds(Array.from({ length: MAX_TUNNELS_PER_CONNECTION }, (_, i) => i + 1))))).toBe(true)
    expect(failure(decodeFromAgent(withIds(Array.from({ length: MAX_TUNNELS_PER_CONNECTION + 1 }, (_, i) => i + 1)))).message).toMatch(/at most 256 tunnel ids/)
    expect(failure(decodeFromAgent(withIds([0]))).message).toMatch(/tunnel_ids/)
  })
})
