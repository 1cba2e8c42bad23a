// Connection: the one outbound WebSocket to the control plane. Runs the hello/welcome handshake and
// enrolment over the link socket (internal/linkSocket.ts: dialing; internal/sendLanes.ts: the send side),
// exposes incoming frames and send, keeps the link alive with transport pings (internal/pinger.ts), and
// reconnects with capped exponential backoff and full jitter (internal/backoff.ts). What `hello` reports
// about the cluster side comes from a hello provider, so the link does not depend on the sessions.
import type { AgentMessage, BinaryFrame, ControlPlaneMessage, MessageType, PayloadOf, ProtocolErrorReason } from "@streamspace/protocol"
import {
  helloFingerprint,
  CloseCode,
  decodeBinary,
  decodeFromControlPlane,
  encodeText,
  makeMessage,
  MAX_SESSIONS_PER_MESSAGE,
  PROTOCOL_VERSIONS
} from "@streamspace/protocol"
import type { Stream as StreamT } from "effect"
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Queue, Random, Result, Stream, SubscriptionRef } from "effect"
import { randomUUID } from "node:crypto"
import { readFile } from "node:fs/promises"
import WebSocket from "ws"
import { AgentConfig } from "./AgentConfig.ts"
import type { AgentConfigShape } from "./AgentConfig.ts"
import { CredentialStore } from "./CredentialStore.ts"
import { makeStepper, reconnectSchedule } from "./internal/backoff.ts"
import { type Enrolment, makeEnrolment } from "./internal/enrolment.ts"
import { ConnectionError, describeClose, dialLink, type LinkEndpoint, type LinkSocket } from "./internal/linkSocket.ts"
import { keepAlive } from "./internal/pinger.ts"
import { proxyFor } from "./internal/proxy.ts"
import { agentVersion } from "./internal/version.ts"
import * as Metrics from "./Metrics.ts"

export { ConnectionError } from "./internal/linkSocket.ts"
export { EXPRESS_FRAME_BYTES, SEND_HIGH_WATER_MARK } from "./internal/sendLanes.ts"

/** What arrives from the control plane after the handshake. */
export type Incoming = ControlPlaneMessage | BinaryFrame

/** What `hello` says about the cluster side, read at every handshake (of `sessions`, the first MAX_SESSIONS_PER_MESSAGE are sent). */
export type HelloInventory = Pick<PayloadOf<"hello">, "capacity" | "sessions">

export interface ConnectionShape {
  /** Sends one text message (id and ts are filled in). Fails with NotConnected while the link is down. */
  readonly send: <T extends AgentMessage["type"] & MessageType>(type: T, payload: PayloadOf<T>) => Effect.Effect<void, ConnectionError>
  /**
   * Sends one binary frame. Frames wait in two FIFO lanes while the socket's send buffer is over its high-water
   * mark or the link window is spent: small frames (credit, keystrokes, pointer moves) before bulk ones. Each
   * tunnel has one frame waiting at a time, so a lane takes the tunnels in turn.
   */
  readonly sendBinary: (frame: Uint8Array) => Effect.Effect<void, ConnectionError>
  /** Every frame received after `welcome`, in order, across reconnects (tunnel frames only until they are routed). */
  readonly incoming: StreamT.Stream<Incoming>
  /**
   * From now on tunnel frames (data and credit) go to `handler` on the read loop as they are read, instead of
   * through `incoming`: the byte path takes no queue or stream stage. The handler must not block.
   */
  readonly routeTunnelFrames: (handler: (frame: BinaryFrame) => Effect.Effect<void>) => Effect.Effect<void>
  /** Emits true on each successful handshake and false on each loss of the link. */
  readonly status: StreamT.Stream<boolean>
  readonly isConnected: Effect.Effect<boolean>
  /**
   * The heartbeat interval the control plane announced in its last `welcome` (it declares an agent offline after
   * a few missed intervals of that length); none from older control planes.
   */
  readonly announcedHeartbeatInterval: Effect.Effect<Option.Option<Duration.Duration>>
  /** Sends `goodbye` and closes the socket with 1001; no reconnect afterwards. */
  readonly close: (reason: string) => Effect.Effect<void>
}

