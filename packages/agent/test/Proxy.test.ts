import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger } from "effect"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Connection } from "../src/Connection.ts"
import { bypassesProxy, proxyFor } from "../src/internal/proxy.ts"
import * as ConnectProxy from "./support/ConnectProxy.ts"
import { fakeHello, makeMemoryCredentialStore } from "./support/Fakes.ts"
import { waitFor } from "@streamspace/testbed"
import { awaitStatus, baseEnv, configLayer } from "./support/harness.ts"
import * as TestControlPlane from "./support/TestControlPlane.ts"

const tlsFile = (name: string) => fileURLToPath(new URL(`./support/tls/${name}`, import.meta.url))
const tls = { cert: readFileSync(tlsFile("server.crt"), "utf8"), key: readFileSync(tlsFile("server.key"), "utf8") }

const setup = (url: string, env: Record<string, string>) =>
  Effect.gen(function*() {
    const creds = yield* makeMemoryCredentialStore()
    const ctx = yield* Layer.build(Connection.layerWith(fakeHello()).pipe(Layer.provide([configLayer(baseEnv(url, env)), creds.layer])))
    return Context.get(ctx, Connection)
  })

describe("proxy selection", () => {
  const settings = { httpsProxy: "http://proxy.corp:3128", httpProxy: "http://plain.corp:8080", noProxy: "localhost,.internal.example,10.0.0.5,cp.example.com:8443" }
  it("wss uses HTTPS_PROXY, ws uses HTTP_PROXY", () => {
    assert.strictEqual(proxyFor(new URL("wss://cp.example.org/x"), settings)?.host, "proxy.corp:3128")
    assert.strictEqual(proxyFor(new URL("ws://cp.example.org/x"), settings)?.host, "plain.corp:8080")
    assert.strictEqual(proxyFor(new URL("wss://cp.example.org"), { ...settings, httpsProxy: undefined })?.host, "plain.corp:8080")
    assert.isUndefined(proxyFor(new URL("wss://cp.example.org"), { httpsProxy: undefined, httpProxy: undefined, noProxy: undefined }))
    assert.strictEqual(proxyFor(new URL("wss://cp.example.org"), { ...settings, httpsProxy: "proxy.corp:3128" })?.protocol, "http:")
  })
  it("NO_PROXY: names, domain suffixes, addresses, ports and *", () => {
    const np = settings.noProxy
    assert.isTrue(bypassesProxy(new URL("wss://localhost:9000"), np))
    assert.isTrue(bypassesProxy(new URL("wss://cp.internal.example"), np))
    assert.isTrue(bypassesProxy(new URL("wss://internal.example"), np))
    assert.isTrue(bypassesProxy(new URL("wss://10.0.0.5"), np))
    assert.isTrue(bypassesProxy(new URL("wss://cp.example.com:8443"), np))
    assert.isFalse(bypassesProxy(new URL("wss://cp.example.com"), np))
    assert.isFalse(bypassesProxy(new URL("wss://notinternal.example"), np))
    assert.isFalse(bypassesProxy(new URL("wss://10.0.0.50"), np))
    assert.isTrue(bypassesProxy(new URL("wss://anything.example"), "*"))
    assert.isFalse(bypassesProxy(new URL("wss://anything.example"), undefined))
  })
})

describe("Connection through a proxy and with a private CA", () => {
  it.effect("ws:// through HTTP_PROXY with CONNECT (credentials sent to the proxy)", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make()
      const proxy = yield* ConnectProxy.make
      const connection = yield* setup(cp.url, { HTTP_PROXY: proxy.url.replace("http://", "http://user:p%40ss@") })
      yield* awaitStatus(connection.status, true)
      assert.deepStrictEqual(proxy.connects, [`127.0.0.1:${cp.port}`])
      assert.strictEqual(proxy.auth[0], `Basic ${Buffer.from("user:p@ss").toString("base64")}`)
    }))

  it.effect("wss:// through HTTPS_PROXY, trusting CONTROL_PLANE_CA_FILE", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ tls })
      const proxy = yield* ConnectProxy.make
      const connection = yield* setup(cp.url, { HTTPS_PROXY: proxy.url, CONTROL_PLANE_CA_FILE: tlsFile("ca.crt") })
      yield* awaitStatus(connection.status, true)
      assert.deepStrictEqual(proxy.connects, [`127.0.0.1:${cp.port}`])
    }))

  it.effect("wss:// directly with CONTROL_PLANE_CA_FILE; NO_PROXY bypasses the proxy", () =>
    Effect.gen(function*() {
      const cp = yield* TestControlPlane.make({ tls })
      const proxy = yield* ConnectProxy.make
      const connection = yield* setup(cp.url, { HTTPS_PROXY: proxy.url, NO_PROXY: "127.0.0.1", CONTROL_PLANE_CA_FILE: tlsFile("ca.crt") })
      yield* awaitStatus(connection.status, true)
      assert.deepStrictEqual(proxy.connects, [])
    }))

  it.effect("wss:// to a certificate from an unknown CA is refused", () =>
    Effect.gen(function*() {
      const lines: Array<string> = []
      const cp = yield* TestControlPlane.make({ tls })
      const connection = yield* setup(cp.url, {}).pipe(Effect.provide(Logger.layer([Logger.make((o) => void lines.push(String(o.message)))])))
      yield* waitFor("a refused dial", Effect.sync(() => lines.some((l) => l.includes("could not connect"))))
      assert.isTrue(lines.some((l) => /certificate/i.test(l)))
      assert.isFalse(yield* connection.isConnected)
      assert.strictEqual(cp.attempts.length, 0)
    }))
})
