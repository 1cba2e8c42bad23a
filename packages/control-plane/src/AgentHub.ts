// AgentHub: accepts agent sockets at GET /api/v1/agent/connect, authenticates them (bootstrap token ->
// pending; per-agent credentials with rotation and revocation), runs hello/welcome with version
// negotiation, replaces an older socket of the same agent at once, tracks heartbeats, status, capacity and
// the drain flag, and routes frames: text messages out as events, binary tunnel frames to registered sinks.
//
// The upgrade itself is done by a `ws` server of the hub's own (noServer mode), fed from the HttpRouter
// route: effect/http's upgrade shares one `ws` server between all routes and exposes neither the send
// buffer, transport pings, a per-route subprotocol nor a per-route frame limit, which this socket needs.
import type { AgentId, AgentMessage, AgentStatus, BinaryFrame, Capacity, ControlPlaneMessage, MessageType, PayloadOf, TunnelId } from "@streamspace/protocol"
import {
  AGENT_SUBPROTOCOL,
  creditThreshold,
  decodeBinary,
  decodeFromAgent,
  encodeLinkWindow,
  encodeText,
  makeMessage,
  negotiateVersion
} from "@streamspace/protocol"
import type { Option, Scope } from "effect"
import { Clock, Context, Duration, Effect, FiberSet, Layer, Metric, Option as O, PubSub, Redacted, Result, Schema, Semaphore, Stream } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import type { HttpServerRequest } from "effect/http/HttpServerRequest"
import { Socket } from "effect/socket"
import { randomUUID } from "node:crypto"
import type { IncomingMessage } from "node:http"
import type { WebSocket } from "ws"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { type AgentRecord, type HubStore, hubStoreFrom } from "./internal/hubStore.ts"
import { type AgentSocket, CloseCode, makeAgentSocket, makeAgentWebSocketServer, upgrade } from "./internal/hubSocket.ts"
import { bearerToken, hashesEqual, hashToken, newCredential, type TokenHash } from "./internal/token.ts"
import { Store } from "./Store.ts"

export class AgentHubError extends Schema.TaggedError<AgentHubError>()("AgentHubError", {
  reason: Schema.Literals(["NotFound", "NotConnected", "NotApproved", "InvalidTransition", "Store"]),
  message: Schema.String
}) {}

/** Status as the API shows it: the agent's own report, `offline` when it missed heartbeats or left, `draining` when drained. */
export type AgentViewStatus = "online" | "offline" | "warning" | "error" | "draining"
export type EnrollmentState = "pending" | "approved" | "rejected" | "revoked"

export interface AgentView {
  readonly id: AgentId
  readonly platform: string
  readonly region: string
  readonly version: string
  readonly status: AgentViewStatus
  readonly enrollment: EnrollmentState
  readonly connected: boolean
  readonly draining: boolean
  readonly capacity: Capacity | undefined
  readonly activeSessions: number
  readonly activeTunnels: number
  readonly lastHeartbeat: Date | undefined
}

export type HubEvent =
  | { readonly _tag: "Connected"; readonly agentId: AgentId; readonly hello: PayloadOf<"hello"> }
  | { readonly _tag: "Disconnected"; readonly agentId: AgentId }
  /** A text message from a connected, approved agent (heartbeat, command_*, session_status, vnc_closed, ...). */
  | { readonly _tag: "Message"; readonly agentId: AgentId; readonly message: AgentMessage }
  | { readonly _tag: "StatusChanged"; readonly agentId: AgentId; readonly status: AgentViewStatus }

/** Where the hub delivers binary frames of one tunnel, and tells it the agent went away. */
export interface TunnelSink {
  /** Called on the agent's read loop: it must not wait long (flow control bounds what it has to buffer). */
  readonly onFrame: (frame: BinaryFrame) => Effect.Effect<void>
  readonly onAgentGone: Effect.Effect<void>
}

