// Control-plane replicas as separate OS processes (`node packages/control-plane/src/main.ts`, as an operator runs
// them) on one PostgreSQL database, for the high-availability system tests (issue 15): nothing is stubbed, the
// replicas find each other's agents through the replica registry (presence rows fenced by leases) and relay
// viewers over their replica-to-replica endpoint (PEER_URL defaults to http://127.0.0.1:PORT). A replica can be
// SIGKILLed, stopped with SIGTERM (it drains first) and started again on the same port.
// Also: a viewer that keeps streaming as the web viewer does (a new ticket and a new socket whenever its socket
// closes, on 4307 or 1006 alike), recording every gap between two frames, and an API client that retries once.
import { RfbClient } from "@streamspace/vnc-testserver"
import { Effect, type Scope } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createWebSocketStream, WebSocket } from "ws"
import * as S from "./stack.ts"

export interface ReplicaProcess {
  readonly index: number
  readonly port: number
  readonly url: string
  readonly wsUrl: string
  readonly admin: S.Client
  readonly running: () => boolean
  readonly output: () => string
  /** SIGKILL (abrupt) or SIGTERM (graceful: drain, then exit); resolves once the process has exited. */
  readonly kill: (signal?: NodeJS.Signals) => Effect.Effect<number | null>
  /** Starts the process again on the same port; resolves once it answers /api/v1/health. */
  readonly restart: Effect.Effect<void, Error, Scope.Scope>
}

/** What every replica runs with: shared database and cluster secret, short leases, no per-user limits. */
export const replicaEnv = (db: Record<string, string>): Record<string, string> => ({
  ...S.SYSTEM_ENV,
  ...db,
  REPLICA_LEASE: "4s",
  MAX_SESSIONS_PER_USER: "0",
  SESSION_CREATES_PER_MINUTE: "0",
  MAX_CONNECTIONS_PER_ADDRESS: "0"
})

/** `count` replica processes on `env` (which carries DATABASE_URL and CLUSTER_SECRET), started one after the other. */
export const startReplicaProcesses = (count: number, env: Record<string, string>) =>
  Effect.gen(function*() {
    const out: Array<ReplicaProcess> = []
    for (let index = 0; index < count; index++) {
      const port = yield* S.freePort
      let proc = yield* S.startControlPlaneProcess(port, env)
      let log = ""
      const url = `http://127.0.0.1:${port}`
      out.push({
        index,
        port,
        url,
        wsUrl: `ws://127.0.0.1:${port}`,
        admin: S.api(url, S.adminToken()),
        running: () => proc.child.exitCode === null && proc.child.signalCode === null,
        output: () => log + proc.output(),
        kill: (signal = "SIGKILL") => proc.kill(signal),
        restart: Effect.gen(function*() {
          log += proc.output()
          proc = yield* S.startControlPlaneProcess(port, env)
        })
      })
    }
    return out
  })

// ---------------------------------------------------------------------------------------------- API client

export interface RetryingClient {
  /** Calls that failed (network error or 5xx), then succeeded when retried once. */
  readonly retried: () => ReadonlyArray<string>
  /** Calls that failed again when retried: what a user would have seen fail. */
  readonly failed: () => ReadonlyArray<string>
  readonly call: (method: string, path: string, body?: unknown) => Promise<S.ApiResponse>
}

