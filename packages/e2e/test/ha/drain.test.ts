// The graceful stop of a control-plane replica (issue 15): two replicas on one PostgreSQL behind a balancer that,
// like a Kubernetes Service, sends new connections only to replicas whose /readyz answers 200. When a replica
// drains (the first step of its shutdown, which SIGTERM starts), /readyz answers 503, its viewers are closed with
// CloseCode.reconnect (4307: the web UI reconnects), new viewers are told the same, new agent sockets are refused
// with 503, and its agents get `goaway` and redial at once through the balancer, landing on the other replica,
// where the session's viewer is served again. Stopping a replica (its scope closing) drains it the same way.
import { assert, layer } from "@effect/vitest"
import { AGENT_SUBPROTOCOL, CloseCode } from "@streamspace/protocol"
import { Effect } from "effect"
import { WebSocket } from "ws"
import { startBalancer } from "../support/balancer.ts"
import * as S from "../support/stack.ts"
import * as V from "../support/systemVnc.ts"

const upgradeStatus = (url: string, token: string) =>
  Effect.callback<number>((resume) => {
    const ws = new WebSocket(url, [AGENT_SUBPROTOCOL], { headers: { authorization: `Bearer ${token}` } })
    ws.on("open", () => {
      ws.terminate()
      resume(Effect.succeed(101))
    })
    ws.on("unexpected-response", (_req, res) => {
      res.resume()
      resume(Effect.succeed(res.statusCode ?? 0))
    })
    ws.on("error", () => resume(Effect.succeed(-1)))
  })

/** A viewer through `cpWsUrl` that has read the RFB greeting (its tunnel is open). */
const streaming = (cpWsUrl: string, id: string, token: string) =>
  Effect.gen(function*() {
    const v = yield* V.openRaw(cpWsUrl, id, { token })
    assert.strictEqual((yield* v.read(12)).toString("latin1"), "RFB 003.008\n")
    return v
  })

layer(S.SystemDb.postgres, S.layerOptions)("graceful stop of a replica", (it) => {
  it.effect("draining: readiness false, viewers handed over with 4307, newcomers sent elsewhere, agents move at once to the other replica", () =>
    Effect.gen(function*() {
      const env = { ...S.SYSTEM_ENV, ...(yield* (yield* S.SystemDb).fresh) }
      const a = yield* S.startControlPlane(env)
      let b: S.ControlPlaneHandle | undefined
      const lb = yield* startBalancer(() => (b === undefined ? [a] : [a, b]))
      const cluster = yield* S.makeCluster()
      // A long reconnect backoff: only `goaway` brings the agent back quickly.
      yield* S.startApprovedAgent(a, S.agentEnv(cluster, lb.wsUrl, "agent-drain", { RECONNECT_DELAY: "30s", MAX_RECONNECT_DELAY: "60s" }))
      const token = S.userToken("dora")
      const onA = S.api(a.url, token)
      const id: string = (yield* onA.post("/sessions", { template: "demo" })).body.id
      yield* S.waitForSession(onA, id, ["running"])
      // B starts after the approval (agents' credentials are loaded at start).
      b = yield* S.startControlPlane(env)
      const ready = (cp: { readonly url: string }) => S.request(cp.url, "GET", "/readyz")
      assert.strictEqual((yield* ready(a)).status, 200)
      assert.deepStrictEqual((yield* ready(b)).body, { status: "ready" })

      const viewer = yield* streaming(a.wsUrl, id, token)
      yield* a.drain.start
      assert.strictEqual((yield* viewer.closed()).code, CloseCode.reconnect)
      const readyz = yield* ready(a)
      assert.strictEqual(readyz.status, 503)
      assert.deepStrictEqual(readyz.body, { status: "draining" })
      // Newcomers on A: viewers told to reconnect (elsewhere), agents refused.
      const late = yield* V.openRaw(a.wsUrl, id, { token })
      assert.strictEqual((yield* late.closed()).code, CloseCode.reconnect)
      assert.strictEqual(yield* upgradeStatus(`${a.wsUrl}/api/v1/agent/connect`, S.BOOTSTRAP_TOKEN), 503)
      // The agent got `goaway` and is on B now, and the viewer's reconnect is served there.
      yield* S.waitForOnline(b, "agent-drain", 20_000)
      const back = yield* streaming(b.wsUrl, id, token)
      yield* a.stop

      // Stopping B (its scope closing, as on SIGTERM) drains it first: its viewer gets 4307, not 1001.
      yield* b.stop
      assert.strictEqual((yield* back.closed()).code, CloseCode.reconnect)
    }), 120_000)
})
