// A small fake agent for hub and dispatcher tests: a `ws` client that speaks the protocol package's frames,
// buffers what it receives, and lets a test wait for a message, a binary frame or the close, event-driven
// (no sleeps), with a real-time bound so that a missing frame fails the test instead of hanging it.
import type { AgentId, AnyMessage, ControlPlaneMessage, MessageType, PayloadOf, SessionId } from "@streamspace/protocol"
import { AGENT_SUBPROTOCOL, decodeFromControlPlane, DEFAULT_WINDOW_BYTES, encodeText, makeMessage } from "@streamspace/protocol"
import { within } from "@streamspace/testbed"
import { Effect, Fiber, Result } from "effect"
import { randomUUID } from "node:crypto"
import { WebSocket } from "ws"

export class Refused extends Error {
  readonly _tag = "Refused"
  readonly status: number
  readonly body: string
  constructor(status: number, body: string) {
    super(`refused with ${status}: ${body}`)
    this.status = status
    this.body = body
  }
}

export interface Closed {
  readonly code: number
  readonly reason: string
}

export interface FakeAgent {
  readonly ws: WebSocket
  readonly send: <T extends MessageType>(type: T, payload: PayloadOf<T>, id?: string) => Effect.Effect<void>
  readonly sendRaw: (data: string | Uint8Array) => Effect.Effect<void>
  /** The next received message of this type (earlier messages of other types stay buffered). */
  readonly next: <T extends ControlPlaneMessage["type"]>(type: T, ms?: number) => Effect.Effect<AnyMessage<T>>
  /** Every text message received so far that no `next` took. */
  readonly pending: () => ReadonlyArray<ControlPlaneMessage>
  readonly nextBinary: (ms?: number) => Effect.Effect<Uint8Array>
  readonly closed: (ms?: number) => Effect.Effect<Closed>
  readonly isClosed: () => boolean
  readonly close: (code?: number) => Effect.Effect<void>
}

export interface ConnectOptions {
  readonly token?: string | undefined
  readonly protocol?: string | null
  readonly headers?: Record<string, string>
  /** Answer transport pings (default true); false plays a blackholed link. */
  readonly autoPong?: boolean
}

const isoNow = () => new Date().toISOString()

/** Opens a socket; fails with Refused when the server answers the upgrade with an HTTP status. Closed with the scope. */
export const connect = (url: string, options: ConnectOptions = {}) =>
  Effect.acquireRelease(
    Effect.callback<FakeAgent, Refused>((resume) => {
      const headers: Record<string, string> = { ...options.headers }
      if (options.token !== undefined) headers["authorization"] = `Bearer ${options.token}`
      const protocol = options.protocol === undefined ? AGENT_SUBPROTOCOL : options.protocol
      const ws = new WebSocket(url, protocol === null ? [] : [protocol], { headers, autoPong: options.autoPong ?? true })
      const texts: Array<ControlPlaneMessage> = []
      const binaries: Array<Uint8Array> = []
      let closed: Closed | undefined
      let wake: Array<() => void> = []
      const notify = () => {
        const w = wake
        wake = []
        for (const f of w) f()
      }
      /** The first value `poll` gives, checked again on every frame and the close: event-driven, bounded by `ms`. */
      const nextMatching = <A>(what: string, ms: number, poll: () => A | undefined) =>
        within(
          ms,
          what,
          Effect.callback<A>((res) => {
            const attempt = () => {
              const v = poll()
              if (v !== undefined) res(Effect.succeed(v))
              else wake.push(attempt)
            }
            attempt()
            return Effect.sync(() => {
              wake = wake.filter((f) => f !== attempt)
            })
          })
        )
      ws.on("message", (data, isBinary) => {
        if (isBinary) {
          binaries.push(new Uint8Array(data as Buffer))
        } else {
          const decoded = decodeFromControlPlane(String(data))
          if (Result.isFailure(decoded)) throw new Error(`fake agent got an undecodable frame: ${decoded.failure.message}`)
          texts.push(decoded.success as ControlPlaneMessage)
        }
        notify()
      })
      ws.on("close", (code, reason) => {
        closed = { code, reason: reason.toString() }
        notify()
      })
      ws.on("error", () => {})
      ws.on("unexpected-response", (_req, res) => {
        let body = ""
        res.on("data", (c: Buffer) => (body += c.toString()))
        res.on("end", () => resume(Effect.fail(new Refused(res.statusCode ?? 0, body))))
      })
      ws.on("open", () => {
        resume(Effect.succeed<FakeAgent>({
          ws,
          send: (type, payload, id) =>
            Effect.sync(() => ws.send(encodeText(makeMessage(type, payload, id ?? `m-${randomUUID()}`, isoNow()) as never))),
          sendRaw: (data) => Effect.sync(() => ws.send(data)),
          next: (type, ms = 5000) =>
            nextMatching(`a ${type} message`, ms, (): AnyMessage<typeof type> | undefined => {
              const i = texts.findIndex((m) => m.type === type)
              return i < 0 ? undefined : (texts.splice(i, 1)[0] as AnyMessage<typeof type>)
            }),
          pending: () => [...texts],
          nextBinary: (ms = 5000) => nextMatching("a binary frame", ms, () => binaries.shift()),
          closed: (ms = 5000) => nextMatching("the socket to close", ms, () => closed),
          isClosed: () => closed !== undefined,
          close: (code = 1000) =>
            Effect.gen(function*() {
              if (closed === undefined) ws.close(code)
              yield* nextMatching("the socket to close", 5000, () => closed)
            })
        }))
      })
      ws.on("close", () => resume(Effect.fail(new Refused(0, "closed before open"))))
      return Effect.sync(() => ws.terminate())
    }),
    (agent) => Effect.sync(() => agent.ws.terminate())
  )

