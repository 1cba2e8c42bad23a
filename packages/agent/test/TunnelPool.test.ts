// TunnelPool end to end: a real RFB session from vnc-testserver through kube-testserver's port-forward,
// the agent's tunnel and a fake control-plane link; two viewers, a slow viewer, closes for every reason,
// refusals, the tunnel limit, the idle timeout under TestClock, and no leaked sockets.
import { assert, describe, it } from "@effect/vitest"
import { MAX_BUFFERED_BYTES_PER_CONNECTION, MAX_TUNNELS_PER_CONNECTION, MIN_WINDOW_BYTES, type TunnelId } from "@streamspace/protocol"
import { ENCODING_RAW, RfbClient, VncTestServer } from "@streamspace/vnc-testserver"
import { Context, Effect, Layer, Metric } from "effect"
import { TestClock } from "effect/testing"
import * as net from "node:net"
import { tunnelBytes, vncTunnelsActive } from "../src/Metrics.ts"
import { SessionStore } from "../src/SessionStore.ts"
import { TunnelPool } from "../src/TunnelPool.ts"
import { type Cluster, makeCluster, NAMESPACE, sessionSpec, sid } from "./support/cluster.ts"
import { waitFor } from "@streamspace/testbed"
import { makeFakeLink, viewer } from "./support/clusterConnection.ts"

const tid = (n: number) => n as TunnelId
const WINDOW = 1024 * 1024

const setup = (extra: Record<string, string> = {}, cluster?: Cluster) =>
  Effect.gen(function*() {
    const c = cluster ?? (yield* makeCluster())
    const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 640, height: 480, name: "tunnel test desktop" })), VncTestServer)
    c.server.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
    const { layer, link } = makeFakeLink()
    const ctx = yield* Layer.build(TunnelPool.layer.pipe(Layer.provideMerge(c.store(extra)), Layer.provideMerge(layer)))
    const pool = Context.get(ctx, TunnelPool)
    const store = Context.get(ctx, SessionStore)
    const services = yield* Effect.context<never>()
    const runPromise = Effect.runPromiseWith(services)
    const connections = Effect.map(vnc.state, (s) => s.connections)
    const running = (id: string) =>
      Effect.gen(function*() {
        yield* store.create(sid(id), sessionSpec())
        yield* waitFor(`${id} running`, Effect.map(store.get(sid(id)), (s) => s._tag === "Some" && s.value.phase === "running"))
      })
    const connect = (n: number, window = WINDOW, returnCredit = true) =>
      Effect.promise(() => RfbClient.connect(viewer(pool, link, tid(n), { window, returnCredit }, runPromise), { timeout: 10_000 }))
    const closedWith = (n: number) =>
      waitFor(`vnc_closed for tunnel ${n}`, Effect.sync(() => link.closedMessages().find((m) => m.tunnel_id === n)))
    return { cluster: c, vnc, link, pool, store, connections, running, connect, closedWith }
  })

