// One viewer relayed through a tunnel, until either end stops. The tunnel is opened through whatever path
// `open` takes (the agent's link on this control plane today), racing the viewer's own end.
//
// Viewer -> agent spends the credit the agent granted and stops reading the viewer's socket at zero (still
// reading an idle viewer keeps its close and pongs visible). Agent -> viewer bytes are credited back to the
// agent only once the viewer's socket has taken them, so a viewer that never reads pins at most one window.
// Transport pings find dead viewers; one paused for flow control is not judged (its pongs cannot be read).
import { CloseCode, creditThreshold, encodeDataFrames, encodeWindow, type PayloadOf } from "@streamspace/protocol"
import type { Duration, Scope } from "effect"
import { Cause, Deferred, Effect, Exit, Latch, Metric, Queue } from "effect"
import type { RawData, WebSocket } from "ws"
import type { AgentHubError, Tunnel, TunnelSink } from "../../AgentHub.ts"
import { vncBytesTotal } from "../../Observability.ts"
import { keepAlive } from "../ws.ts"

/** Close codes a viewer can see, with the reason text saying more. */
export const ViewerClose = {
  /** The VNC server ended the connection, or the agent was asked to disconnect. */
  normal: 1000,
  /** The control plane is shutting down. */
  goingAway: 1001,
  /** The viewer sent a text frame: RFB travels in binary frames. */
  unsupportedData: 1003,
  /** A policy filter (the template's clipboard switches) could no longer parse what the viewer sends. */
  policyViolation: 1008,
  /** The session does not exist or is not the caller's. */
  notFound: 4404,
  /** A view-only viewer sent a client message the proxy cannot parse, so its input could not be held back. */
  unfilterable: 4400,
  /** The owner or an admin ended this viewer, or its share or link was removed. */
  ended: 4403,
  /** The session exists but is not running. */
  notRunning: 4409,
  /** A per-user viewer limit (MAX_VIEWERS_PER_SESSION, MAX_VIEWERS_PER_USER) is reached; the reason names it. */
  tooManyViewers: 4429,
  /** The agent closed the tunnel (pod gone, idle timeout, agent shutdown...). */
  tunnelClosed: 4410,
  /** The agent could not open the tunnel, or broke the flow-control contract. */
  tunnelFailed: 4502,
  /** The agent running the session disconnected. */
  agentGone: 4503,
  /** The session's template requires recording (`always`) and the recording cannot start; the reason says why. */
  recordingFailed: 4507,
  /** The viewer's user was disabled or signed out everywhere by an admin. */
  accessRevoked: 4403,
  /**
   * Reconnect now (the web UI does, without asking): this replica is draining and refuses or hands over its
   * viewers, or the replica holding the session's agent went away. Protocol `CloseCode.reconnect`.
   */
  reconnect: CloseCode.reconnect
} as const

/** How a relay ended: by the viewer (nothing to tell it), or with a code and reason for the viewer. */
export type End =
  | { readonly by: "viewer" }
  | { readonly by: "agent"; readonly code: number; readonly reason: string }