export const helloPayload = (agentId: string, overrides: Partial<PayloadOf<"hello">> = {}): PayloadOf<"hello"> => ({
  agent_id: agentId as AgentId,
  platform: "kubernetes",
  region: "eu-west",
  version: "0.1.0",
  protocol_versions: ["v1"],
  capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 10 },
  sessions: [],
  ...overrides
})

export const heartbeatPayload = (overrides: Partial<PayloadOf<"heartbeat">> = {}): PayloadOf<"heartbeat"> => ({
  status: "online",
  capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 10 },
  active_sessions: 0,
  active_tunnels: 0,
  ...overrides
})

/** Connects and sends hello; returns the agent and its welcome. */
export const connectAndHello = (
  url: string,
  token: string,
  agentId: string,
  overrides: Partial<PayloadOf<"hello">> = {},
  options: ConnectOptions = {}
) =>
  Effect.gen(function*() {
    const agent = yield* connect(url, { ...options, token })
    yield* agent.send("hello", helloPayload(agentId, overrides))
    const welcome = yield* agent.next("welcome")
    return { agent, welcome: welcome.payload }
  })

// ---- a control plane under test ------------------------------------------------------------------

import { NodeHttpServer } from "@effect/platform-node"
import { Context, Layer, Logger, References, Stream } from "effect"
import { HttpRouter, HttpServer } from "effect/http"
import { TestClock } from "effect/testing"
import { createServer } from "node:http"
import { AgentHub, type AgentHubShape, type PresenceEvent, type TunnelSink } from "../../src/AgentHub.ts"
import { ControlPlaneConfig } from "../../src/ControlPlaneConfig.ts"
import { CommandDispatcher } from "../../src/CommandDispatcher.ts"
import { Store, type StoreError, type StoreShape } from "../../src/Store.ts"

export const BOOTSTRAP = "bootstrap-token-for-tests-0123456789"

/** Every presence event from now on, in order. */
export const collectEvents = (hub: AgentHubShape) =>
  Effect.gen(function*() {
    const seen: Array<PresenceEvent> = []
    yield* Effect.forkScoped(Stream.runForEach(hub.presence, (e) => Effect.sync(() => seen.push(e))), { startImmediately: true })
    yield* Effect.yieldNow
    return seen
  })

/** A logger layer that keeps every line (JSON, Debug and up) in `lines`. */
export const captureLogs = (lines: Array<string>) =>
  Layer.mergeAll(
    Logger.layer([Logger.make((options) => void lines.push(Logger.formatJson.log(options)))]),
    Layer.succeed(References.MinimumLogLevel, "Debug")
  )

