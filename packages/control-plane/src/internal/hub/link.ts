// One agent link, from the upgraded socket to its end: the hello handshake with version negotiation and the
// admission rules (bootstrap token -> pending; a credential only for its own, approved agent), replacing an
// older socket of the same agent only when it fails a liveness check (a newcomer is refused with 4007 while
// the older one answers pings), then the read loop: text frames decoded and routed (heartbeats to
// the hub itself, tunnel answers and `vnc_closed` to the tunnel's sink, other reports queued for their
// consumer), binary frames to their tunnel with link credit returned as they are read. A watchdog marks the
// agent offline after HEARTBEAT_MISSED_LIMIT silent intervals; transport pings find dead links sooner.
import type { AgentId, PayloadOf } from "@streamspace/protocol"
import { CloseCode, creditThreshold, decodeBinary, decodeFromAgent, encodeLinkWindow, helloFingerprint, negotiateVersion } from "@streamspace/protocol"
import type { Cause } from "effect"
import { Clock, Duration, Effect, FiberSet, Metric, Option, Queue, Result } from "effect"
import type { WebSocket } from "ws"
import { droppedTunnelFrames } from "../../Observability.ts"
import { close, keepAlive, makeSendQueue, type SendQueue } from "../ws.ts"
import { onHeartbeat } from "./heartbeats.ts"
import { reconcileTunnels } from "./reconcile.ts"
import type { AgentReports } from "./model.ts"
import { type LinkReader, makeLinkReader } from "./linkReader.ts"
import { type Entry, type HubState, type Live, type Report, tunnelKey } from "./state.ts"
import { deliverFrame, onTunnelClosed, onTunnelReply, tunnelsGone } from "./tunnels.ts"

/** How long a new socket has to send `hello`. */
export const HELLO_TIMEOUT = Duration.seconds(10)
/**
 * A newcomer with an agent's id displaces the socket already connected for it only when that socket fails a
 * liveness check: a ping without a pong within this bound.
 */
export const HOLDER_PROBE_TIMEOUT = Duration.seconds(3)
/** Stop a sender once this many bytes are queued on one agent socket and not yet handed to the kernel. */
export const SEND_HIGH_WATER_BYTES = 1024 * 1024
/** Reports of one connection waiting for their consumers; a full queue holds back that agent's reads. */
const REPORT_QUEUE = 256

/** What the upgrade request authenticated as. */
export type Credential =
  | { readonly kind: "bootstrap" }
  | { readonly kind: "agent"; readonly agentId: AgentId }
  /** A one-time enrolment token an administrator issued for this agent id (POST /agents/:id/enrollment-token). */
  | { readonly kind: "enrollment"; readonly agentId: AgentId }

/** About the socket, from its upgrade request; and what runs once an agent is admitted, outside the hub lock. */
export interface LinkOptions {
  readonly remoteAddress: string
  readonly afterAdmit?: (id: AgentId) => Effect.Effect<void>
}

type ErrorCode = PayloadOf<"error">["code"]

/** Sends an `error` naming why, then closes with `code`. */
export const refuse = (state: HubState, out: SendQueue, ws: WebSocket, code: number, message: string, errorCode: ErrorCode, refId?: string) =>
  Effect.gen(function*() {
    yield* Effect.logWarning(`AgentHub: refused the agent (${code}): ${message}`)
    yield* state.sendText(out, "error", { code: errorCode, message, ...(refId === undefined ? {} : { ref_id: refId }) })
    close(ws, code, message)
  })

/**
 * Takes a link out of service at once: its reports already read still reach their consumers, its tunnels end.
 * With `offline`, the agent is recorded offline and Disconnected is published.
 */
export const detach = (state: HubState, entry: Entry, live: Live, offline: boolean) =>
  Effect.gen(function*() {
    live.ended = true
    yield* Queue.end(live.inbox)
    if (entry.live !== live) return
    const id = entry.record.id
    yield* state.tracked(
      entry,
      Effect.gen(function*() {
        entry.live = undefined
        if (offline) {
          entry.record = { ...entry.record, status: "offline" }
          yield* state.markGone(id)
        }
      })
    )
    if (live.approved) yield* state.publish({ _tag: "Disconnected", agentId: id })
    yield* tunnelsGone(state, id)
  })