/** Path of the agent endpoint under CONTROL_PLANE_URL. */
export const CONNECT_PATH = "/api/v1/agent/connect"

/** How one link ended: lost (after `upFor` approved and running), or closed by us to dial with an issued credential. */
type Ended =
  | { readonly _tag: "Lost"; readonly reason: string; readonly code?: number; readonly upFor: Duration.Duration }
  | { readonly _tag: "Reauthenticate" }
  /** The control plane replica is stopping (`goaway`): redial at once, the balancer picks another replica. */
  | { readonly _tag: "GoAway"; readonly reason: string }

/** Everything the functions below share: fixed parts, and the state of the current link. */
interface Ctx {
  readonly config: AgentConfigShape
  readonly endpoint: LinkEndpoint
  readonly enrolment: Enrolment
  readonly hello: Effect.Effect<HelloInventory>
  readonly incoming: Queue.Queue<Incoming>
  tunnelFrames: ((frame: BinaryFrame) => Effect.Effect<void>) | undefined
  readonly status: SubscriptionRef.SubscriptionRef<boolean>
  readonly nextId: () => string
  /** The handshaken link (approved or pending); undefined while down. */
  link: LinkSocket | undefined
  approved: boolean
  closing: boolean
  announcedHeartbeat: Option.Option<Duration.Duration>
}

const wsUrl = (base: string): string => {
  const url = new URL(base)
  url.pathname = url.pathname.replace(/\/+$/, "") + CONNECT_PATH
  return url.toString()
}

const notConnected = new ConnectionError({ reason: "NotConnected", message: "not connected to the control plane" })

const isOpen = (l: LinkSocket | undefined): l is LinkSocket => l !== undefined && l.ws.readyState === WebSocket.OPEN

/** Encodes one message and writes it on `l`. */
const sendOn = Effect.fnUntraced(function*<T extends MessageType>(ctx: Ctx, l: LinkSocket, type: T, payload: PayloadOf<T>, id?: string) {
  const ts = new Date(yield* Clock.currentTimeMillis).toISOString()
  l.lanes.sendText(encodeText(makeMessage(type, payload, id ?? ctx.nextId(), ts) as AgentMessage))
})

/** Answers a frame that could not be used with an `error` naming the problem; the link stays up. */
const replyError = (ctx: Ctx, l: LinkSocket, e: { readonly reason: ProtocolErrorReason; readonly message: string; readonly frameId?: string | undefined }) =>
  sendOn(ctx, l, "error", { code: e.reason, message: e.message, ...(e.frameId !== undefined ? { ref_id: e.frameId } : {}) })

/** Waits for the first frame, which must be `welcome` (or an `error` refusing the hello). */
const awaitWelcome = (ctx: Ctx, l: LinkSocket) =>
  Effect.gen(function*() {
    while (true) {
      const next = yield* Queue.take(l.frames).pipe(Effect.option)
      if (Option.isNone(next)) {
        const c = yield* Deferred.await(l.closed)
        return yield* new ConnectionError({ reason: "Closed", message: `control plane closed the connection during the handshake: ${describeClose(c)}` })
      }
      const frame = next.value
      if (typeof frame !== "string") {
        yield* replyError(ctx, l, { reason: "UnexpectedType", message: "binary frame before welcome" })
        continue
      }
      const decoded = decodeFromControlPlane(frame)
      if (Result.isFailure(decoded)) {
        yield* replyError(ctx, l, decoded.failure)
        continue
      }
      const msg = decoded.success
      if (msg.type === "welcome") return msg.payload
      if (msg.type === "error") {
        return yield* new ConnectionError({
          reason: msg.payload.code === "AlreadyConnected" ? "AlreadyConnected" : "Rejected",
          message: `control plane refused the hello: ${msg.payload.code}: ${msg.payload.message}`
        })
      }
      yield* replyError(ctx, l, { reason: "UnexpectedType", message: `expected welcome, got ${msg.type}`, frameId: msg.id })
    }
  }).pipe(
    Effect.timeoutOrElse({
      duration: ctx.config.pingTimeout,
      orElse: () => Effect.fail(new ConnectionError({ reason: "Transport", message: `no welcome within ${Duration.format(ctx.config.pingTimeout)}` }))
    })
  )

