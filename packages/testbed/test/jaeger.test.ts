// The test bed's Jaeger receives OTLP spans and answers queries for them; with basic auth on, it refuses
// exports without the header (what the tracing tests rely on to prove OTEL_EXPORTER_OTLP_HEADERS is sent).
import { randomBytes } from "node:crypto"
import { afterEach, describe, expect, it } from "vitest"
import { type RunningJaeger, startJaeger } from "../src/Jaeger.ts"
import { waitForPromise } from "../src/poll.ts"

const span = (service: string) => {
  const traceId = randomBytes(16).toString("hex")
  const now = BigInt(Date.now()) * 1_000_000n
  return {
    traceId,
    body: {
      resourceSpans: [{
        resource: { attributes: [{ key: "service.name", value: { stringValue: service } }] },
        scopeSpans: [{
          spans: [{ traceId, spanId: randomBytes(8).toString("hex"), name: "probe", kind: 1, startTimeUnixNano: String(now), endTimeUnixNano: String(now + 1_000_000n) }]
        }]
      }]
    }
  }
}

const send = (jaeger: RunningJaeger, body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${jaeger.otlpHttp}/v1/traces`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) })

let jaeger: RunningJaeger | undefined
afterEach(async () => {
  await jaeger?.stop()
  jaeger = undefined
})

describe("Jaeger in the test bed", () => {
  it("stores an OTLP/HTTP span and answers a query for its service and trace", async () => {
    jaeger = await startJaeger()
    const { traceId, body } = span("testbed-probe")
    expect((await send(jaeger, body)).status).toBe(200)
    const traces = await waitForPromise("the span queryable", async () => {
      const t = await jaeger!.traces("testbed-probe")
      return t.length > 0 ? t : undefined
    })
    expect(traces[0]!.traceID).toBe(traceId)
    expect((await jaeger.trace(traceId))!.spans.map((s) => s.operationName)).toEqual(["probe"])
  })

  it("with basic auth, refuses an export without the Authorization header and takes one with it", async () => {
    jaeger = await startJaeger({ basicAuth: { username: "otel", password: "s3cret" } })
    expect((await send(jaeger, span("anon").body)).status).toBe(401)
    const ok = await send(jaeger, span("authed").body, { authorization: `Basic ${Buffer.from("otel:s3cret").toString("base64")}` })
    expect(ok.status).toBe(200)
    await waitForPromise("the authorised span", async () => (await jaeger!.traces("authed")).length > 0)
  })
})