export interface AgentHubShape {
  readonly list: Effect.Effect<ReadonlyArray<AgentView>>
  readonly get: (id: AgentId) => Effect.Effect<Option.Option<AgentView>>
  /** Sends a text message to a connected agent. */
  readonly send: <T extends ControlPlaneMessage["type"] & MessageType>(
    agentId: AgentId,
    type: T,
    payload: PayloadOf<T>
  ) => Effect.Effect<void, AgentHubError>
  /** Sends a binary frame; waits while that agent's socket is over its send high-water mark. */
  readonly sendBinary: (agentId: AgentId, frame: Uint8Array) => Effect.Effect<void, AgentHubError>
  /** Receives the binary frames of one tunnel for as long as the scope lives. */
  readonly registerTunnel: (agentId: AgentId, tunnelId: TunnelId, sink: TunnelSink) => Effect.Effect<void, never, Scope.Scope>
  /** Every connect, disconnect, message and status change, for whoever subscribes. */
  readonly events: Stream.Stream<HubEvent>
  readonly setDraining: (id: AgentId, draining: boolean) => Effect.Effect<AgentView, AgentHubError>
  /** Approves a pending agent: issues its credential over the socket. */
  readonly approve: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  readonly reject: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Issues a new credential; the old one works for CREDENTIAL_ROTATION_GRACE. */
  readonly rotate: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Revokes the credential and closes the agent's socket. */
  readonly revoke: (id: AgentId) => Effect.Effect<AgentView, AgentHubError>
  /** Binary frames dropped because no sink was registered for their tunnel (additive). */
  readonly droppedFrames: Effect.Effect<number>
}

/** The route the hub registers. */
export const AGENT_CONNECT_PATH = "/api/v1/agent/connect"
/** How long a new socket has to send `hello`. */
export const HELLO_TIMEOUT = Duration.seconds(10)

export const droppedTunnelFrames = Metric.counter("streamspace_control_plane_tunnel_frames_dropped_total", {
  description: "Binary frames from agents for tunnels nobody is registered for"
})

type Credential = { readonly kind: "bootstrap" } | { readonly kind: "agent"; readonly agentId: AgentId }

/** One accepted, handshaken socket. `ended` once it is replaced, revoked, timed out or closed: its frames are ignored. */
interface Live {
  readonly socket: AgentSocket
  readonly approved: boolean
  ended: boolean
  lastBeatMs: number
  /** Tunnel data bytes read off this socket and not yet credited back to the agent's link window. */
  linkUnreturned: number
  /** The latest heartbeat not yet applied to the record; one applier runs per socket at a time. */
  pendingBeat: { readonly hb: PayloadOf<"heartbeat">; readonly atMs: number } | undefined
  applyingBeats: boolean
  /** A heartbeat for the store to save; one writer runs per socket at a time and saves the latest. */
  unsaved: { readonly status: AgentStatus; readonly activeSessions: number; readonly capacity: Capacity } | undefined
  writing: boolean
  /** What the store last got from a heartbeat, and when. */
  saved: { readonly key: string; readonly atMs: number } | undefined
}

interface Entry {
  record: AgentRecord
  live: Live | undefined
}

const errorBody = (status: number, code: string, message: string) =>
  HttpServerResponse.jsonUnsafe({ error: { code, message } }, { status })

const viewOf = (entry: Entry): AgentView => {
  const r = entry.record
  const connected = entry.live !== undefined
  const status: AgentViewStatus = !connected ? "offline" : r.draining ? "draining" : r.status === "offline" ? "online" : r.status
  return {
    id: r.id,
    platform: r.platform,
    region: r.region,
    version: r.version,
    status,
    enrollment: r.enrollment,
    connected,
    draining: r.draining,
    capacity: r.capacity,
    activeSessions: r.activeSessions,
    activeTunnels: r.activeTunnels,
    lastHeartbeat: r.lastHeartbeat
  }
}

const nowDate = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

/**
 * Builds the hub on a HubStore and registers its route on the HttpRouter. The returned service lives as long
 * as the surrounding scope: closing it closes every agent socket with 1001.
 */
