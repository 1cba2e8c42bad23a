// Transport keep-alive for a WebSocket: a ping every `interval`; when neither a pong nor any frame
// arrived within `timeout` of a ping, the socket is terminated (its close then ends whoever reads it).
// Keeps the link honest through proxies and NATs that drop idle or dead connections silently.
import { Duration, Effect } from "effect"
import WebSocket from "ws"

export const keepAlive = (ws: WebSocket, interval: Duration.Duration, timeout: Duration.Duration): Effect.Effect<void> =>
  Effect.gen(function*() {
    let alive = true
    const sawTraffic = () => {
      alive = true
    }
    yield* Effect.acquireRelease(
      Effect.sync(() => ws.on("pong", sawTraffic).on("message", sawTraffic)),
      () => Effect.sync(() => ws.off("pong", sawTraffic).off("message", sawTraffic))
    )
    while (true) {
      yield* Effect.sleep(interval)
      if (ws.readyState !== WebSocket.OPEN) return
      alive = false
      ws.ping()
      yield* Effect.sleep(timeout)
      if (!alive) {
        yield* Effect.logWarning(`no pong within ${Duration.format(timeout)}: dropping the link`)
        ws.terminate()
        return
      }
    }
  }).pipe(Effect.scoped)