const consume = (consumer: AgentReports, agentId: AgentId, report: Report): Effect.Effect<void> => {
  switch (report._tag) {
    case "Connected":
      return consumer.onConnected?.(agentId, report.hello) ?? Effect.void
    case "CommandReport":
      return consumer.onCommandReport?.(agentId, report.report) ?? Effect.void
    case "SessionStatus":
      return consumer.onSessionStatus?.(agentId, report.status) ?? Effect.void
  }
}

/** Hands one connection's reports to their consumers, in order, until the link is detached and the queue drained. */
const runReports = (state: HubState, agentId: AgentId, inbox: Queue.Queue<Report, Cause.Done>) =>
  Effect.gen(function*() {
    while (true) {
      const report = yield* Queue.take(inbox)
      for (const consumer of state.reports) {
        yield* consume(consumer, agentId, report).pipe(
          Effect.catchCause((cause) => Effect.logError(`AgentHub: a consumer failed on ${report._tag}`, cause))
        )
      }
    }
  }).pipe(Effect.catchTag("Done", () => Effect.void), Effect.annotateLogs({ agent_id: agentId }))

/** The socket connected for an agent id when a newcomer said hello, and whether it answered a ping. */
export interface Probe {
  readonly holder: Live
  readonly alive: boolean
}

/**
 * Pings the socket that holds `id`, if any, and waits up to HOLDER_PROBE_TIMEOUT for a pong (any pong in that
 * window counts; a socket that closes or is detached first is dead). Runs outside the hub lock.
 */
export const probeHolder = (state: HubState, id: AgentId): Effect.Effect<Probe | undefined> =>
  Effect.gen(function*() {
    const holder = state.agents.get(id)?.live
    if (holder === undefined) return undefined
    const ws = holder.ws
    if (holder.ended || ws.readyState !== ws.OPEN) return { holder, alive: false }
    const answered = yield* Effect.callback<boolean>((resume) => {
      const onPong = () => resume(Effect.succeed(true))
      const onClose = () => resume(Effect.succeed(false))
      ws.once("pong", onPong)
      ws.once("close", onClose)
      try {
        ws.ping()
      } catch {
        resume(Effect.succeed(false))
      }
      return Effect.sync(() => {
        ws.off("pong", onPong)
        ws.off("close", onClose)
      })
    }).pipe(Effect.timeoutOption(HOLDER_PROBE_TIMEOUT), Effect.map(Option.getOrElse(() => false)))
    return { holder, alive: answered && !holder.ended }
  })