const serveOnLoopback = <A, E>(app: Layer.Layer<A, E, ControlPlaneConfig | Store | HttpRouter.HttpRouter>, env: Record<string, string>, store: Layer.Layer<Store, StoreError>, logs?: Array<string>) =>
  Effect.gen(function*() {
    const layer = HttpRouter.serve(app, { disableLogger: true, disableListenLog: true }).pipe(
      Layer.provideMerge(NodeHttpServer.layer(() => createServer(), { port: 0, host: "127.0.0.1", disablePreemptiveShutdown: true })),
      Layer.provide(ControlPlaneConfig.layerFromRecord({ DEV_MODE: "true", AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP, PING_INTERVAL: "1h", ...env })),
      Layer.provideMerge(store),
      Layer.provide(logs === undefined ? Layer.empty : captureLogs(logs))
    )
    const ctx = yield* Layer.build(layer)
    const address = Context.get(ctx, HttpServer.HttpServer).address
    if (address._tag === "UnixPathAddress") throw new Error("expected a TCP address")
    return { ctx, url: `ws://127.0.0.1:${address.port}/api/v1/agent/connect` }
  })

/**
 * Starts AgentHub.layer on the Store in context, on 127.0.0.1:0, in the current scope; with `logs`, its log lines
 * land there; `wrap` can stand in for parts of the store (a slow write, say).
 */
export const startHub = (env: Record<string, string>, logs?: Array<string>, wrap: (store: StoreShape) => StoreShape = (s) => s) =>
  Effect.gen(function*() {
    const store = yield* Store
    const { ctx, url } = yield* serveOnLoopback(AgentHub.layer, env, Layer.succeed(Store, Store.of(wrap(store))), logs)
    return { hub: Context.get(ctx, AgentHub), url }
  })

/**
 * Starts AgentHub.layer and CommandDispatcher.layer on 127.0.0.1:0 in the current scope, on the Store in
 * context or on the given store layer (built and closed with the scope: a restart on the same database).
 */
export const startControlPlane = (env: Record<string, string>, storeLayer?: Layer.Layer<Store, StoreError>) =>
  Effect.gen(function*() {
    const store = storeLayer ?? Layer.succeed(Store, yield* Store)
    const app = CommandDispatcher.layer.pipe(Layer.provideMerge(AgentHub.layer))
    const { ctx, url } = yield* serveOnLoopback(app, env, store)
    return { hub: Context.get(ctx, AgentHub), dispatcher: Context.get(ctx, CommandDispatcher), store: Context.get(ctx, Store), url }
  })

/** The agent's row in the Store in context. */
export const agentRow = (agentId: string) => Effect.flatMap(Store.use(Effect.succeed), (store) => store.agents.get(agentId))

/** Enrols `agentId` (bootstrap, approve) and returns its credential; the bootstrap socket is closed by then. */
export const enrol = (cp: { readonly hub: AgentHubShape; readonly url: string }, agentId: string) =>
  Effect.gen(function*() {
    const { agent } = yield* connectAndHello(cp.url, BOOTSTRAP, agentId)
    yield* cp.hub.approve(agentId as AgentId)
    const credential = yield* agent.next("credential")
    const closed = yield* agent.closed()
    if (closed.code !== 4000) throw new Error(`expected close 4000 after approval, got ${closed.code}`)
    return credential.payload.token
  })

/** An enrolled agent connected with its credential. */
export const connectApproved = (cp: { readonly hub: AgentHubShape; readonly url: string }, agentId: string, options: ConnectOptions = {}) =>
  Effect.gen(function*() {
    const credential = yield* enrol(cp, agentId)
    const { agent, welcome } = yield* connectAndHello(cp.url, credential, agentId, {}, options)
    return { agent, credential, welcome }
  })


/** Runs a test body on the TestClock (for suites whose shared Store layer is built without test services). */
export const withTestClock = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, TestClock.layer())

/**
 * Opens a tunnel through the hub to a connected fake agent, playing the agent's side: it takes the
 * `vnc_connect` command and answers it with `window`. The tunnel belongs to the current scope.
 */
export const openTunnel = (hub: AgentHubShape, agent: FakeAgent, agentId: string, sink: TunnelSink, window = DEFAULT_WINDOW_BYTES) =>
  Effect.gen(function*() {
    const opening = yield* Effect.forkChild(hub.openTunnel(agentId as AgentId, { sessionId: "s-tunnel" as SessionId, window }, sink))
    const command = (yield* agent.next("command")).payload
    if (command.action !== "vnc_connect") return yield* Effect.die(new Error(`expected vnc_connect, got ${command.action}`))
    yield* agent.send("command_completed", { command_id: command.command_id, result: { action: "vnc_connect", tunnel_id: command.args.tunnel_id, window } })
    return yield* Fiber.join(opening)
  })
