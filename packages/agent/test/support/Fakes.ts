// In-memory stand-ins for the cluster-side services, honouring their contracts, with hooks that let a
// test hold an operation open (gates), inject failures and watch call order.
import type { BinaryFrame, Capacity, SessionId, SessionSpec, SessionStatus, TunnelId } from "@streamspace/protocol"
import { Deferred, Effect, Layer, Option, PubSub, Redacted, Stream } from "effect"
import { Connection } from "../../src/Connection.ts"
import type { ConnectionShape, Incoming } from "../../src/Connection.ts"
import { ConnectionError } from "../../src/Connection.ts"
import { CredentialStore } from "../../src/CredentialStore.ts"
import type { ClusterHealth } from "../../src/SessionStore.ts"
import { SessionStore, SessionStoreError } from "../../src/SessionStore.ts"
import type { TunnelCloseReason } from "../../src/TunnelPool.ts"
import { TunnelPool, TunnelPoolError } from "../../src/TunnelPool.ts"
import { Queue, SubscriptionRef } from "effect"

const ts = "2026-01-01T00:00:00.000Z"

export const status = (id: string, phase: SessionStatus["phase"] = "running"): SessionStatus => ({
  session_id: id as SessionId,
  phase,
  observed_at: ts
})

export interface FakeSessions {
  readonly sessions: Map<string, SessionStatus>
  /** "create:<id>" / "delete:<id>" in the order operations started. */
  readonly calls: Array<string>
  /** Operations currently running. */
  running: number
  maxRunning: number
  /** When set, an operation on this session id waits for the deferred first. */
  readonly gates: Map<string, Deferred.Deferred<void>>
  /** When set, the next operation on this id fails with this error. */
  readonly failures: Map<string, SessionStoreError>
  health: ClusterHealth
  capacity: Capacity
  readonly changes: PubSub.PubSub<SessionStatus>
}

export const makeFakeSessionStore = Effect.gen(function*() {
  const changes = yield* PubSub.unbounded<SessionStatus>()
  const state: FakeSessions = {
    sessions: new Map(),
    calls: [],
    running: 0,
    maxRunning: 0,
    gates: new Map(),
    failures: new Map(),
    health: { status: "ok" },
    capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 100 },
    changes
  }
  const op = <A>(name: string, id: string, body: Effect.Effect<A, SessionStoreError>) =>
    Effect.gen(function*() {
      state.calls.push(`${name}:${id}`)
      state.running++
      state.maxRunning = Math.max(state.maxRunning, state.running)
      const gate = state.gates.get(id)
      if (gate !== undefined) yield* Deferred.await(gate)
      const failure = state.failures.get(id)
      if (failure !== undefined) {
        state.failures.delete(id)
        return yield* failure
      }
      return yield* body
    }).pipe(Effect.ensuring(Effect.sync(() => {
      state.running--
    })))
  const store = SessionStore.of({
    create: (id: SessionId, spec: SessionSpec) =>
      op("create", id, Effect.sync(() => {
        const existing = state.sessions.get(id)
        if (existing !== undefined) return existing
        const s: SessionStatus = { session_id: id, phase: "creating", user_id: spec.user_id, template: spec.template, observed_at: ts }
        state.sessions.set(id, s)
        return s
      })),
    delete: (id: SessionId) =>
      op("delete", id, Effect.sync(() => {
        state.sessions.delete(id)
      })),
    hibernate: (id: SessionId) =>
      op("hibernate", id, Effect.sync(() => {
        state.sessions.delete(id)
        return Option.none<string>()
      })),
    resume: (id: SessionId, spec: SessionSpec) =>
      op("resume", id, Effect.sync(() => {
        const s: SessionStatus = { session_id: id, phase: "creating", user_id: spec.user_id, template: spec.template, observed_at: ts }
        state.sessions.set(id, s)
        return s
      })),
    get: (id) => Effect.sync(() => Option.fromUndefinedOr(state.sessions.get(id))),
    list: Effect.sync(() => [...state.sessions.values()]),
    listHomes: Effect.succeed([]),
    deleteHome: () => Effect.void,
    setWarmPools: () => Effect.void,
    activeCount: Effect.sync(() => [...state.sessions.values()].filter((s) => s.phase !== "terminated" && s.phase !== "failed").length),
    changes: Stream.fromPubSub(changes),
    restarts: Stream.never,
    capacity: Effect.sync(() => state.capacity),
    health: Effect.sync(() => state.health)
  })
  return { store, state, layer: Layer.succeed(SessionStore, store) }
})

export const storeError = (reason: SessionStoreError["reason"], message: string = reason) => new SessionStoreError({ reason, message })