/** Registers a handshaken socket; None when the agent may not connect (the socket is closed then). */
const admit = (
  state: HubState,
  ws: WebSocket,
  out: SendQueue,
  credential: Credential,
  hello: PayloadOf<"hello">,
  helloId: string,
  probe: Probe | undefined,
  options: LinkOptions
) =>
  state.locked(Effect.gen(function*() {
    const id = hello.agent_id
    const version = negotiateVersion(hello.protocol_versions)
    if (Result.isFailure(version)) {
      yield* refuse(state, out, ws, CloseCode.protocol, version.failure.message, "NoCommonVersion", helloId)
      return Option.none<readonly [Entry, Live]>()
    }
    const entry = state.agents.get(id)
    const enrollment = entry?.record.enrollment
    if (credential.kind === "enrollment") {
      if (credential.agentId !== id) {
        yield* refuse(state, out, ws, CloseCode.forbidden, `this enrolment token was issued for another agent id, not ${id}`, "Unauthorized", helloId)
        return Option.none()
      }
      if (enrollment === "approved") {
        yield* refuse(state, out, ws, CloseCode.forbidden, `agent ${id} is enrolled: connect with its credential`, "Unauthorized", helloId)
        return Option.none()
      }
      // One time only: used up by this admission, whatever follows.
      state.enrollmentTokens.delete(id)
      yield* state.persist(id, state.store.agents.deleteEnrollmentToken(id))
    } else if (credential.kind === "agent") {
      if (credential.agentId !== id || enrollment !== "approved") {
        yield* refuse(state, out, ws, CloseCode.forbidden, `this credential does not belong to agent ${id}`, "Unauthorized", helloId)
        return Option.none()
      }
    } else if (enrollment === "approved") {
      yield* refuse(state, out, ws, CloseCode.forbidden, `agent ${id} is enrolled: connect with its credential, not the bootstrap token`, "Unauthorized", helloId)
      return Option.none()
    } else if (enrollment === "rejected" || enrollment === "revoked") {
      yield* refuse(state, out, ws, CloseCode.forbidden, `agent ${id} was ${enrollment} by an administrator`, "Unauthorized", helloId)
      return Option.none()
    }
    // A connected socket of this id keeps it unless it just failed the liveness check: a second process with
    // the same credential (or the bootstrap token, while the id is pending) must not take over a healthy link.
    const holder = entry?.live
    if (holder !== undefined && !(probe !== undefined && probe.holder === holder && !probe.alive)) {
      yield* refuse(
        state,
        out,
        ws,
        CloseCode.alreadyConnected,
        `agent ${id} is already connected${enrollment === "pending" ? " (pending approval)" : ""} from another socket that answers pings; this connection is refused`,
        "AlreadyConnected",
        helloId
      )
      return Option.none()
    }
    const saved = yield* Effect.exit(state.store.agents.register({
      id,
      platform: hello.platform,
      region: hello.region,
      version: hello.version,
      capacity: hello.capacity,
      status: "online",
      activeSessions: hello.sessions.length
    }))
    if (saved._tag === "Failure") {
      yield* Effect.logError("AgentHub: could not persist agent on hello", saved.cause)
      yield* refuse(state, out, ws, CloseCode.internal, "the control plane could not record this agent; retry later", "Internal", helloId)
      return Option.none()
    }
    // With replicas: this one holds the socket now, unless its lease ran out (then the agent goes elsewhere).
    if (!(yield* state.replicas.claim(id))) {
      yield* refuse(state, out, ws, CloseCode.internal, "this control-plane replica cannot take agents now (its lease lapsed); redial", "Internal", helloId)
      return Option.none()
    }
    const record = saved.value.agent
    const target: Entry = entry ?? { record, live: undefined, activeTunnels: 0 }
    state.agents.set(id, target)
    const live: Live = {
      ws,
      out,
      remoteAddress: options.remoteAddress,
      fingerprint: helloFingerprint(helloId),
      approved: record.enrollment === "approved",
      ended: false,
      lastBeatMs: yield* Clock.currentTimeMillis,
      linkUnreturned: 0,
      inbox: yield* Queue.bounded<Report, Cause.Done>(REPORT_QUEUE),
      pendingBeat: undefined,
      applyingBeats: false,
      unsaved: undefined,
      writing: false,
      saved: undefined
    }
    const old = target.live
    yield* state.tracked(target, Effect.sync(() => {
      target.record = record
      target.live = live
      target.activeTunnels = 0
    }))
    if (old !== undefined) {
      // No Disconnected and no offline status: the agent never stopped being reachable.
      old.ended = true
      yield* Queue.end(old.inbox)
      close(old.ws, CloseCode.replaced, "replaced by a newer connection of the same agent (the older one did not answer a ping)")
      yield* tunnelsGone(state, id)
      yield* Effect.logInfo("AgentHub: agent reconnected; the older socket did not answer a ping and was replaced")
    }
    yield* state.sendText(live.out, "welcome", {
      protocol_version: version.success,
      enrollment: live.approved ? "approved" : "pending",
      draining: record.draining,
      heartbeat_interval_ms: Math.max(100, Math.round(Duration.toMillis(state.config.heartbeatInterval))),
      link_window: state.config.agentLinkWindow
    })
    yield* FiberSet.run(state.background, runReports(state, id, live.inbox))
    if (live.approved) {
      yield* Queue.offer(live.inbox, { _tag: "Connected", hello })
      yield* state.publish({ _tag: "Connected", agentId: id })
    }
    yield* Effect.logInfo(`AgentHub: agent connected (${record.enrollment}) from ${live.remoteAddress}, fingerprint ${live.fingerprint}`)
    return Option.some([target, live] as const)
  }).pipe(Effect.annotateLogs({ agent_id: hello.agent_id })))