export interface RelayOptions {
  /** Credit granted to the agent for bytes towards the viewer. */
  readonly window: number
  readonly pingInterval: Duration.Input
  /** Called with a function giving the bytes this relay holds right now, for as long as it runs. */
  readonly track: (held: () => number) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Sees every chunk the viewer sends that goes on (after the filters), in order, as it arrives (the proxy looks for
   * user input in it); bytes it returns are sent to the agent right after the chunk (a recording's keyframe request).
   */
  readonly onViewerData?: (bytes: Uint8Array) => Uint8Array | void
  /** What of each chunk the viewer sends goes on (view-only: input dropped); undefined ends the viewer (`unfilterable`). */
  readonly filter?: (bytes: Uint8Array) => Uint8Array | undefined
  /**
   * Rewrites what the viewer sends before it goes to the agent (drops messages a policy forbids); undefined for a
   * chunk closes the viewer with 1008 and the reason given by `filterRefusal`.
   */
  readonly filterViewerData?: (bytes: Uint8Array) => Uint8Array | undefined
  readonly filterRefusal?: string
  /** The same for what the agent sends towards the viewer (credit is returned for the bytes received). */
  readonly filterAgentData?: (bytes: Uint8Array) => Uint8Array | undefined
  /** Sees every chunk that goes towards the viewer (after `filterAgentData`), in order (a recording). */
  readonly onAgentData?: (bytes: Uint8Array) => void
}

const toViewerBytes = Metric.withAttributes(vncBytesTotal, { direction: "to_viewer" })
const toAgentBytes = Metric.withAttributes(vncBytesTotal, { direction: "to_agent" })

const toBytes = (data: RawData): Uint8Array =>
  Array.isArray(data) ? Buffer.concat(data) : data instanceof ArrayBuffer ? new Uint8Array(data) : data

const closedByAgent = (closed: PayloadOf<"vnc_closed">): End => {
  const normal = closed.reason === "upstream_closed" || closed.reason === "disconnect"
  return {
    by: "agent",
    code: normal ? ViewerClose.normal : ViewerClose.tunnelClosed,
    reason: `tunnel closed by the agent: ${closed.reason}${closed.message === undefined ? "" : ` (${closed.message})`}`
  }
}

const refused = (e: AgentHubError): End => ({
  by: "agent",
  code: e.reason === "NotConnected" || e.reason === "NotFound"
    ? ViewerClose.agentGone
    : e.code === "session_not_running" || e.code === "session_not_found"
    ? ViewerClose.notRunning
    : ViewerClose.tunnelFailed,
  reason: `could not open the tunnel: ${e.code === undefined ? "" : `${e.code}: `}${e.message}`
})

/** Relays `ws` through the tunnel `open` gives; returns how it ended. The tunnel closes with the scope. */
export const relay = Effect.fnUntraced(function*(
  ws: WebSocket,
  open: (sink: TunnelSink) => Effect.Effect<Tunnel, AgentHubError, Scope.Scope>,
  options: RelayOptions
) {
  const { window } = options
  const threshold = creditThreshold(window)
  const ended = yield* Deferred.make<End>()
  const finish = (end: End) => void Deferred.doneUnsafe(ended, Exit.succeed(end))

  // ---- viewer -> agent: spend the agent's credit; stop reading the viewer at zero.
  let credit = 0
  let queuedBytes = 0
  let paused = false
  const inbound = yield* Queue.unbounded<Uint8Array, Cause.Done>()
  const creditLatch = yield* Latch.make(false)
  const flow = () => {
    const pause = (credit === 0 && queuedBytes > 0) || queuedBytes > window
    if (pause && !paused) ws.pause()
    else if (!pause && paused) ws.resume()
    paused = pause
  }
  const grant = (n: number) => {
    credit += n
    creditLatch.openUnsafe()
    flow()
  }
  ws.on("message", (data, isBinary) => {
    if (!isBinary) {
      finish({ by: "agent", code: ViewerClose.unsupportedData, reason: "RFB travels in binary frames; text frames are not accepted" })
      return
    }
    const raw = toBytes(data)
    const allowed = options.filter === undefined ? raw : options.filter(raw)
    if (allowed === undefined) {
      finish({ by: "agent", code: ViewerClose.unfilterable, reason: "a message the proxy cannot parse from a viewer without control" })
      return
    }
    const bytes = options.filterViewerData === undefined ? allowed : options.filterViewerData(allowed)
    if (bytes === undefined) {
      finish({ by: "agent", code: ViewerClose.policyViolation, reason: options.filterRefusal ?? "refused by the session's policy" })
      return
    }
    if (bytes.length === 0) return
    const extra = options.onViewerData?.(bytes)
    for (const chunk of extra === undefined ? [bytes] : [bytes, extra]) {
      queuedBytes += chunk.length
      Queue.offerUnsafe(inbound, chunk)
    }
    flow()
  })
  ws.on("close", () => finish({ by: "viewer" }))
  // The viewer may have left while the proxy prepared (presence, recording, policy reads): no tunnel for it.
  if (ws.readyState === ws.CLOSING || ws.readyState === ws.CLOSED) finish({ by: "viewer" })
  // The proxy holds the viewer's first bytes in the socket until these listeners exist.
  if (ws.isPaused) ws.resume()
  ws.on("error", () => finish({ by: "viewer" }))
  flow()
  // A viewer that stops answering transport pings is gone, also while its tunnel is being opened.
  yield* Effect.forkScoped(
    keepAlive(ws, options.pingInterval, () => paused).pipe(
      Effect.flatMap((dead) =>
        Effect.sync(() => {
          if (!dead) return
          finish({ by: "viewer" })
          ws.terminate()
        })
      )
    ),
    { startImmediately: true }
  )

  // ---- agent -> viewer: credit goes back once the viewer's socket has taken the bytes.
  let inFlight = 0
  let toReturn = 0
  yield* options.track(() => inFlight + queuedBytes)
  const returns = yield* Queue.unbounded<number>()
  // Frames arrive on the agent socket's callback, outside any fiber: metrics are updated with this context.
  const context = yield* Effect.context<never>()
  const sink: TunnelSink = {
    onFrame: (frame) => {
      if (frame.kind === "window") return grant(frame.credit)
      const n = frame.payload.length
      if (inFlight + n > window) {
        return finish({ by: "agent", code: ViewerClose.tunnelFailed, reason: "the agent sent more than the credit window allows" })
      }
      const out = options.filterAgentData === undefined ? frame.payload : options.filterAgentData(frame.payload)
      if (out === undefined) {
        return finish({ by: "agent", code: ViewerClose.policyViolation, reason: options.filterRefusal ?? "refused by the session's policy" })
      }
      inFlight += n
      toViewerBytes.updateUnsafe(n, context)
      options.onAgentData?.(out)
      const taken = (err?: Error | null) => {
        inFlight -= n
        if (err !== undefined && err !== null) return
        toReturn += n
        if (toReturn >= threshold) {
          Queue.offerUnsafe(returns, toReturn)
          toReturn = 0
        }
      }
      if (out.length === 0) taken()
      else ws.send(out, { binary: true }, taken)
    },
    onClosed: (closed) => Effect.sync(() => finish(closedByAgent(closed))),
    onAgentGone: Effect.sync(() => finish({ by: "agent", code: ViewerClose.agentGone, reason: "the agent running this session disconnected" }))
  }

  // ---- open the tunnel, unless the viewer leaves first
  const opened = yield* Effect.raceFirst(
    open(sink).pipe(Effect.result),
    Deferred.await(ended).pipe(Effect.map((end) => ({ _tag: "Ended" as const, end })))
  )
  if (opened._tag === "Ended") return opened.end
  if (opened._tag === "Failure") return refused(opened.failure)
  const tunnel = opened.success
  grant(tunnel.window)

  const sendCredit = Effect.gen(function*() {
    while (true) yield* tunnel.send(encodeWindow(tunnel.id, yield* Queue.take(returns)))
  })
  const pumpToAgent = Effect.gen(function*() {
    while (true) {
      const chunk = yield* Queue.take(inbound)
      let off = 0
      while (off < chunk.length) {
        if (credit === 0) {
          creditLatch.closeUnsafe()
          flow()
          yield* creditLatch.await
          continue
        }
        const n = Math.min(credit, chunk.length - off)
        credit -= n
        for (const frame of encodeDataFrames(tunnel.id, chunk.subarray(off, off + n))) yield* tunnel.send(frame)
        off += n
        yield* Metric.update(toAgentBytes, n)
      }
      queuedBytes -= chunk.length
      flow()
    }
  })
  yield* Effect.logInfo("VncProxy: viewer connected").pipe(Effect.annotateLogs({ tunnel_id: tunnel.id }))
  yield* Effect.forkScoped(pumpToAgent.pipe(Effect.catchCause((cause) =>
    Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.sync(() => finish({ by: "agent", code: ViewerClose.agentGone, reason: "the agent is not reachable" }))
  )))
  yield* Effect.forkScoped(sendCredit.pipe(Effect.ignore))
  return yield* Deferred.await(ended)
})