/** Sends `hello`, waits for `welcome`, and checks the protocol version it chose. */
const handshake = Effect.fnUntraced(function*(ctx: Ctx, l: LinkSocket) {
  const { capacity, sessions } = yield* ctx.hello
  // A random id: its fingerprint (helloFingerprint) is what an administrator compares before approving.
  const helloId = randomUUID()
  yield* sendOn(ctx, l, "hello", {
    agent_id: ctx.config.agentId,
    platform: ctx.config.platform,
    region: ctx.config.region,
    version: agentVersion,
    protocol_versions: [...PROTOCOL_VERSIONS],
    capacity,
    sessions: sessions.slice(0, MAX_SESSIONS_PER_MESSAGE)
  }, helloId)
  const welcome = yield* awaitWelcome(ctx, l)
  if (!(PROTOCOL_VERSIONS as ReadonlyArray<string>).includes(welcome.protocol_version)) {
    l.ws.close(1002, "unsupported protocol version")
    return yield* new ConnectionError({ reason: "Rejected", message: `control plane chose protocol ${welcome.protocol_version}, which this agent does not speak` })
  }
  if (welcome.link_window !== undefined) l.lanes.setWindow(welcome.link_window)
  return { welcome, fingerprint: helloFingerprint(helloId) }
})

/**
 * A credential issued over the socket is kept for later dials. A pending agent was just approved: it
 * closes this link to come back with the credential (true). An approved one was rotated: the link stays.
 */
const onCredential = Effect.fnUntraced(function*(ctx: Ctx, l: LinkSocket, token: string) {
  yield* ctx.enrolment.accept(token)
  if (ctx.approved) return false
  yield* Effect.logInfo("enrolment approved: reconnecting with the issued credential")
  l.ws.close(CloseCode.normal, "re-authenticating")
  return true
})

/** Reads frames until the link closes, handing messages and tunnel frames to `incoming`; bad frames get an `error` reply. */
const readFrames = (ctx: Ctx, l: LinkSocket): Effect.Effect<"closed" | "reauthenticate" | { readonly goaway: string }> =>
  Effect.gen(function*() {
    while (true) {
      const next = yield* Queue.take(l.frames).pipe(Effect.option)
      if (Option.isNone(next)) return "closed" as const
      const frame = next.value
      if (typeof frame !== "string") {
        const decoded = decodeBinary(frame)
        if (Result.isFailure(decoded)) {
          yield* Effect.logWarning(`malformed binary frame from the control plane: ${decoded.failure.message}`)
          yield* replyError(ctx, l, { reason: decoded.failure.reason, message: decoded.failure.message })
        } else if (decoded.success.kind === "link_window") l.lanes.addCredit(decoded.success.credit)
        else if (ctx.tunnelFrames !== undefined) yield* ctx.tunnelFrames(decoded.success)
        else Queue.offerUnsafe(ctx.incoming, decoded.success)
        continue
      }
      const decoded = decodeFromControlPlane(frame)
      if (Result.isFailure(decoded)) {
        yield* Effect.logWarning(`malformed frame from the control plane: ${decoded.failure.message}`)
        yield* replyError(ctx, l, decoded.failure)
        continue
      }
      const msg = decoded.success
      if (msg.type === "credential") {
        if (yield* onCredential(ctx, l, msg.payload.token)) return "reauthenticate" as const
      } else if (msg.type === "goaway") {
        yield* Effect.logInfo(`the control plane asked this agent to reconnect elsewhere: ${msg.payload.reason}`)
        l.ws.close(CloseCode.normal, "goaway")
        return { goaway: msg.payload.reason }
      } else if (msg.type === "welcome") {
        yield* replyError(ctx, l, { reason: "UnexpectedType", message: "welcome after the handshake", frameId: msg.id })
      } else {
        Queue.offerUnsafe(ctx.incoming, msg)
      }
    }
  })