const handleText = Effect.fnUntraced(function*(state: HubState, entry: Entry, live: Live, raw: string) {
  const decoded = decodeFromAgent(raw)
  if (Result.isFailure(decoded)) {
    const e = decoded.failure
    yield* state.sendText(live.out, "error", { code: e.reason, message: e.message, ...(e.frameId === undefined ? {} : { ref_id: e.frameId }) })
    return
  }
  const msg = decoded.success
  switch (msg.type) {
    case "hello":
      yield* state.sendText(live.out, "error", { code: "UnexpectedType", message: "hello was already received on this connection", ref_id: msg.id })
      return
    case "heartbeat":
      yield* onHeartbeat(state, entry, live, msg.payload)
      if (msg.payload.tunnel_ids !== undefined) yield* reconcileTunnels(state, entry.record.id, live, msg.payload.tunnel_ids)
      return
    case "goodbye":
      return yield* Effect.logInfo(`AgentHub: agent says goodbye: ${msg.payload.reason.slice(0, 200)}`)
    case "pong":
      return
    case "error":
      return yield* Effect.logWarning(`AgentHub: agent reported an error: ${msg.payload.code}: ${msg.payload.message.slice(0, 200)}`)
  }
  // Reports only count from an approved agent on its current link.
  if (!live.approved || live.ended) return
  const id = entry.record.id
  switch (msg.type) {
    case "vnc_closed":
      return yield* onTunnelClosed(state, id, msg.payload)
    case "session_status":
      return yield* Queue.offer(live.inbox, { _tag: "SessionStatus", status: msg.payload })
    default:
      if (!(yield* onTunnelReply(state, id, msg))) yield* Queue.offer(live.inbox, { _tag: "CommandReport", report: msg })
  }
})

/** Tunnel data bytes are off the socket (handed to the viewer's socket, or dropped): the link has room again. */
const creditLink = (state: HubState, live: Live, bytes: number) => {
  live.linkUnreturned += bytes
  if (live.linkUnreturned >= creditThreshold(state.config.agentLinkWindow)) {
    live.out.sendNow(encodeLinkWindow(live.linkUnreturned))
    live.linkUnreturned = 0
  }
}

/**
 * The reader's fast path, on the socket's callback: data and credit for an open tunnel of an admitted agent go
 * straight to the tunnel's sink. False leaves the frame to `handleBinary` (errors, unknown tunnels).
 */
const fastBinary = (state: HubState, entry: Entry, live: Live, frame: Uint8Array): boolean => {
  if (live.ended || !live.approved) return false
  const decoded = decodeBinary(frame)
  if (Result.isFailure(decoded) || decoded.success.kind === "link_window") return false
  const f = decoded.success
  if (!state.tunnels.has(tunnelKey(entry.record.id, f.tunnelId))) return false
  if (f.kind === "data") creditLink(state, live, f.payload.length)
  deliverFrame(state, entry.record.id, live, f)
  return true
}

const handleBinary = Effect.fnUntraced(function*(state: HubState, entry: Entry, live: Live, frame: Uint8Array) {
  const decoded = decodeBinary(frame)
  if (Result.isFailure(decoded)) {
    yield* state.sendText(live.out, "error", { code: decoded.failure.reason, message: decoded.failure.message })
    return
  }
  const f = decoded.success
  if (f.kind === "link_window") {
    yield* state.sendText(live.out, "error", { code: "UnexpectedType", message: "link_window frames flow from the control plane to the agent only" })
    return
  }
  if (f.kind === "data") creditLink(state, live, f.payload.length)
  if (!deliverFrame(state, entry.record.id, live, f)) {
    state.dropped++
    yield* Metric.update(droppedTunnelFrames, 1)
  }
})

