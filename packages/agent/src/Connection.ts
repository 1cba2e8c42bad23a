// Connection: the one outbound WebSocket to the control plane. Dials (proxy, custom CA, wss required),
// runs the hello/welcome handshake and enrolment, exposes incoming frames and send, keeps the link alive
// with transport pings, and reconnects with capped exponential backoff and full jitter.
import type { AgentMessage, BinaryFrame, ControlPlaneMessage, MessageType, PayloadOf } from "@streamspace/protocol"
import {
  AGENT_SUBPROTOCOL,
  CloseCode,
  creditedBytes,
  decodeBinary,
  decodeFromControlPlane,
  encodeText,
  makeMessage,
  MAX_BINARY_PAYLOAD_BYTES,
  MAX_FRAME_BYTES,
  MAX_SESSIONS_PER_MESSAGE,
  PROTOCOL_VERSIONS
} from "@streamspace/protocol"
import type { Stream as StreamT } from "effect"
import { Cause, Clock, Context, Deferred, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Queue, Random, Redacted, Result, Schema, Stream, SubscriptionRef } from "effect"
import { readFile } from "node:fs/promises"
import WebSocket from "ws"
import { AgentConfig } from "./AgentConfig.ts"
import { CredentialStore } from "./CredentialStore.ts"
import { makeBackoff } from "./internal/backoff.ts"
import { ConnectProxyAgent, proxyFor } from "./internal/proxy.ts"
import { agentVersion } from "./internal/version.ts"
import * as Metrics from "./Metrics.ts"
import { SessionStore } from "./SessionStore.ts"

export class ConnectionError extends Schema.TaggedError<ConnectionError>()("ConnectionError", {
  reason: Schema.Literals(["NotConnected", "Closed", "Unauthorized", "Rejected", "Transport"]),
  message: Schema.String
}) {}

/** What arrives from the control plane after the handshake. */
export type Incoming = ControlPlaneMessage | BinaryFrame

export interface ConnectionShape {
  /** Sends one text message (id and ts are filled in). Fails with NotConnected while the link is down. */
  readonly send: <T extends AgentMessage["type"] & MessageType>(type: T, payload: PayloadOf<T>) => Effect.Effect<void, ConnectionError>
  /**
   * Sends one binary frame. Frames wait in two FIFO lanes while the socket's send buffer is over its high-water
   * mark or the link window is spent: small frames (credit, keystrokes, pointer moves) before bulk ones. Each
   * tunnel has one frame waiting at a time, so a lane takes the tunnels in turn.
   */
  readonly sendBinary: (frame: Uint8Array) => Effect.Effect<void, ConnectionError>
  /** Every frame received after `welcome`, in order, across reconnects. */
  readonly incoming: StreamT.Stream<Incoming>
  /** Emits true on each successful handshake and false on each loss of the link. */
  readonly status: StreamT.Stream<boolean>
  readonly isConnected: Effect.Effect<boolean>
  /** Sends `goodbye` and closes the socket with 1001; no reconnect afterwards. */
  readonly close: (reason: string) => Effect.Effect<void>
}

/** Path of the agent endpoint under CONTROL_PLANE_URL. */
export const CONNECT_PATH = "/api/v1/agent/connect"

/**
 * sendBinary queues while more than this many bytes sit in the socket's send buffer: one maximal frame. Bytes
 * beyond it would only wait in a FIFO that a later small frame cannot overtake.
 */
export const SEND_HIGH_WATER_MARK = MAX_BINARY_PAYLOAD_BYTES

/** Binary frames up to this size take the express lane: credit frames and interactive bytes. */
export const EXPRESS_FRAME_BYTES = 4096

/** Close codes: 1000 normal (re-authenticating), 1001 going away (shutdown). */

interface CloseInfo {
  readonly code: number
  readonly reason: string
}