/** Marks the link up (approved) or down, for `status`, `isConnected` and the metric. */
const setConnected = (ctx: Ctx, up: boolean) =>
  Effect.gen(function*() {
    ctx.approved = up
    yield* Metric.update(Metrics.connected, up ? 1 : 0)
    yield* SubscriptionRef.set(ctx.status, up)
  })

/** Remembers the control plane's heartbeat interval; says so when HEARTBEAT_INTERVAL is longer and gives way. */
const noteHeartbeatBound = (ctx: Ctx, announcedMs: number | undefined) =>
  Effect.gen(function*() {
    const announced = announcedMs === undefined ? Option.none<Duration.Duration>() : Option.some(Duration.millis(announcedMs))
    const changed = !Option.makeEquivalence(Duration.Equivalence)(announced, ctx.announcedHeartbeat)
    ctx.announcedHeartbeat = announced
    if (changed && Option.isSome(announced) && Duration.isGreaterThan(ctx.config.heartbeatInterval, announced.value)) {
      yield* Effect.logWarning(
        `HEARTBEAT_INTERVAL=${Duration.format(ctx.config.heartbeatInterval)} is longer than the control plane expects ` +
          `(${Duration.format(announced.value)}): heartbeating every ${Duration.format(announced.value)} instead`
      )
    }
  })

/** One link: dial, handshake, serve until it ends. */
const runLink = (ctx: Ctx): Effect.Effect<Ended, ConnectionError> =>
  Effect.scoped(Effect.gen(function*() {
    const { config } = ctx
    const token = yield* ctx.enrolment.token
    if (Option.isNone(token)) yield* Effect.logWarning("no AGENT_TOKEN and no saved credential: connecting without authorization")
    const l = yield* dialLink(ctx.endpoint, token)
    const { welcome, fingerprint } = yield* handshake(ctx, l)
    ctx.link = l
    yield* noteHeartbeatBound(ctx, welcome.heartbeat_interval_ms)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        ctx.link = undefined
        if (ctx.approved) yield* setConnected(ctx, false)
      })
    )
    yield* Effect.forkScoped(keepAlive(l.ws, config.pingInterval, config.pingTimeout))
    let approvedAt: number | undefined
    if (welcome.enrollment === "pending") {
      yield* Effect.logWarning(
        `enrolment pending: waiting for an administrator to approve agent ${config.agentId}; connection fingerprint ${fingerprint} (the control plane shows it with the pending agent: approve only if they match)`
      )
    } else {
      approvedAt = yield* Clock.currentTimeMillis
      yield* Effect.logInfo(`connected to the control plane (protocol ${welcome.protocol_version}${welcome.draining ? ", draining" : ""})`)
      yield* setConnected(ctx, true)
    }
    const read = yield* readFrames(ctx, l)
    if (read === "reauthenticate") return { _tag: "Reauthenticate" } as const
    if (typeof read === "object") return { _tag: "GoAway", reason: read.goaway } as const
    const c = yield* Deferred.await(l.closed)
    const upFor = approvedAt === undefined ? Duration.zero : Duration.millis((yield* Clock.currentTimeMillis) - approvedAt)
    return { _tag: "Lost", reason: describeClose(c), code: c.code, upFor } as const
  }))