describe("TunnelPool", () => {
  it.live("carries a real RFB session through port-forward; two viewers on one session; close and closeAll", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      const before = yield* t.connections
      const opened = yield* t.pool.open(sid("s-1"), tid(1), WINDOW)
      assert.strictEqual(opened.window, 1024 * 1024)
      yield* t.pool.open(sid("s-1"), tid(2), WINDOW)
      assert.strictEqual(yield* t.pool.active, 2)
      const a = yield* t.connect(1)
      const b = yield* t.connect(2)
      assert.strictEqual(a.name, "tunnel test desktop")
      assert.strictEqual(b.width, 640)
      const ua = yield* Effect.promise(() => a.update(false))
      yield* Effect.promise(() => b.update(false))
      assert.isAbove(ua.rects.length, 0)
      a.type("hello")
      yield* waitFor("typed text reached the desktop", Effect.map(t.vnc.state, (s) => s.typedText.includes("hello")))
      yield* waitFor("two viewers on the desktop", Effect.map(t.connections, (n) => n === before + 2))
      assert.strictEqual((yield* Metric.value(vncTunnelsActive)).value, 2)
      assert.isAbove((yield* Metric.value(Metric.withAttributes(tunnelBytes, { direction: "to_viewer" }))).count, 2 * 640 * 480)
      assert.isAbove((yield* Metric.value(Metric.withAttributes(tunnelBytes, { direction: "to_session" }))).count, 0)

      yield* t.pool.close(tid(1), "disconnect")
      const closed = yield* t.closedWith(1)
      assert.deepStrictEqual(closed, { tunnel_id: 1, session_id: "s-1", reason: "disconnect" } as never)
      yield* waitFor("first viewer's socket closed", Effect.map(t.connections, (n) => n === before + 1))
      yield* Effect.promise(() => b.update(true))
      yield* t.pool.close(tid(1), "disconnect")
      assert.strictEqual(t.link.closedMessages().filter((m) => m.tunnel_id === 1).length, 1, "vnc_closed is sent once")

      yield* t.pool.closeAll("shutdown")
      assert.strictEqual((yield* t.closedWith(2)).reason, "shutdown")
      assert.strictEqual(yield* t.pool.active, 0)
      assert.strictEqual((yield* Metric.value(vncTunnelsActive)).value, 0)
      yield* waitFor("no sockets left on the VNC server", Effect.map(t.connections, (n) => n === before))
    }))

  it.live("a slow viewer that returns no credit never gets more than its window and does not stall another", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      yield* t.pool.open(sid("s-1"), tid(1), MIN_WINDOW_BYTES)
      yield* t.pool.open(sid("s-1"), tid(2), MIN_WINDOW_BYTES)
      const slow = yield* t.connect(1, MIN_WINDOW_BYTES, false)
      const fast = yield* t.connect(2, MIN_WINDOW_BYTES, true)
      slow.setEncodings([ENCODING_RAW])
      fast.setEncodings([ENCODING_RAW])
      // A raw 640x480x32bpp update is 1.2 MB: far beyond one window.
      slow.requestUpdate(false)
      yield* waitFor("the slow viewer's window is used up", Effect.sync(() => (t.link.stats.get(1)?.received ?? 0) >= MIN_WINDOW_BYTES - 64))
      for (let i = 0; i < 3; i++) yield* Effect.promise(() => fast.update(false))
      const slowStats = t.link.stats.get(1)!
      const fastStats = t.link.stats.get(2)!
      assert.isAtMost(slowStats.received, MIN_WINDOW_BYTES, "never more than the window in flight")
      assert.isAbove(fastStats.received, 3 * 640 * 480 * 4)
      assert.isAtMost(fastStats.maxInFlight, MIN_WINDOW_BYTES)
      // What the agent holds for the stalled tunnel is bounded by the port-forward read buffer (the socket is
      // paused beyond it: 128 KiB plus the message that crossed it), not by the 1.2 MB the desktop has to send.
      yield* waitFor("the port-forward buffer fills", Effect.map(t.pool.buffered, (b) => b.max > 0))
      const held = yield* t.pool.buffered
      assert.isAtMost(held.max, 128 * 1024 + 64 * 1024)
      assert.isAtLeast(held.total, held.max)
      // Credit unblocks the slow one.
      yield* t.pool.receive({ kind: "window", tunnelId: tid(1), credit: MIN_WINDOW_BYTES })
      yield* waitFor("slow viewer moves again", Effect.sync(() => t.link.stats.get(1)!.received > MIN_WINDOW_BYTES))
    }))

  it.live("a tunnel closes with pod_gone when the session's pod is deleted", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      const before = yield* t.connections
      yield* t.pool.open(sid("s-1"), tid(7), WINDOW)
      yield* t.connect(7)
      yield* t.store.delete(sid("s-1"))
      assert.strictEqual((yield* t.closedWith(7)).reason, "pod_gone")
      yield* waitFor("socket closed", Effect.map(t.connections, (n) => n === before))
      assert.strictEqual(yield* t.pool.active, 0)
    }))

  it.live("a pod that is no longer Ready (desktop not answering its probe) closes its session's tunnels at once, with the reason for the viewer", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      yield* t.running("s-2")
      yield* t.pool.open(sid("s-1"), tid(1), WINDOW)
      yield* t.pool.open(sid("s-2"), tid(2), WINDOW)
      yield* t.connect(1)
      // The kubelet reports the desktop not Ready (its readiness probe fails): Running, but not Ready. The forward
      // itself stays open (through the real API server nothing arrives until the viewer writes).
      const pod = t.cluster.server.get("pods", NAMESPACE, "s-1")!
      t.cluster.server.put("pods", {
        ...pod,
        status: {
          ...pod.status,
          conditions: (pod.status.conditions ?? []).map((c: any) => c.type === "Ready" || c.type === "ContainersReady" ? { ...c, status: "False" } : c),
          containerStatuses: (pod.status.containerStatuses ?? []).map((c: any) => ({ ...c, ready: false }))
        }
      })
      const closed = yield* t.closedWith(1)
      assert.strictEqual(closed.reason, "upstream_closed")
      assert.include(closed.message, "not ready")
      assert.strictEqual(yield* t.pool.active, 1, "the other session's tunnel stays")
      assert.deepStrictEqual(yield* t.pool.ids, [tid(2)])
    }))

  it.live("a desktop container that restarted closes the session's tunnels, also when the pod is reported Ready again in the same update", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      yield* t.pool.open(sid("s-1"), tid(1), WINDOW)
      yield* t.connect(1)
      const pod = t.cluster.server.get("pods", NAMESPACE, "s-1")!
      t.cluster.server.put("pods", {
        ...pod,
        status: { ...pod.status, containerStatuses: (pod.status.containerStatuses ?? []).map((c: any) => ({ ...c, restartCount: (c.restartCount ?? 0) + 1 })) }
      })
      const closed = yield* t.closedWith(1)
      assert.strictEqual(closed.reason, "upstream_closed")
      assert.include(closed.message, "restarted")
      // The session is still running: a new viewer gets a tunnel.
      yield* t.pool.open(sid("s-1"), tid(2), WINDOW)
      yield* t.connect(2)
    }))

  it.live("through a forward that behaves like the real API server (pod side closed: silent until a write), the viewer's next write ends the tunnel, also when it is out of credit", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster({ portForwardUpstreamClose: "onWrite" })
      const t = yield* setup({}, cluster)
      yield* t.running("s-1")
      // A desktop that sends more than the window, then exits.
      const sockets: Array<net.Socket> = []
      const desktop = net.createServer((sock) => {
        sockets.push(sock)
        sock.on("error", () => {})
        sock.write(Buffer.alloc(3 * MIN_WINDOW_BYTES, 7))
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((r) => desktop.listen(0, "127.0.0.1", () => r()))),
        () => Effect.promise(() => new Promise<void>((r) => desktop.close(() => r())))
      )
      t.cluster.server.registerPortForward(NAMESPACE, "s-1", 5900, { host: "127.0.0.1", port: (desktop.address() as net.AddressInfo).port })
      // The viewer never returns credit: the pump towards it stalls at the window.
      yield* t.pool.open(sid("s-1"), tid(1), MIN_WINDOW_BYTES)
      yield* waitFor("the window spent", Effect.sync(() => (t.link.stats.get(1)?.received ?? 0) === MIN_WINDOW_BYTES))
      for (const sock of sockets) sock.destroy()
      yield* waitFor("the desktop's socket closed", Effect.sync(() => sockets.length === 1 && sockets[0]!.destroyed))
      assert.deepStrictEqual(t.link.closedMessages(), [], "nothing tells the agent yet")
      // A key press from the viewer: the API server answers broken pipe, and the tunnel closes at once.
      yield* t.pool.receive({ kind: "data", tunnelId: tid(1), payload: Uint8Array.of(4, 1, 0, 0, 0, 0, 0, 0x61) })
      const closed = yield* t.closedWith(1)
      assert.strictEqual(closed.reason, "upstream_closed")
      assert.include(closed.message, "broken pipe")
      yield* waitFor("no tunnel left", Effect.map(t.pool.active, (n) => n === 0))
    }))

  it.live("upstream close and a failed forward are reported; refusals for unknown, not running, duplicate", () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      yield* t.running("s-2")
      // s-1's VNC server says hello and hangs up; nothing listens for s-2.
      const hangup = net.createServer((s) => s.end("RFB 003.008\n"))
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((r) => hangup.listen(0, "127.0.0.1", () => r()))),
        () => Effect.promise(() => new Promise<void>((r) => hangup.close(() => r())))
      )
      t.cluster.server.registerPortForward(NAMESPACE, "s-1", 5900, { host: "127.0.0.1", port: (hangup.address() as net.AddressInfo).port })
      t.cluster.server.registerPortForward(NAMESPACE, "s-2", 5900, { host: "127.0.0.1", port: 1 })
      yield* t.pool.open(sid("s-1"), tid(1), WINDOW)
      assert.strictEqual((yield* t.closedWith(1)).reason, "upstream_closed")
      yield* t.pool.open(sid("s-2"), tid(2), WINDOW).pipe(Effect.ignore)
      const failed = yield* t.closedWith(2)
      assert.strictEqual(failed.reason, "error")
      assert.include(failed.message, "connection refused")

      const unknown = yield* Effect.flip(t.pool.open(sid("nope"), tid(3), WINDOW))
      assert.strictEqual(unknown.reason, "SessionNotFound")
      t.cluster.server.configureKubelet({ cannotPull: ["bad:1"] })
      yield* t.store.create(sid("s-3"), sessionSpec({ image: "bad:1" }))
      const notRunning = yield* Effect.flip(t.pool.open(sid("s-3"), tid(4), WINDOW))
      assert.strictEqual(notRunning.reason, "SessionNotRunning")
      t.cluster.server.unregisterPortForward(NAMESPACE, "s-1")
      yield* t.pool.open(sid("s-1"), tid(5), WINDOW)
      const dup = yield* Effect.flip(t.pool.open(sid("s-1"), tid(5), WINDOW))
      assert.strictEqual(dup.reason, "DuplicateTunnel")
      assert.strictEqual(yield* t.pool.active, 1)
    }))

  it.live(`at most ${MAX_TUNNELS_PER_CONNECTION} tunnels at once`, () =>
    Effect.gen(function*() {
      const t = yield* setup()
      yield* t.running("s-1")
      // A cheap upstream: accepts and stays quiet.
      const sockets = new Set<net.Socket>()
      const quiet = net.createServer((s) => {
        sockets.add(s)
        s.on("close", () => sockets.delete(s))
      })
      yield* Effect.acquireRelease(
        Effect.promise(() => new Promise<void>((r) => quiet.listen(0, "127.0.0.1", () => r()))),
        () => Effect.promise(() => new Promise<void>((r) => quiet.close(() => r())))
      )
      t.cluster.server.registerPortForward(NAMESPACE, "s-1", 5900, { host: "127.0.0.1", port: (quiet.address() as net.AddressInfo).port })
      const granted = yield* Effect.forEach(Array.from({ length: MAX_TUNNELS_PER_CONNECTION }, (_, i) => i + 1), (n) => t.pool.open(sid("s-1"), tid(n), WINDOW), {
        concurrency: 32
      })
      const total = granted.reduce((sum, g) => sum + g.window, 0)
      assert.isAtMost(total, MAX_BUFFERED_BYTES_PER_CONNECTION, "the windows we grant keep our buffering within the per-connection cap")
      assert.isTrue(granted.every((g) => g.window >= MIN_WINDOW_BYTES))
      const over = yield* Effect.flip(t.pool.open(sid("s-1"), tid(MAX_TUNNELS_PER_CONNECTION + 1), WINDOW))
      assert.strictEqual(over.reason, "TooManyTunnels")
      yield* waitFor("every upstream socket connected", Effect.sync(() => sockets.size === MAX_TUNNELS_PER_CONNECTION))
      yield* t.pool.closeAll("shutdown")
      assert.strictEqual(t.link.closedMessages().length, MAX_TUNNELS_PER_CONNECTION)
      yield* waitFor("every upstream socket closed", Effect.sync(() => sockets.size === 0))
    }), 30_000)

  it.effect("closes an idle tunnel after VNC_TUNNEL_TIMEOUT (TestClock)", () =>
    Effect.gen(function*() {
      const t = yield* setup({ VNC_TUNNEL_TIMEOUT: "1m" })
      yield* t.running("s-1")
      const before = yield* t.connections
      yield* t.pool.open(sid("s-1"), tid(1), WINDOW)
      const client = yield* t.connect(1)
      yield* Effect.promise(() => client.update(false))
      yield* TestClock.adjust("59 seconds")
      assert.strictEqual(t.link.closedMessages().length, 0, "not idle yet")
      yield* TestClock.adjust("2 seconds")
      assert.strictEqual((yield* t.closedWith(1)).reason, "idle_timeout")
      yield* waitFor("socket closed", Effect.map(t.connections, (n) => n === before))
    }))
})