export interface FakeTunnels {
  readonly open: Map<number, string>
  readonly closed: Array<{ readonly tunnelId: number; readonly reason: TunnelCloseReason }>
  readonly closedAll: Array<TunnelCloseReason>
  readonly received: Array<BinaryFrame>
  readonly failures: Map<number, TunnelPoolError>
}

export const makeFakeTunnelPool = Effect.sync(() => {
  const state: FakeTunnels = { open: new Map(), closed: [], closedAll: [], received: [], failures: new Map() }
  const pool = TunnelPool.of({
    open: (sessionId: SessionId, tunnelId: TunnelId, window?: number) =>
      Effect.gen(function*() {
        const f = state.failures.get(tunnelId)
        if (f !== undefined) return yield* f
        state.open.set(tunnelId, sessionId)
        return { window: window ?? 1024 * 1024 }
      }),
    close: (tunnelId, reason) =>
      Effect.sync(() => {
        if (state.open.delete(tunnelId)) state.closed.push({ tunnelId, reason })
      }),
    receive: (frame) => Effect.sync(() => void state.received.push(frame)),
    buffered: Effect.succeed({ total: 0, max: 0 }),
    active: Effect.sync(() => state.open.size),
    ids: Effect.sync(() => [...state.open.keys()] as Array<TunnelId>),
    closeAll: (reason) =>
      Effect.sync(() => {
        state.closedAll.push(reason)
        for (const id of state.open.keys()) state.closed.push({ tunnelId: id, reason })
        state.open.clear()
      })
  })
  return { pool, state, layer: Layer.succeed(TunnelPool, pool) }
})

export const tunnelError = (reason: TunnelPoolError["reason"], message: string = reason) => new TunnelPoolError({ reason, message })

/** An in-memory CredentialStore; `saved` shows what was stored. */
export const makeMemoryCredentialStore = (initial?: string) =>
  Effect.sync(() => {
    const state = { saved: initial as string | undefined, saves: 0 }
    const store = CredentialStore.of({
      load: Effect.sync(() => (state.saved === undefined ? Option.none() : Option.some(Redacted.make(state.saved)))),
      save: (token) =>
        Effect.sync(() => {
          state.saved = Redacted.value(token)
          state.saves++
        })
    })
    return { store, state, layer: Layer.succeed(CredentialStore, store) }
  })

/** A hello provider for Connection tests: the fake store's capacity and these sessions. */
export const fakeHello = (sessions: ReadonlyArray<SessionStatus> = []) =>
  Effect.succeed({ capacity: { cpu: "8000m", memory: "16Gi", max_sessions: 100 }, sessions })

/** A Connection that records what is sent, for testing the services above it without a socket. */
export const makeFakeConnection = Effect.gen(function*() {
  const statusRef = yield* SubscriptionRef.make(false)
  const incoming = yield* Queue.unbounded<Incoming>()
  const sent: Array<{ readonly type: string; readonly payload: any }> = []
  const sentQueue = yield* Queue.unbounded<{ readonly type: string; readonly payload: any }>()
  const binary: Array<Uint8Array> = []
  let connected = false
  const closes: Array<string> = []
  /** What the fake control plane announced as its heartbeat interval. */
  const announced: { interval: Option.Option<import("effect").Duration.Duration> } = { interval: Option.none() }
  const connection: ConnectionShape = {
    announcedHeartbeatInterval: Effect.sync(() => announced.interval),
    send: (type, payload) =>
      Effect.suspend(() => {
        if (!connected) return Effect.fail(new ConnectionError({ reason: "NotConnected", message: "not connected" }))
        const m = { type, payload }
        sent.push(m)
        return Queue.offer(sentQueue, m).pipe(Effect.asVoid)
      }),
    sendBinary: (frame) =>
      Effect.suspend(() => {
        if (!connected) return Effect.fail(new ConnectionError({ reason: "NotConnected", message: "not connected" }))
        binary.push(frame)
        return Effect.void
      }),
    incoming: Stream.fromQueue(incoming),
    // Frames a test pushes reach the tunnels through `incoming` and the Router (the fallback the real one keeps).
    routeTunnelFrames: () => Effect.void,
    status: SubscriptionRef.changes(statusRef),
    isConnected: Effect.sync(() => connected),
    close: (reason) =>
      Effect.sync(() => {
        closes.push(reason)
        connected = false
      })
  }
  const setConnected = (value: boolean) =>
    Effect.gen(function*() {
      connected = value
      yield* SubscriptionRef.set(statusRef, value)
    })
  /** The next sent message of this type (others are skipped but stay in `sent`). */
  const next = (type: string) =>
    Effect.gen(function*() {
      while (true) {
        const m = yield* Queue.take(sentQueue)
        if (m.type === type) return m
      }
    })
  return { connection, layer: Layer.succeed(Connection, connection), sent, binary, incoming, setConnected, next, closes, announced }
})