/** Logs why the last link ended (or never came up). */
const logEnd = (ctx: Ctx, exit: Exit.Exit<Ended, ConnectionError>) => {
  if (Exit.isSuccess(exit)) return Effect.logWarning(`lost the control plane connection: ${exit.value._tag === "Lost" ? exit.value.reason : "closed"}`)
  const error = Cause.findErrorOption(exit.cause)
  if (Option.isNone(error)) return Effect.logError(`connection failed unexpectedly: ${Cause.pretty(exit.cause)}`)
  if (error.value.reason === "Unauthorized") {
    return Effect.logError(`${error.value.message}: check AGENT_TOKEN, or approve or re-enrol agent ${ctx.config.agentId}; retrying`)
  }
  return Effect.logWarning(`could not connect to the control plane: ${error.value.message}`)
}

/** A short jittered delay, uniform in [0.5, 1.5] x RECONNECT_DELAY: a retry after 4001 or 4007 (see `supervise`). */
const soon = (base: Duration.Duration) => Effect.map(Random.next, (u) => Duration.millis(Math.round(Duration.toMillis(base) * (0.5 + u))))

/** Keeps a link up until `close`: reconnects after each loss, waiting as the backoff says. */
const supervise = (ctx: Ctx) =>
  Effect.gen(function*() {
    const { config } = ctx
    const schedule = reconnectSchedule({ base: config.reconnectDelay, cap: config.maxReconnectDelay, resetAfter: config.reconnectResetAfter })
    let backoff = yield* makeStepper(schedule)
    let first = true
    while (!ctx.closing) {
      if (!first) yield* Metric.update(Metrics.reconnects, 1)
      first = false
      const exit = yield* Effect.exit(runLink(ctx))
      if (ctx.closing) return
      if (Exit.isSuccess(exit) && exit.value._tag === "Reauthenticate") {
        backoff = yield* makeStepper(schedule)
        continue
      }
      // `goaway`, or a close with CloseCode.reconnect (its goaway lost or not understood): the replica is
      // stopping and the others are fine. Redial at once, with the backoff afresh.
      if (Exit.isSuccess(exit) && (exit.value._tag === "GoAway" || (exit.value._tag === "Lost" && exit.value.code === CloseCode.reconnect))) {
        yield* Effect.logInfo("reconnecting now: the control-plane replica is stopping")
        backoff = yield* makeStepper(schedule)
        continue
      }
      yield* logEnd(ctx, exit)
      const lost = Exit.isSuccess(exit) && exit.value._tag === "Lost" ? exit.value : undefined
      // Replaced by a newer connection with our id (the control plane saw this link miss a ping), or refused
      // because another connection with our id is alive: another process may run with this AGENT_ID. The
      // control plane never lets a newcomer displace a link that answers pings, so redialling cannot make two
      // processes take turns: come back soon (jittered), to take over as soon as the other one is gone.
      const replaced = lost?.code === CloseCode.replaced
      const refused = Exit.isFailure(exit) && Option.exists(Cause.findErrorOption(exit.cause), (e) => e.reason === "AlreadyConnected")
      if (replaced || refused) {
        yield* Effect.logError(
          `another connection with AGENT_ID ${config.agentId} ${replaced ? "replaced this one" : "is connected and alive"}: is a second agent running with the same id?`
        )
      }
      const delay = replaced || refused ? yield* soon(config.reconnectDelay) : yield* backoff(lost?.upFor ?? Duration.zero)
      yield* Effect.logInfo(`reconnecting in ${Duration.format(Duration.millis(Math.round(Duration.toMillis(delay))))}`)
      yield* Effect.sleep(delay)
    }
  }).pipe(Effect.annotateLogs({ component: "connection" }))

