// SIGTERM to the real control plane process (`node packages/control-plane/src/main.ts`, what the image runs) on
// a PGlite DATA_DIR, right after start (when V8 is still optimising the database's WebAssembly in the
// background, which used to hold the exit for 3-15 s): it must exit 0 well within the chart's
// terminationGracePeriodSeconds (30 s), and what was written before the signal must be there after a restart
// on the same directory.
import { assert, describe, it } from "@effect/vitest"
import { AGENT_SUBPROTOCOL } from "@streamspace/protocol"
import { Effect } from "effect"
import { join } from "node:path"
import { WebSocket } from "ws"
import { helloFrame } from "../support/securityClients.ts"
import * as S from "../support/stack.ts"

/** Closing everything takes ~0.3 s here; a loaded CI machine gets ten times that. */
const EXIT_WITHIN_MS = 3000

describe("control plane SIGTERM", () => {
  it.live("exits 0 within a few seconds, and data written before the signal survives a restart", () =>
    Effect.gen(function*() {
      const dir = yield* S.tempDir("cp-shutdown-")
      const env = { DATA_DIR: join(dir, "data"), LOG_LEVEL: "info" }
      const port = yield* S.freePort
      const cp = yield* S.startControlPlaneProcess(port, env)
      const created = yield* cp.admin.post("/templates", { name: "kept-after-sigterm", image: "img:1" })
      assert.strictEqual(created.status, 201, created.text)
      // a client's keep-alive connection is still open (fetch pools it) when the signal comes
      assert.strictEqual((yield* cp.admin.get("/templates")).status, 200)

      const started = Date.now()
      const code = yield* cp.kill("SIGTERM")
      const tookMs = Date.now() - started
      assert.strictEqual(code, 0, cp.output())
      assert.isBelow(tookMs, EXIT_WITHIN_MS, `exit took ${tookMs} ms`)
      assert.notMatch(cp.output(), /close failed|stop failed/i)

      const again = yield* S.startControlPlaneProcess(port, env)
      const templates = yield* again.admin.get("/templates")
      assert.include(templates.body.templates.map((t: { name: string }) => t.name), "kept-after-sigterm")
      const second = Date.now()
      assert.strictEqual(yield* again.kill("SIGTERM"), 0, again.output())
      assert.isBelow(Date.now() - second, EXIT_WITHIN_MS)
    }), 240_000)

  it.live("exits 0 within a few seconds while agents that are dropped redial at once", () =>
    Effect.gen(function*() {
      const dir = yield* S.tempDir("cp-shutdown-agents-")
      const port = yield* S.freePort
      const cp = yield* S.startControlPlaneProcess(port, { DATA_DIR: join(dir, "data"), MAX_CONNECTIONS_PER_ADDRESS: "0" })
      // 30 pending agents; each one dropped dials again straight away (no backoff: the worst case for the exit).
      let stopped = false
      let welcomed = 0
      const sockets = new Set<WebSocket>()
      const dial = (i: number) => {
        if (stopped) return
        const ws = new WebSocket(`${cp.wsUrl}/api/v1/agent/connect`, [AGENT_SUBPROTOCOL], { headers: { authorization: `Bearer ${S.BOOTSTRAP_TOKEN}` } })
        sockets.add(ws)
        ws.on("error", () => {})
        ws.on("open", () => ws.send(helloFrame(`redial-${i}`)))
        ws.on("message", (d) => {
          if (String(d).includes(`"welcome"`)) welcomed++
        })
        ws.on("close", () => {
          sockets.delete(ws)
          setTimeout(() => dial(i), 1)
        })
      }
      yield* Effect.addFinalizer(() => Effect.sync(() => {
        stopped = true
        for (const ws of sockets) ws.terminate()
      }))
      for (let i = 0; i < 30; i++) dial(i)
      yield* S.waitFor("every agent welcomed", Effect.sync(() => welcomed >= 30), { timeout: 60_000 })

      const started = Date.now()
      const code = yield* cp.kill("SIGTERM")
      const tookMs = Date.now() - started
      assert.strictEqual(code, 0, cp.output())
      // The leftover connections get a 2 s grace before they are closed.
      assert.isBelow(tookMs, EXIT_WITHIN_MS + 2000, `exit took ${tookMs} ms`)
    }), 240_000)
})