/** Waits for a valid `hello`; anything else before it gets an `error` reply. */
const awaitHello = (state: HubState, reader: LinkReader, out: SendQueue) =>
  Effect.gen(function*() {
    while (true) {
      for (const frame of yield* reader.pull) {
        const decoded = typeof frame === "string" ? decodeFromAgent(frame) : undefined
        if (decoded !== undefined && Result.isSuccess(decoded) && decoded.success.type === "hello") {
          return { hello: decoded.success.payload, id: decoded.success.id as string }
        }
        const error = decoded === undefined
          ? { code: "UnexpectedType" as const, message: "the first frame must be a hello text frame" }
          : Result.isFailure(decoded)
          ? { code: decoded.failure.reason, message: decoded.failure.message, ...(decoded.failure.frameId === undefined ? {} : { ref_id: decoded.failure.frameId }) }
          : { code: "UnexpectedType" as const, message: `expected hello first, got ${decoded.success.type}`, ref_id: decoded.success.id as string }
        yield* state.sendText(out, "error", error)
      }
    }
  })

/** Marks the agent offline (and closes its socket) once HEARTBEAT_MISSED_LIMIT intervals pass without a beat. */
const watchdog = (state: HubState, entry: Entry, live: Live) =>
  Effect.gen(function*() {
    const limit = Duration.times(state.config.heartbeatInterval, state.config.heartbeatMissedLimit)
    const limitMs = Duration.toMillis(limit)
    while (!live.ended) {
      const now = yield* Clock.currentTimeMillis
      const due = live.lastBeatMs + limitMs
      if (now < due) {
        yield* Effect.sleep(Duration.millis(due - now))
        continue
      }
      // A beat may have been read while we waited for the lock: judge again under it.
      const silent = yield* state.locked(Effect.gen(function*() {
        if ((yield* Clock.currentTimeMillis) < live.lastBeatMs + limitMs) return false
        yield* detach(state, entry, live, true)
        return true
      }))
      if (!silent) continue
      yield* Effect.logWarning(`AgentHub: no heartbeat for ${Duration.format(limit)}; agent is offline`)
      close(live.ws, CloseCode.heartbeatTimeout, "no heartbeat")
    }
  })

/** Serves one upgraded agent socket until it closes. */
export const serveLink = (state: HubState, ws: WebSocket, credential: Credential, options: LinkOptions) =>
  Effect.scoped(Effect.gen(function*() {
    const out = makeSendQueue(ws, SEND_HIGH_WATER_BYTES)
    yield* Effect.addFinalizer(() => Effect.sync(() => close(ws, CloseCode.goingAway, "control plane shutting down")))
    const reader = yield* makeLinkReader(ws)
    let current: readonly [Entry, Live] | undefined
    yield* Effect.forkScoped(keepAlive(ws, state.config.pingInterval).pipe(
      Effect.flatMap((dead) =>
        dead
          ? Effect.gen(function*() {
            yield* Effect.logWarning("AgentHub: no pong to the previous ping; dropping the link")
            if (current !== undefined) yield* state.locked(detach(state, current[0], current[1], true))
            ws.terminate()
          })
          : Effect.void
      )
    ))
    const first = yield* awaitHello(state, reader, out).pipe(Effect.timeoutOption(HELLO_TIMEOUT))
    if (Option.isNone(first)) {
      close(ws, CloseCode.helloTimeout, "no hello")
      return
    }
    const probe = yield* probeHolder(state, first.value.hello.agent_id)
    const admitted = yield* admit(state, ws, out, credential, first.value.hello, first.value.id, probe, options)
    if (Option.isNone(admitted)) return
    const [entry, live] = admitted.value
    current = admitted.value
    if (options.afterAdmit !== undefined) yield* options.afterAdmit(entry.record.id)
    yield* Effect.addFinalizer(() => state.locked(detach(state, entry, live, true)))
    reader.fastPath((frame) => fastBinary(state, entry, live, frame))
    yield* Effect.gen(function*() {
      yield* Effect.forkScoped(watchdog(state, entry, live))
      while (!live.ended) {
        for (const frame of yield* reader.pull) {
          if (live.ended) break
          if (typeof frame === "string") yield* handleText(state, entry, live, frame)
          else yield* handleBinary(state, entry, live, frame)
        }
      }
    }).pipe(Effect.annotateLogs({ agent_id: entry.record.id }))
  }).pipe(
    Effect.catchTag("LinkClosed", () => Effect.void),
    Effect.annotateLogs({ component: "AgentHub" })
  ))