/** Sends `goodbye`, closes with 1001 (waiting up to PING_TIMEOUT for the close), and stops reconnecting. */
const closeLink = Effect.fnUntraced(function*(ctx: Ctx, reason: string) {
  const l = ctx.link
  if (!isOpen(l)) return
  yield* sendOn(ctx, l, "goodbye", { reason })
  l.ws.close(CloseCode.goingAway, reason.slice(0, 120))
  yield* Deferred.await(l.closed).pipe(Effect.timeoutOption(ctx.config.pingTimeout))
})

/** The Connection, given the hello provider. */
export const make = <R>(hello: Effect.Effect<HelloInventory, never, R>) =>
  Effect.gen(function*() {
    const config = yield* AgentConfig
    const credentials = yield* CredentialStore
    const helloContext = yield* Effect.context<R>()
    // An unreadable CA file stops the agent at start, like any other bad setting.
    const ca = config.controlPlaneCaFile === undefined ? undefined : yield* Effect.tryPromise({
      try: () => readFile(config.controlPlaneCaFile!),
      catch: (e) => new ConnectionError({ reason: "Transport", message: `CONTROL_PLANE_CA_FILE=${config.controlPlaneCaFile} cannot be read: ${(e as Error).message}` })
    })
    const url = wsUrl(config.controlPlaneUrl)
    const idPrefix = (yield* Random.nextIntBetween(0, 36 ** 6)).toString(36)
    let messageCounter = 0
    const ctx: Ctx = {
      config,
      // A blackholed link or a control plane still starting may never answer the upgrade.
      endpoint: { url, ca, proxy: proxyFor(new URL(url), config), timeout: Duration.sum(config.pingInterval, config.pingTimeout) },
      enrolment: makeEnrolment(config.agentToken, credentials),
      hello: Effect.provideContext(hello, helloContext),
      incoming: yield* Queue.unbounded<Incoming>(),
      tunnelFrames: undefined,
      status: yield* SubscriptionRef.make(false),
      nextId: () => `${config.agentId}-${idPrefix}-${(++messageCounter).toString(36)}`,
      link: undefined,
      approved: false,
      closing: false,
      announcedHeartbeat: Option.none()
    }

    const fiber = yield* Effect.forkScoped(supervise(ctx))

    const closeDone = yield* Deferred.make<void>()
    const close = Effect.fn("Connection.close")(function*(reason: string) {
      if (ctx.closing) return yield* Deferred.await(closeDone)
      ctx.closing = true
      yield* closeLink(ctx, reason)
      yield* Fiber.interrupt(fiber)
      yield* Effect.logInfo(`closed the control plane connection: ${reason}`)
      yield* Deferred.succeed(closeDone, undefined)
    })
    yield* Effect.addFinalizer(() => close("agent stopping"))

    return Connection.of({
      send: (type, payload) => Effect.suspend(() => (isOpen(ctx.link) ? sendOn(ctx, ctx.link, type, payload) : notConnected)),
      sendBinary: (frame) =>
        Effect.suspend(() =>
          isOpen(ctx.link)
            ? Effect.flatMap(ctx.link.lanes.sendBinary(frame), (sent) => (sent ? Effect.void : notConnected))
            : notConnected
        ),
      incoming: Stream.fromQueue(ctx.incoming),
      routeTunnelFrames: (handler) => Effect.sync(() => void (ctx.tunnelFrames = handler)),
      status: SubscriptionRef.changes(ctx.status),
      isConnected: Effect.sync(() => ctx.approved && ctx.link !== undefined),
      announcedHeartbeatInterval: Effect.sync(() => ctx.announcedHeartbeat),
      close
    })
  })

export class Connection extends Context.Service<Connection, ConnectionShape>()("agent/Connection") {
  /** Needs AgentConfig and CredentialStore, and whatever `hello` (capacity and the session inventory) reads. */
  static readonly layerWith = <R>(hello: Effect.Effect<HelloInventory, never, R>): Layer.Layer<Connection, ConnectionError, AgentConfig | CredentialStore | R> =>
    Layer.effect(Connection, make(hello))
}