/** An API client that retries a failed call (network error or 5xx) once, as a browser or CLI user would. */
export const retryingClient = (base: () => string, token: string): RetryingClient => {
  const retried: Array<string> = []
  const failed: Array<string> = []
  const once = async (method: string, path: string, body?: unknown): Promise<S.ApiResponse | string> => {
    try {
      const res = await fetch(`${base()}/api/v1${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(10_000)
      })
      const text = await res.text()
      if (res.status >= 500) return `${res.status} ${text}`
      let parsed: unknown = undefined
      try {
        parsed = JSON.parse(text)
      } catch {
        // not JSON
      }
      return { status: res.status, body: parsed, text }
    } catch (e) {
      return e instanceof Error ? `${e.message}${e.cause instanceof Error ? ` (${e.cause.message})` : ""}` : String(e)
    }
  }
  return {
    retried: () => retried,
    failed: () => failed,
    call: async (method, path, body) => {
      const first = await once(method, path, body)
      if (typeof first !== "string") return first
      const second = await once(method, path, body)
      if (typeof second !== "string") {
        retried.push(`${method} ${path}: ${first}`)
        return second
      }
      failed.push(`${method} ${path}: ${first}; retried: ${second}`)
      return { status: 0, body: undefined, text: second }
    }
  }
}

// ---------------------------------------------------------------------------------------------- streaming viewer

export interface StreamingViewer {
  /** FramebufferUpdates received so far (all sockets). */
  readonly frames: () => number
  /** Sockets on which the RFB handshake completed. */
  readonly connects: () => number
  /** How each socket closed (code and reason), in order. */
  readonly closes: () => ReadonlyArray<{ readonly code: number; readonly reason: string }>
  /** Milliseconds without a frame across each reconnect: from the last frame on a socket to the first on the next. */
  readonly gaps: () => ReadonlyArray<number>
  /** Waits until `n` more frames arrived than when called (bounded). */
  readonly moreFrames: (n: number, timeout?: number) => Effect.Effect<void>
  readonly stop: () => void
}

/**
 * A viewer as the web UI runs one: a ticket from `POST /sessions/:id/vnc-ticket` through `base()`, the socket
 * through `wsBase()`, incremental update requests as noVNC sends them; when the socket closes (any code) it asks
 * for a new ticket and reconnects. Stopped when the scope closes.
 */
export const streamingViewer = (base: () => string, wsBase: () => string, sessionId: string, token: string) =>
  Effect.acquireRelease(
    Effect.sync((): StreamingViewer => {
      let stopped = false
      let frames = 0
      let connects = 0
      let lastFrameAt: number | undefined
      let current: { ws: WebSocket; client?: RfbClient } | undefined
      const closes: Array<{ code: number; reason: string }> = []
      const gaps: Array<number> = []
      const connectOnce = async () => {
        const res = await fetch(`${base()}/api/v1/sessions/${sessionId}/vnc-ticket`, {
          method: "POST",
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: "{}",
          signal: AbortSignal.timeout(5_000)
        })
        const body = (await res.json()) as { ticket?: string }
        if (res.status !== 201 || body.ticket === undefined) throw new Error(`vnc-ticket: ${res.status}`)
        const ws = new WebSocket(`${wsBase()}/api/v1/sessions/${sessionId}/vnc?ticket=${encodeURIComponent(body.ticket)}`, ["binary"])
        current = { ws }
        ws.on("close", (code, reason) => closes.push({ code, reason: reason.toString() }))
        ws.on("error", () => {})
        const client = await RfbClient.connect(createWebSocketStream(ws), { timeout: 10_000 })
        current.client = client
        connects++
        let first = true
        while (!stopped) {
          await client.update(!first)
          const now = Date.now()
          if (first && lastFrameAt !== undefined) gaps.push(now - lastFrameAt)
          first = false
          lastFrameAt = now
          frames++
        }
      }
      void (async () => {
        while (!stopped) {
          try {
            await connectOnce()
          } catch {
            current?.ws.terminate()
            // the next attempt follows at once, as the web viewer's first retry does; a refused ticket or an
            // unready replica answers quickly, so this polls the system rather than sleeping
            await new Promise((r) => setTimeout(r, 100))
          }
        }
      })()
      return {
        frames: () => frames,
        connects: () => connects,
        closes: () => closes,
        gaps: () => gaps,
        moreFrames: (n, timeout = 30_000) =>
          Effect.suspend(() => {
            const target = frames + n
            return Effect.orDie(Effect.asVoid(S.waitFor(`${n} more frames at the viewer`, Effect.sync(() => (frames >= target ? true : undefined)), { timeout, interval: 50 })))
          }),
        stop: () => {
          stopped = true
          current?.ws.terminate()
        }
      }
    }),
    (v) => Effect.sync(() => v.stop())
  )

/** Runs `effect`; when it fails, writes every replica's output to a file and says where (to read a failure). */
export const dumpOnFailure = <A, E, R>(replicas: () => ReadonlyArray<ReplicaProcess>, effect: Effect.Effect<A, E, R>) =>
  Effect.tapCause(effect, () =>
    Effect.sync(() => {
      const dir = mkdtempSync(join(tmpdir(), "streamspace-replica-logs-"))
      for (const r of replicas()) writeFileSync(join(dir, `replica-${r.index}.log`), r.output())
      console.log(`the replicas' output is in ${dir}`)
    }))