export const make = Effect.fnUntraced(function*(store: HubStore) {
  const config = yield* ControlPlaneConfig
  const router = yield* HttpRouter.HttpRouter
  const wss = makeAgentWebSocketServer()
  yield* Effect.addFinalizer(() => Effect.sync(() => wss.close()))
  const events = yield* PubSub.unbounded<HubEvent>()
  const lock = yield* Semaphore.make(1)
  const locked = lock.withPermits(1)
  const background = yield* FiberSet.make()
  const agents = new Map<AgentId, Entry>()
  const sinks = new Map<string, TunnelSink>()
  let dropped = 0
  const bootstrapHash: TokenHash | undefined = O.match(config.agentBootstrapToken, {
    onNone: () => undefined,
    onSome: (t) => hashToken(Redacted.value(t))
  })
  const heartbeatLimit = Duration.times(config.heartbeatInterval, config.heartbeatMissedLimit)
  const linkWindow = config.agentLinkWindow
  const linkCreditThreshold = creditThreshold(linkWindow)
  /** An unchanged heartbeat still refreshes the row's last_heartbeat this often. */
  const heartbeatRefreshMs = Math.max(6 * Duration.toMillis(config.heartbeatInterval), 60_000)

  /** Per agent, its row's writes happen one at a time, in the order they were asked for. */
  const writeLocks = new Map<AgentId, Semaphore.Semaphore>()
  const writeLock = (id: AgentId) => {
    let lock = writeLocks.get(id)
    if (lock === undefined) {
      lock = Semaphore.makeUnsafe(1)
      writeLocks.set(id, lock)
    }
    return lock
  }
  /** Writes one change through; a store failure is logged (the in-memory state stays authoritative). */
  const persist = (id: AgentId, write: Effect.Effect<void, unknown>) =>
    writeLock(id).withPermits(1)(write).pipe(
      Effect.catchCause((cause) => Effect.logError("AgentHub: could not persist agent", cause).pipe(Effect.annotateLogs({ agent_id: id })))
    )

  // Nobody is connected at start: an agent row left `online` by a crash is offline now.
  const stale: Array<AgentId> = []
  for (const record of yield* Effect.orDie(store.loadAll)) {
    if (record.status !== "offline") stale.push(record.id)
    agents.set(record.id, { record: record.status === "offline" ? record : { ...record, status: "offline" }, live: undefined })
  }
  yield* Effect.forEach(stale, (id) => persist(id, store.setStatus(id, "offline")), { concurrency: 16, discard: true })

  const publish = (event: HubEvent) => PubSub.publish(events, event)

  /** Runs a mutation and publishes StatusChanged when the API status moved. */
  const tracked = <A, E, R>(entry: Entry, f: Effect.Effect<A, E, R>) =>
    Effect.gen(function*() {
      const before = viewOf(entry).status
      const a = yield* f
      const after = viewOf(entry).status
      if (before !== after) yield* publish({ _tag: "StatusChanged", agentId: entry.record.id, status: after })
      return a
    })

  const message = <T extends MessageType>(type: T, payload: PayloadOf<T>) =>
    Effect.map(nowDate, (now) => encodeText(makeMessage(type, payload, randomUUID(), now.toISOString()) as never))

  const sendOn = <T extends MessageType>(live: Live, type: T, payload: PayloadOf<T>) =>
    Effect.map(message(type, payload), (text) => live.socket.sendText(text))

  const sinkKey = (agentId: AgentId, tunnelId: number) => `${agentId}/${tunnelId}`

  const tunnelsGone = (agentId: AgentId) =>
    Effect.gen(function*() {
      const prefix = `${agentId}/`
      for (const [key, sink] of sinks) {
        if (!key.startsWith(prefix)) continue
        sinks.delete(key)
        yield* FiberSet.run(background, sink.onAgentGone)
      }
    })

  /** Takes a socket out of service at once. With `offline`, the agent is marked offline and Disconnected is published. */
  const detach = (entry: Entry, live: Live, offline: boolean) =>
    Effect.gen(function*() {
      live.ended = true
      if (entry.live !== live) return
      yield* tracked(
        entry,
        Effect.gen(function*() {
          entry.live = undefined
          if (offline) {
            entry.record = { ...entry.record, status: "offline" }
            yield* persist(entry.record.id, store.setStatus(entry.record.id, "offline"))
          }
        })
      )
      if (live.approved) yield* publish({ _tag: "Disconnected", agentId: entry.record.id })
      yield* tunnelsGone(entry.record.id)
    })

  const authenticate = (token: string, nowMs: number): Credential | undefined => {
    const h = hashToken(token)
    let found: Credential | undefined
    if (bootstrapHash !== undefined && hashesEqual(h, bootstrapHash)) found = { kind: "bootstrap" }
    for (const { record: r } of agents.values()) {
      if (r.enrollment !== "approved") continue
      const current = r.credentialHash !== undefined && hashesEqual(h, r.credentialHash)
      const previous = r.previousCredentialHash !== undefined && r.previousCredentialExpiresAt !== undefined &&
        nowMs < r.previousCredentialExpiresAt.getTime() && hashesEqual(h, r.previousCredentialHash)
      if ((current || previous) && found === undefined) found = { kind: "agent", agentId: r.id }
    }
    return found
  }

  const refuse = (socket: AgentSocket, code: number, message_: string, errorCode: "Unauthorized" | "NoCommonVersion" | "Internal", refId?: string) =>
    Effect.gen(function*() {
      yield* Effect.logWarning(`AgentHub: refused the agent (${code}): ${message_}`)
      const text = yield* message("error", { code: errorCode, message: message_, ...(refId === undefined ? {} : { ref_id: refId }) })
      socket.sendText(text)
      socket.close(code, message_.slice(0, 120))
    })

  /** Registers a handshaken socket; None when the agent may not connect (the socket is closed then). */
  const admit = (socket: AgentSocket, credential: Credential, hello: PayloadOf<"hello">, helloId: string) =>
    locked(Effect.gen(function*() {
      const id = hello.agent_id
      const version = negotiateVersion(hello.protocol_versions)
      if (Result.isFailure(version)) {
        yield* refuse(socket, CloseCode.protocol, version.failure.message, "NoCommonVersion", helloId)
        return O.none<readonly [Entry, Live]>()
      }
      const entry = agents.get(id)
      const enrollment = entry?.record.enrollment
      if (credential.kind === "agent") {
        if (credential.agentId !== id || enrollment !== "approved") {
          yield* refuse(socket, CloseCode.forbidden, `this credential does not belong to agent ${id}`, "Unauthorized", helloId)
          return O.none()
        }
      } else if (enrollment === "approved") {
        yield* refuse(socket, CloseCode.forbidden, `agent ${id} is enrolled: connect with its credential, not the bootstrap token`, "Unauthorized", helloId)
        return O.none()
      } else if (enrollment === "rejected" || enrollment === "revoked") {
        yield* refuse(socket, CloseCode.forbidden, `agent ${id} was ${enrollment} by an administrator`, "Unauthorized", helloId)
        return O.none()
      }
      const now = yield* Clock.currentTimeMillis
      const record: AgentRecord = {
        id,
        platform: hello.platform,
        region: hello.region,
        version: hello.version,
        enrollment: enrollment ?? "pending",
        credentialHash: entry?.record.credentialHash,
        previousCredentialHash: entry?.record.previousCredentialHash,
        previousCredentialExpiresAt: entry?.record.previousCredentialExpiresAt,
        draining: entry?.record.draining ?? false,
        status: "online",
        capacity: hello.capacity,
        activeSessions: hello.sessions.length,
        activeTunnels: 0,
        lastHeartbeat: new Date(now)
      }
      const saved = yield* Effect.exit(store.register({
        id,
        platform: record.platform,
        region: record.region,
        version: record.version,
        capacity: hello.capacity,
        activeSessions: record.activeSessions
      }))
      if (saved._tag === "Failure") {
        yield* Effect.logError("AgentHub: could not persist agent on hello", saved.cause)
        yield* refuse(socket, CloseCode.internal, "the control plane could not record this agent; retry later", "Internal", helloId)
        return O.none()
      }
      const target: Entry = entry ?? { record, live: undefined }
      agents.set(id, target)
      const live: Live = {
        socket,
        approved: record.enrollment === "approved",
        ended: false,
        lastBeatMs: now,
        linkUnreturned: 0,
        pendingBeat: undefined,
        applyingBeats: false,
        unsaved: undefined,
        writing: false,
        saved: undefined
      }
      const old = target.live
      yield* tracked(
        target,
        Effect.sync(() => {
          target.record = record
          target.live = live
        })
      )
      if (old !== undefined) {
        // No Disconnected and no offline status: the agent never stopped being reachable.
        old.ended = true
        old.socket.close(CloseCode.replaced, "replaced by a newer connection of the same agent")
        yield* tunnelsGone(id)
        yield* Effect.logInfo("AgentHub: agent reconnected; the older socket was replaced")
      }
      yield* sendOn(live, "welcome", {
        protocol_version: version.success,
        enrollment: live.approved ? "approved" : "pending",
        draining: record.draining,
        link_window: linkWindow
      })
      if (live.approved) yield* publish({ _tag: "Connected", agentId: id, hello })
      yield* Effect.logInfo(`AgentHub: agent connected (${record.enrollment})`)
      return O.some([target, live] as const)
    }).pipe(Effect.annotateLogs({ agent_id: hello.agent_id })))

  /**
   * A heartbeat counts for liveness when it is read, not when the hub gets round to it: with a thousand agents
   * the hub lock and the database lag, and judging by the applied time declared live agents offline. The read
   * loop only notes the beat; a background applier per socket puts the latest beat into the record under the
   * lock, and a writer per socket saves the record after it, outside the lock. A slow store delays neither.
   */
  const onHeartbeat = (entry: Entry, live: Live, hb: PayloadOf<"heartbeat">) =>
    Effect.gen(function*() {
      if (live.ended) return
      const atMs = yield* Clock.currentTimeMillis
      live.lastBeatMs = atMs
      live.pendingBeat = { hb, atMs }
      if (live.applyingBeats) return
      live.applyingBeats = true
      yield* FiberSet.run(background, applyBeats(entry, live).pipe(Effect.ensuring(Effect.sync(() => void (live.applyingBeats = false)))))
    })

  const applyBeats = (entry: Entry, live: Live) =>
    Effect.gen(function*() {
      while (true) {
        const next = live.pendingBeat
        if (next === undefined || live.ended) {
          live.applyingBeats = false
          return
        }
        live.pendingBeat = undefined
        const { hb, atMs } = next
        yield* locked(Effect.gen(function*() {
          if (live.ended || entry.live !== live) return
          yield* tracked(entry, Effect.sync(() => {
            entry.record = {
              ...entry.record,
              status: hb.status === "offline" ? "online" : hb.status,
              capacity: hb.capacity,
              activeSessions: hb.active_sessions,
              activeTunnels: hb.active_tunnels,
              lastHeartbeat: new Date(atMs)
            }
          }))
          // Placement and the API read the record; the row only needs what changed, and a fresh
          // last_heartbeat now and then.
          const key = JSON.stringify([entry.record.status, hb.capacity, hb.active_sessions])
          if (live.saved === undefined || live.saved.key !== key || atMs - live.saved.atMs >= heartbeatRefreshMs) {
            live.saved = { key, atMs }
            live.unsaved = { status: entry.record.status, activeSessions: hb.active_sessions, capacity: hb.capacity }
            if (!live.writing) {
              live.writing = true
              yield* FiberSet.run(background, saveBeats(entry, live).pipe(Effect.ensuring(Effect.sync(() => void (live.writing = false)))))
            }
          }
        }))
      }
    })

  const saveBeats = (entry: Entry, live: Live) =>
    Effect.gen(function*() {
      while (true) {
        const beat = live.unsaved
        if (beat === undefined || live.ended) {
          live.writing = false
          return
        }
        live.unsaved = undefined
        const id = entry.record.id
        // Skipped once the socket ended: the offline status written then must stay the last word.
        yield* persist(id, Effect.suspend(() => (live.ended ? Effect.void : store.heartbeat(id, beat))))
      }
    })

  const handleText = Effect.fnUntraced(function*(entry: Entry, live: Live, raw: string) {
    const decoded = decodeFromAgent(raw)
    if (Result.isFailure(decoded)) {
      const e = decoded.failure
      yield* sendOn(live, "error", { code: e.reason, message: e.message, ...(e.frameId === undefined ? {} : { ref_id: e.frameId }) })
      return
    }
    const msg = decoded.success
    switch (msg.type) {
      case "hello":
        yield* sendOn(live, "error", { code: "UnexpectedType", message: "hello was already received on this connection", ref_id: msg.id })
        return
      case "heartbeat":
        yield* onHeartbeat(entry, live, msg.payload)
        break
      case "goodbye":
        yield* Effect.logInfo(`AgentHub: agent says goodbye: ${msg.payload.reason.slice(0, 200)}`)
        return
      case "pong":
        return
      case "error":
        yield* Effect.logWarning(`AgentHub: agent reported an error: ${msg.payload.code}: ${msg.payload.message.slice(0, 200)}`)
        return
    }
    if (live.approved && !live.ended) yield* publish({ _tag: "Message", agentId: entry.record.id, message: msg })
  })

  const handleBinary = Effect.fnUntraced(function*(entry: Entry, live: Live, frame: Uint8Array) {
    const decoded = decodeBinary(frame)
    if (Result.isFailure(decoded)) {
      yield* sendOn(live, "error", { code: decoded.failure.reason, message: decoded.failure.message })
      return
    }
    const f = decoded.success
    if (f.kind === "link_window") {
      yield* sendOn(live, "error", { code: "UnexpectedType", message: "link_window frames flow from the control plane to the agent only" })
      return
    }
    if (f.kind === "data") {
      // The bytes are off the socket (handed to the viewer's socket, or dropped): the link has room again.
      live.linkUnreturned += f.payload.length
      if (live.linkUnreturned >= linkCreditThreshold) {
        live.socket.sendControl(encodeLinkWindow(live.linkUnreturned))
        live.linkUnreturned = 0
      }
    }
    const sink = live.approved ? sinks.get(sinkKey(entry.record.id, f.tunnelId)) : undefined
    if (sink === undefined) {
      dropped++
      yield* Metric.update(droppedTunnelFrames, 1)
      return
    }
    yield* sink.onFrame(f)
  })

  type Reader = Socket.Reader<string | Uint8Array>

  /** Waits for a valid `hello`; anything else before it gets an `error` reply. */
  const awaitHello = (reader: Reader, socket: AgentSocket) =>
    Effect.gen(function*() {
      while (true) {
        for (const frame of yield* reader.pull) {
          const raw = typeof frame === "string" ? frame : undefined
          const decoded = raw === undefined ? undefined : decodeFromAgent(raw)
          if (decoded !== undefined && Result.isSuccess(decoded) && decoded.success.type === "hello") {
            return { hello: decoded.success.payload, id: decoded.success.id as string }
          }
          const error = decoded === undefined
            ? { code: "UnexpectedType" as const, message: "the first frame must be a hello text frame" }
            : Result.isFailure(decoded)
            ? { code: decoded.failure.reason, message: decoded.failure.message, ...(decoded.failure.frameId === undefined ? {} : { ref_id: decoded.failure.frameId }) }
            : { code: "UnexpectedType" as const, message: `expected hello first, got ${decoded.success.type}`, ref_id: decoded.success.id as string }
          socket.sendText(yield* message("error", error))
        }
      }
    })

  const watchdog = (entry: Entry, live: Live) =>
    Effect.gen(function*() {
      const limit = Duration.toMillis(heartbeatLimit)
      while (!live.ended) {
        const now = yield* Clock.currentTimeMillis
        const due = live.lastBeatMs + limit
        if (now < due) {
          yield* Effect.sleep(Duration.millis(due - now))
          continue
        }
        // A beat may have been read while we waited for the lock: judge again under it.
        const silent = yield* locked(Effect.gen(function*() {
          if ((yield* Clock.currentTimeMillis) < live.lastBeatMs + limit) return false
          yield* detach(entry, live, true)
          return true
        }))
        if (!silent) continue
        yield* Effect.logWarning(`AgentHub: no heartbeat for ${Duration.format(heartbeatLimit)}; agent is offline`)
        live.socket.close(CloseCode.heartbeatTimeout, "no heartbeat")
      }
    })

  const pinger = (socket: AgentSocket, onDead: Effect.Effect<void>) =>
    Effect.gen(function*() {
      while (socket.isOpen()) {
        yield* Effect.sleep(config.pingInterval)
        if (!socket.ping()) {
          yield* Effect.logWarning("AgentHub: no pong to the previous ping; dropping the link")
          yield* onDead
          socket.ws.terminate()
          return
        }
      }
    })

  /** Serves one upgraded socket until it closes. */
  const serve = (ws: WebSocket, credential: Credential) =>
    Effect.scoped(Effect.gen(function*() {
      const socket = makeAgentSocket(ws)
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.close(CloseCode.goingAway, "control plane shutting down")))
      const effectSocket = yield* Socket.fromWebSocket(Effect.succeed(ws as unknown as Socket.WebSocketLike))
      const reader = (yield* effectSocket.reader) as Reader
      let current: readonly [Entry, Live] | undefined
      yield* Effect.forkScoped(pinger(socket, Effect.suspend(() => current === undefined ? Effect.void : locked(detach(current[0], current[1], true)))))
      const first = yield* awaitHello(reader, socket).pipe(Effect.timeoutOption(HELLO_TIMEOUT))
      if (O.isNone(first)) {
        socket.close(CloseCode.helloTimeout, "no hello")
        return
      }
      const admitted = yield* admit(socket, credential, first.value.hello, first.value.id)
      if (O.isNone(admitted)) return
      const [entry, live] = admitted.value
      current = admitted.value
      yield* Effect.addFinalizer(() => locked(detach(entry, live, true)))
      yield* Effect.gen(function*() {
        yield* Effect.forkScoped(watchdog(entry, live))
        while (!live.ended) {
          for (const frame of yield* reader.pull) {
            if (live.ended) break
            if (typeof frame === "string") yield* handleText(entry, live, frame)
            else yield* handleBinary(entry, live, frame)
          }
        }
      }).pipe(Effect.annotateLogs({ agent_id: entry.record.id }))
    }).pipe(
      Effect.catchTag("SocketError", () => Effect.void),
      Effect.annotateLogs({ component: "AgentHub" })
    ))

  const route = (request: HttpServerRequest) =>
    Effect.gen(function*() {
      const incoming = request.source as IncomingMessage
      if (request.headers["upgrade"]?.toLowerCase() !== "websocket") {
        return errorBody(426, "upgrade_required", `${AGENT_CONNECT_PATH} only accepts WebSocket upgrades`)
      }
      const token = bearerToken(request.headers["authorization"])
      if (token === undefined) return errorBody(401, "unauthorized", "missing Authorization: Bearer <agent token>")
      const credential = authenticate(token, yield* Clock.currentTimeMillis)
      if (credential === undefined) {
        yield* Effect.logWarning(`AgentHub: refused a connection from ${incoming?.socket?.remoteAddress ?? "?"}: invalid agent token`)
        return errorBody(401, "unauthorized", "invalid agent token")
      }
      const offered = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((s) => s.trim())
      if (!offered.includes(AGENT_SUBPROTOCOL)) {
        return errorBody(400, "unsupported_subprotocol", `the WebSocket subprotocol must be ${AGENT_SUBPROTOCOL}`)
      }
      if (incoming === undefined || typeof incoming !== "object" || !("socket" in incoming)) {
        return errorBody(500, "internal", "agent connections need the Node HTTP server")
      }
      const ws = yield* Effect.option(upgrade(wss, incoming))
      if (O.isSome(ws)) {
        yield* serve(ws.value, credential)
        // Keep the HTTP layer from writing a response onto the finished WebSocket connection.
        incoming.socket.destroy()
      }
      return HttpServerResponse.empty()
    })

  yield* router.add("GET", AGENT_CONNECT_PATH, route)

  // On shutdown: close every agent socket now (they reconnect to the next instance), then record them offline,
  // several writes at a time (one by one, 500 agents kept the process from exiting for 15 s).
  yield* Effect.addFinalizer(() =>
    Effect.gen(function*() {
      const closed: Array<AgentId> = []
      for (const entry of agents.values()) {
        const live = entry.live
        if (live === undefined) continue
        live.ended = true
        entry.live = undefined
        live.socket.close(CloseCode.goingAway, "control plane shutting down")
        closed.push(entry.record.id)
      }
      yield* Effect.forEach(closed, (id) => persist(id, store.setStatus(id, "offline")), { concurrency: 16, discard: true })
    })
  )

  const lookup = (id: AgentId) =>
    Effect.suspend(() => {
      const entry = agents.get(id)
      return entry === undefined ? Effect.fail(new AgentHubError({ reason: "NotFound", message: `no agent ${id}` })) : Effect.succeed(entry)
    })

  const liveOf = (entry: Entry) =>
    entry.live === undefined
      ? Effect.fail(new AgentHubError({ reason: "NotConnected", message: `agent ${entry.record.id} is not connected` }))
      : Effect.succeed(entry.live)

  const send = Effect.fn("AgentHub.send")(function*<T extends ControlPlaneMessage["type"] & MessageType>(
    agentId: AgentId,
    type: T,
    payload: PayloadOf<T>
  ) {
    const live = yield* liveOf(yield* lookup(agentId))
    if (!live.approved) return yield* new AgentHubError({ reason: "NotApproved", message: `agent ${agentId} is not approved` })
    if (!(yield* sendOn(live, type, payload))) {
      return yield* new AgentHubError({ reason: "NotConnected", message: `agent ${agentId} is not connected` })
    }
  })

  const sendBinary = Effect.fnUntraced(function*(agentId: AgentId, frame: Uint8Array) {
    const live = yield* liveOf(yield* lookup(agentId))
    if (!live.approved) return yield* new AgentHubError({ reason: "NotApproved", message: `agent ${agentId} is not approved` })
    if (!(yield* live.socket.sendBinary(frame))) {
      return yield* new AgentHubError({ reason: "NotConnected", message: `agent ${agentId} is not connected` })
    }
  })

  const registerTunnel = Effect.fn("AgentHub.registerTunnel")(function*(agentId: AgentId, tunnelId: TunnelId, sink: TunnelSink) {
    const key = sinkKey(agentId, tunnelId)
    yield* Effect.acquireRelease(
      Effect.sync(() => sinks.set(key, sink)),
      () => Effect.sync(() => {
        if (sinks.get(key) === sink) sinks.delete(key)
      })
    )
  })

  const setDraining = Effect.fn("AgentHub.setDraining")(function*(id: AgentId, draining: boolean) {
    return yield* locked(Effect.gen(function*() {
      const entry = yield* lookup(id)
      yield* tracked(
        entry,
        Effect.gen(function*() {
          entry.record = { ...entry.record, draining }
          yield* persist(id, store.setDraining(id, draining))
        })
      )
      if (entry.live !== undefined) yield* sendOn(entry.live, "drain", { draining })
      return viewOf(entry)
    }))
  })

  // Credential changes must reach the store before they take effect: a restart would otherwise undo them.
  const storeFailed = (id: AgentId, cause: unknown) =>
    new AgentHubError({ reason: "Store", message: `could not record the change of agent ${id}: ${cause instanceof Error ? cause.message : String(cause)}` })

  const invalid = (entry: Entry, what: string) =>
    new AgentHubError({ reason: "InvalidTransition", message: `agent ${entry.record.id} is ${entry.record.enrollment}: cannot ${what}` })

  const approve = Effect.fn("AgentHub.approve")(function*(id: AgentId) {
    return yield* locked(Effect.gen(function*() {
      const entry = yield* lookup(id)
      if (entry.record.enrollment !== "pending") return yield* invalid(entry, "approve")
      const live = yield* liveOf(entry)
      const token = newCredential()
      const hash = hashToken(token)
      yield* store.approve(id, hash).pipe(Effect.mapError((e) => storeFailed(id, e)))
      entry.record = { ...entry.record, enrollment: "approved", credentialHash: hash, previousCredentialHash: undefined, previousCredentialExpiresAt: undefined }
      yield* sendOn(live, "credential", { token })
      // The socket was opened with the bootstrap token: make the agent prove it kept the credential.
      live.socket.close(CloseCode.credentialIssued, "credential issued: reconnect with it")
      yield* detach(entry, live, true)
      yield* Effect.logInfo("AgentHub: agent approved; credential issued").pipe(Effect.annotateLogs({ agent_id: id }))
      return viewOf(entry)
    }))
  })

  const reject = Effect.fn("AgentHub.reject")(function*(id: AgentId) {
    return yield* locked(Effect.gen(function*() {
      const entry = yield* lookup(id)
      if (entry.record.enrollment !== "pending") return yield* invalid(entry, "reject")
      yield* store.reject(id).pipe(Effect.mapError((e) => storeFailed(id, e)))
      entry.record = { ...entry.record, enrollment: "rejected", credentialHash: undefined, previousCredentialHash: undefined, previousCredentialExpiresAt: undefined }
      const live = entry.live
      if (live !== undefined) {
        yield* refuse(live.socket, CloseCode.forbidden, `agent ${id} was rejected by an administrator`, "Unauthorized")
        yield* detach(entry, live, true)
      }
      yield* Effect.logInfo("AgentHub: agent rejected").pipe(Effect.annotateLogs({ agent_id: id }))
      return viewOf(entry)
    }))
  })

  const rotate = Effect.fn("AgentHub.rotate")(function*(id: AgentId) {
    return yield* locked(Effect.gen(function*() {
      const entry = yield* lookup(id)
      if (entry.record.enrollment !== "approved") {
        return yield* new AgentHubError({ reason: "NotApproved", message: `agent ${id} is ${entry.record.enrollment}: only approved agents have a credential to rotate` })
      }
      const live = yield* liveOf(entry)
      const now = yield* Clock.currentTimeMillis
      const token = newCredential()
      const hash = hashToken(token)
      const validUntil = new Date(now + Duration.toMillis(config.credentialRotationGrace))
      yield* store.rotate(id, hash, validUntil).pipe(Effect.mapError((e) => storeFailed(id, e)))
      entry.record = { ...entry.record, credentialHash: hash, previousCredentialHash: entry.record.credentialHash, previousCredentialExpiresAt: validUntil }
      yield* sendOn(live, "credential", { token })
      yield* Effect.logInfo("AgentHub: credential rotated").pipe(Effect.annotateLogs({ agent_id: id }))
      return viewOf(entry)
    }))
  })

  const revoke = Effect.fn("AgentHub.revoke")(function*(id: AgentId) {
    return yield* locked(Effect.gen(function*() {
      const entry = yield* lookup(id)
      if (entry.record.enrollment === "revoked" || entry.record.enrollment === "rejected") return yield* invalid(entry, "revoke")
      yield* store.revoke(id).pipe(Effect.mapError((e) => storeFailed(id, e)))
      entry.record = { ...entry.record, enrollment: "revoked", credentialHash: undefined, previousCredentialHash: undefined, previousCredentialExpiresAt: undefined }
      const live = entry.live
      if (live !== undefined) {
        yield* refuse(live.socket, CloseCode.forbidden, `the credential of agent ${id} was revoked`, "Unauthorized")
        yield* detach(entry, live, true)
      }
      yield* Effect.logInfo("AgentHub: agent revoked").pipe(Effect.annotateLogs({ agent_id: id }))
      return viewOf(entry)
    }))
  })

  return AgentHub.of({
    list: Effect.sync(() => [...agents.values()].map(viewOf)),
    get: (id) => Effect.sync(() => O.map(O.fromUndefinedOr(agents.get(id)), viewOf)),
    send,
    sendBinary,
    registerTunnel,
    events: Stream.fromPubSub(events),
    setDraining,
    approve,
    reject,
    rotate,
    revoke,
    droppedFrames: Effect.sync(() => dropped)
  })
})

export class AgentHub extends Context.Service<AgentHub, AgentHubShape>()("control-plane/AgentHub") {
  /**
   * The hub on the Store; registers GET /api/v1/agent/connect on the HttpRouter. Needs ControlPlaneConfig,
   * Store and HttpRouter (build it inside HttpRouter.serve, or provide the same router the server serves).
   */
  static readonly layer = Layer.effect(AgentHub, Effect.gen(function*() {
    return yield* make(hubStoreFrom(yield* Store))
  }))
}