/** One WebSocket and what the read side has received from it. */
interface Link {
  readonly ws: WebSocket
  readonly frames: Queue.Queue<string | Uint8Array, Cause.Done>
  readonly closed: Deferred.Deferred<CloseInfo>
  /** Set on every pong or frame; cleared before each ping. */
  alive: boolean
  /** Tunnel data bytes the control plane will still take before it credits the link; undefined: no link window. */
  linkCredit: number | undefined
  linkWindow: number | undefined
  /** Binary frames waiting for the send buffer or link credit, small ones first. */
  readonly express: Array<Pending>
  readonly bulk: Array<Pending>
}

interface Pending {
  readonly frame: Uint8Array
  /** Bytes it spends of the link window. */
  readonly cost: number
  /** True once written, false when the link closed first. */
  readonly sent: Deferred.Deferred<boolean>
}

type Ended = { readonly _tag: "Lost"; readonly reason: string; readonly code?: number } | { readonly _tag: "Reauthenticate" }

const wsUrl = (base: string): string => {
  const url = new URL(base)
  url.pathname = url.pathname.replace(/\/+$/, "") + CONNECT_PATH
  return url.toString()
}

const describeClose = (c: CloseInfo) => `code ${c.code}${c.reason === "" ? "" : ` (${c.reason})`}`

export class Connection extends Context.Service<Connection, ConnectionShape>()("agent/Connection") {
  /** Needs AgentConfig, CredentialStore and SessionStore (for the hello inventory and capacity). */
  static readonly layer: Layer.Layer<Connection, ConnectionError, AgentConfig | CredentialStore | SessionStore> = Layer.effect(
    Connection,
    Effect.gen(function*() {
      const config = yield* AgentConfig
      const credentials = yield* CredentialStore
      const sessions = yield* SessionStore

      const incoming = yield* Queue.unbounded<Incoming>()
      const status = yield* SubscriptionRef.make(false)
      const backoff = yield* makeBackoff({ base: config.reconnectDelay, cap: config.maxReconnectDelay, resetAfter: config.reconnectResetAfter })
      const idPrefix = (yield* Random.nextIntBetween(0, 36 ** 6)).toString(36)
      let messageCounter = 0
      /** The handshaken link (approved or pending); undefined while down. */
      let link: Link | undefined
      let approved = false
      let closing = false
      /** A credential issued over the socket; used even if saving it failed. */
      let issued: Option.Option<Redacted.Redacted<string>> = Option.none()
      // An unreadable CA file stops the agent at start, like any other bad setting.
      const ca = config.controlPlaneCaFile === undefined ? undefined : yield* Effect.tryPromise({
        try: () => readFile(config.controlPlaneCaFile!),
        catch: (e) => new ConnectionError({ reason: "Transport", message: `CONTROL_PLANE_CA_FILE=${config.controlPlaneCaFile} cannot be read: ${(e as Error).message}` })
      })
      const url = wsUrl(config.controlPlaneUrl)
      const proxy = proxyFor(new URL(url), config)

      const rawSend = (l: Link, data: string | Uint8Array): void => {
        l.ws.send(data, (err) => {
          if (err === undefined || err === null) flush(l)
        })
      }
      const writeBinary = (l: Link, frame: Uint8Array, cost: number) => {
        if (l.linkCredit !== undefined) l.linkCredit -= cost
        rawSend(l, frame)
      }
      const fits = (l: Link, cost: number) =>
        l.ws.bufferedAmount <= SEND_HIGH_WATER_MARK && (l.linkCredit === undefined || cost <= l.linkCredit)
      /** Writes waiting frames while the send buffer and the link window have room: the express lane first. */
      const flush = (l: Link) => {
        while (l.ws.readyState === WebSocket.OPEN) {
          const lane = l.express.length > 0 ? l.express : l.bulk
          const next = lane[0]
          if (next === undefined || !fits(l, next.cost)) return
          lane.shift()
          writeBinary(l, next.frame, next.cost)
          Deferred.doneUnsafe(next.sent, Exit.succeed(true))
        }
      }
      const failPending = (l: Link) => {
        for (const p of l.express.splice(0)) Deferred.doneUnsafe(p.sent, Exit.succeed(false))
        for (const p of l.bulk.splice(0)) Deferred.doneUnsafe(p.sent, Exit.succeed(false))
      }
      const addLinkCredit = (l: Link, credit: number) => {
        if (l.linkCredit === undefined || l.linkWindow === undefined) return
        // Never more than the window announced: a confused control plane must not unbound our sends.
        l.linkCredit = Math.min(l.linkCredit + credit, l.linkWindow)
        flush(l)
      }

      const nextId = () => `${config.agentId}-${idPrefix}-${(++messageCounter).toString(36)}`
      const now = Clock.currentTimeMillis.pipe(Effect.map((ms) => new Date(ms).toISOString()))

      const sendOn = Effect.fnUntraced(function*<T extends MessageType>(l: Link, type: T, payload: PayloadOf<T>) {
        const text = encodeText(makeMessage(type, payload, nextId(), yield* now) as AgentMessage)
        rawSend(l, text)
      })

      const notConnected = new ConnectionError({ reason: "NotConnected", message: "not connected to the control plane" })

      const send = Effect.fnUntraced(function*<T extends AgentMessage["type"] & MessageType>(type: T, payload: PayloadOf<T>) {
        const l = link
        if (l === undefined || l.ws.readyState !== WebSocket.OPEN) return yield* notConnected
        yield* sendOn(l, type, payload)
      })

      const sendBinary = (frame: Uint8Array): Effect.Effect<void, ConnectionError> =>
        Effect.suspend(() => {
          const l = link
          if (l === undefined || l.ws.readyState !== WebSocket.OPEN) return notConnected
          const cost = creditedBytes(frame)
          const express = frame.length <= EXPRESS_FRAME_BYTES
          const lane = express ? l.express : l.bulk
          // Only overtake what waits in a slower lane: frames of one lane leave in order.
          if (lane.length === 0 && (express || l.express.length === 0) && fits(l, cost)) {
            writeBinary(l, frame, cost)
            return Effect.void
          }
          const pending: Pending = { frame, cost, sent: Deferred.makeUnsafe<boolean>() }
          lane.push(pending)
          return Deferred.await(pending.sent).pipe(
            Effect.onInterrupt(() =>
              Effect.sync(() => {
                const i = lane.indexOf(pending)
                if (i >= 0) lane.splice(i, 1)
              })
            ),
            Effect.flatMap((sent) => (sent ? Effect.void : notConnected))
          )
        })

      /** The token for the next dial: an issued credential, else the saved one, else AGENT_TOKEN. */
      const currentToken = Effect.gen(function*() {
        if (Option.isSome(issued)) return issued
        const saved = yield* credentials.load.pipe(
          Effect.catch((e) => Effect.logWarning(`could not read the saved agent credential, using AGENT_TOKEN: ${e.message}`).pipe(Effect.as(Option.none())))
        )
        return Option.isSome(saved) ? saved : config.agentToken
      })

      const dial = (token: Option.Option<Redacted.Redacted<string>>) =>
        Effect.acquireRelease(
          Effect.flatMap(Queue.unbounded<string | Uint8Array, Cause.Done>(), (frames) => Effect.callback<Link, ConnectionError>((resume) => {
            const headers: Record<string, string> = {}
            if (Option.isSome(token)) headers.authorization = `Bearer ${Redacted.value(token.value)}`
            const secure = url.startsWith("wss:")
            let ws: WebSocket
            try {
              ws = new WebSocket(url, [AGENT_SUBPROTOCOL], {
                headers,
                maxPayload: MAX_FRAME_BYTES,
                perMessageDeflate: false,
                followRedirects: false,
                // The acquire of acquireRelease cannot be interrupted, so an outer timeout would not stop a dial
                // whose upgrade is never answered (a blackholed link, a control plane still starting): ws bounds it.
                handshakeTimeout: Duration.toMillis(Duration.sum(config.pingInterval, config.pingTimeout)),
                // RFC 6455 masking protects intermediaries from scripts running in browsers; this client is
                // not a browser, and without the native bufferutil addon ws masks (and the control plane
                // unmasks) every tunnel byte in JavaScript. An all-zero key makes both a no-op.
                generateMask: (mask: Buffer) => void mask.fill(0),
                ...(ca !== undefined ? { ca } : {}),
                ...(proxy !== undefined ? { agent: new ConnectProxyAgent(proxy, secure, ca !== undefined ? { ca } : {}) } : {})
              })
            } catch (e) {
              resume(Effect.fail(new ConnectionError({ reason: "Transport", message: (e as Error).message })))
              return
            }
            ws.binaryType = "nodebuffer"
            const l: Link = {
              ws,
              frames,
              closed: Deferred.makeUnsafe<CloseInfo>(),
              alive: true,
              linkCredit: undefined,
              linkWindow: undefined,
              express: [],
              bulk: []
            }
            let opened = false
            ws.on("message", (data, isBinary) => {
              l.alive = true
              const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
              Queue.offerUnsafe(l.frames, isBinary ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength) : buf.toString("utf8"))
            })
            ws.on("pong", () => {
              l.alive = true
            })
            ws.on("close", (code, reason) => {
              Deferred.doneUnsafe(l.closed, Exit.succeed({ code, reason: reason.toString("utf8") }))
              Queue.endUnsafe(l.frames)
              failPending(l)
            })
            ws.once("open", () => {
              opened = true
              if (ws.protocol !== AGENT_SUBPROTOCOL) {
                ws.close(1002, "subprotocol not negotiated")
                resume(Effect.fail(new ConnectionError({ reason: "Rejected", message: `control plane did not accept subprotocol ${AGENT_SUBPROTOCOL}` })))
                return
              }
              resume(Effect.succeed(l))
            })
            ws.once("unexpected-response", (req, res) => {
              const code = res.statusCode ?? 0
              res.resume()
              req.destroy()
              resume(Effect.fail(
                code === 401 || code === 403
                  ? new ConnectionError({ reason: "Unauthorized", message: `control plane refused the agent credential (HTTP ${code})` })
                  : new ConnectionError({ reason: "Rejected", message: `control plane answered the upgrade with HTTP ${code}` })
              ))
            })
            ws.on("error", (e) => {
              if (!opened) resume(Effect.fail(new ConnectionError({ reason: "Transport", message: e.message })))
            })
            return Effect.sync(() => ws.terminate())
          })),
          (l) => Effect.sync(() => l.ws.terminate())
        )

      /** Keeps the link honest: a ping every PING_INTERVAL; no pong (or frame) within PING_TIMEOUT terminates it. */
      const pingLoop = (l: Link) =>
        Effect.gen(function*() {
          while (true) {
            yield* Effect.sleep(config.pingInterval)
            if (l.ws.readyState !== WebSocket.OPEN) return
            l.alive = false
            l.ws.ping()
            yield* Effect.sleep(config.pingTimeout)
            if (!l.alive) {
              yield* Effect.logWarning(`no pong from the control plane within ${Duration.format(config.pingTimeout)}: dropping the link`)
              l.ws.terminate()
              return
            }
          }
        })

      const handleCredential = Effect.fnUntraced(function*(l: Link, token: string) {
        const secret = Redacted.make(token, { label: "credential" })
        issued = Option.some(secret)
        yield* credentials.save(secret).pipe(
          Effect.tap(() => Effect.logInfo("saved the per-agent credential issued by the control plane")),
          Effect.catch((e) => Effect.logError(`could not save the issued credential (using it in memory until restart): ${e.message}`))
        )
        if (!approved) {
          yield* Effect.logInfo("enrolment approved: reconnecting with the issued credential")
          l.ws.close(CloseCode.normal, "re-authenticating")
          return true
        }
        return false
      })

      /** Reads frames until the link closes; malformed frames get an `error` reply. */
      const readLoop = (l: Link) =>
        Effect.gen(function*() {
          while (true) {
            const next = yield* Queue.take(l.frames).pipe(Effect.option)
            if (Option.isNone(next)) return { _tag: "Lost", reason: "closed" } as Ended
            const frame = next.value
            if (typeof frame === "string") {
              const decoded = decodeFromControlPlane(frame)
              if (Result.isFailure(decoded)) {
                const e = decoded.failure
                yield* Effect.logWarning(`malformed frame from the control plane: ${e.message}`)
                yield* sendOn(l, "error", { code: e.reason, message: e.message, ...(e.frameId !== undefined ? { ref_id: e.frameId } : {}) })
                continue
              }
              const msg = decoded.success
              if (msg.type === "credential") {
                if (yield* handleCredential(l, msg.payload.token)) return { _tag: "Reauthenticate" } as Ended
                continue
              }
              if (msg.type === "welcome") {
                yield* sendOn(l, "error", { code: "UnexpectedType", message: "welcome after the handshake", ref_id: msg.id })
                continue
              }
              Queue.offerUnsafe(incoming, msg)
            } else {
              const decoded = decodeBinary(frame)
              if (Result.isFailure(decoded)) {
                yield* Effect.logWarning(`malformed binary frame from the control plane: ${decoded.failure.message}`)
                yield* sendOn(l, "error", { code: decoded.failure.reason, message: decoded.failure.message })
                continue
              }
              if (decoded.success.kind === "link_window") addLinkCredit(l, decoded.success.credit)
              else Queue.offerUnsafe(incoming, decoded.success)
            }
          }
        })

      /** Waits for the first frame, which must be `welcome`. */
      const awaitWelcome = (l: Link) =>
        Effect.gen(function*() {
          while (true) {
            const next = yield* Queue.take(l.frames).pipe(Effect.option)
            if (Option.isNone(next)) {
              const c = yield* Deferred.await(l.closed)
              return yield* new ConnectionError({ reason: "Closed", message: `control plane closed the connection during the handshake: ${describeClose(c)}` })
            }
            const frame = next.value
            if (typeof frame !== "string") {
              yield* sendOn(l, "error", { code: "UnexpectedType", message: "binary frame before welcome" })
              continue
            }
            const decoded = decodeFromControlPlane(frame)
            if (Result.isFailure(decoded)) {
              const e = decoded.failure
              yield* sendOn(l, "error", { code: e.reason, message: e.message, ...(e.frameId !== undefined ? { ref_id: e.frameId } : {}) })
              continue
            }
            const msg = decoded.success
            if (msg.type === "welcome") return msg.payload
            if (msg.type === "error") {
              return yield* new ConnectionError({ reason: "Rejected", message: `control plane refused the hello: ${msg.payload.code}: ${msg.payload.message}` })
            }
            yield* sendOn(l, "error", { code: "UnexpectedType", message: `expected welcome, got ${msg.type}`, ref_id: msg.id })
          }
        }).pipe(
          Effect.timeoutOrElse({
            duration: config.pingTimeout,
            orElse: () => Effect.fail(new ConnectionError({ reason: "Transport", message: `no welcome within ${Duration.format(config.pingTimeout)}` }))
          })
        )

      /** One connection: dial, handshake, serve until the link ends. */
      const runConnection = Effect.scoped(Effect.gen(function*() {
        const token = yield* currentToken
        if (Option.isNone(token)) yield* Effect.logWarning("no AGENT_TOKEN and no saved credential: connecting without authorization")
        const l = yield* dial(token)
        const inventory = yield* sessions.list
        const capacity = yield* sessions.capacity
        yield* sendOn(l, "hello", {
          agent_id: config.agentId,
          platform: config.platform,
          region: config.region,
          version: agentVersion,
          protocol_versions: [...PROTOCOL_VERSIONS],
          capacity,
          sessions: inventory.slice(0, MAX_SESSIONS_PER_MESSAGE)
        })
        const welcome = yield* awaitWelcome(l)
        if (!(PROTOCOL_VERSIONS as ReadonlyArray<string>).includes(welcome.protocol_version)) {
          l.ws.close(1002, "unsupported protocol version")
          return yield* new ConnectionError({ reason: "Rejected", message: `control plane chose protocol ${welcome.protocol_version}, which this agent does not speak` })
        }
        if (welcome.link_window !== undefined) {
          l.linkWindow = welcome.link_window
          l.linkCredit = welcome.link_window
        }
        link = l
        yield* Effect.addFinalizer(() =>
          Effect.gen(function*() {
            link = undefined
            if (approved) {
              approved = false
              yield* Metric.update(Metrics.connected, 0)
              yield* SubscriptionRef.set(status, false)
            }
          })
        )
        yield* Effect.forkScoped(pingLoop(l))
        if (welcome.enrollment === "pending") {
          yield* Effect.logWarning(`enrolment pending: waiting for an administrator to approve agent ${config.agentId}`)
        } else {
          approved = true
          yield* backoff.connected
          yield* Metric.update(Metrics.connected, 1)
          yield* Effect.logInfo(`connected to the control plane (protocol ${welcome.protocol_version}${welcome.draining ? ", draining" : ""})`)
          yield* SubscriptionRef.set(status, true)
        }
        const ended = yield* readLoop(l)
        if (ended._tag === "Lost") {
          const c = yield* Deferred.await(l.closed)
          return { _tag: "Lost", reason: describeClose(c), code: c.code } as Ended
        }
        return ended
      }))

      const supervisor = Effect.gen(function*() {
        let first = true
        while (!closing) {
          if (!first) yield* Metric.update(Metrics.reconnects, 1)
          first = false
          const exit = yield* Effect.exit(runConnection)
          if (closing) return
          if (Exit.isSuccess(exit) && exit.value._tag === "Reauthenticate") {
            yield* backoff.reset
            continue
          }
          if (Exit.isSuccess(exit)) {
            yield* Effect.logWarning(`lost the control plane connection: ${exit.value._tag === "Lost" ? exit.value.reason : "closed"}`)
          } else {
            const error = Cause.findErrorOption(exit.cause)
            if (Option.isSome(error) && error.value.reason === "Unauthorized") {
              yield* Effect.logError(`${error.value.message}: check AGENT_TOKEN, or approve or re-enrol agent ${config.agentId}; retrying`)
            } else if (Option.isSome(error)) {
              yield* Effect.logWarning(`could not connect to the control plane: ${error.value.message}`)
            } else {
              yield* Effect.logError(`connection failed unexpectedly: ${Cause.pretty(exit.cause)}`)
            }
          }
          // Replaced by a newer connection with our id: another process probably runs with this AGENT_ID.
          // Redialling at once would make the two take turns; wait the longest delay instead.
          const replaced = Exit.isSuccess(exit) && exit.value._tag === "Lost" && exit.value.code === CloseCode.replaced
          if (replaced) {
            yield* Effect.logError(`another connection with AGENT_ID ${config.agentId} replaced this one: is a second agent running with the same id?`)
          }
          const delay = replaced ? config.maxReconnectDelay : yield* backoff.nextDelay
          yield* Effect.logInfo(`reconnecting in ${Duration.format(Duration.millis(Math.round(Duration.toMillis(delay))))}`)
          yield* Effect.sleep(delay)
        }
      }).pipe(Effect.annotateLogs({ component: "connection" }))

      const fiber = yield* Effect.forkScoped(supervisor)

      const closeDone = yield* Deferred.make<void>()
      const close = Effect.fn("Connection.close")(function*(reason: string) {
        if (closing) return yield* Deferred.await(closeDone)
        closing = true
        const l = link
        if (l !== undefined && l.ws.readyState === WebSocket.OPEN) {
          yield* sendOn(l, "goodbye", { reason })
          l.ws.close(CloseCode.goingAway, reason.slice(0, 120))
          yield* Deferred.await(l.closed).pipe(Effect.timeoutOption(config.pingTimeout))
        }
        yield* Fiber.interrupt(fiber)
        yield* Effect.logInfo(`closed the control plane connection: ${reason}`)
        yield* Deferred.succeed(closeDone, undefined)
      })
      yield* Effect.addFinalizer(() => close("agent stopping"))

      return Connection.of({
        send,
        sendBinary,
        incoming: Stream.fromQueue(incoming),
        status: SubscriptionRef.changes(status),
        isConnected: Effect.sync(() => approved && link !== undefined),
        close
      })
    })
  )
}
