// VncTestServer: a small RFB server drawing a synthetic desktop (session name, clock, typed keys,
// click marks) on 127.0.0.1, for tests, the demo and benchmarks. Owns the listening socket and every
// viewer connection; the layer closes them all when its scope ends.
import type { Clock } from "effect"
import { Context, Effect, Layer, Queue, Schema } from "effect"
import { type Engine, type EngineOptions, type LogFn, type ServerState, startEngine } from "./internal/RfbServer.ts"

export type { ServerState } from "./internal/RfbServer.ts"
export type { Click, DesktopState, KeyRecord } from "./internal/Desktop.ts"

export interface VncTestServerOptions {
  /** Interface to listen on; default 127.0.0.1. */
  readonly host?: string
  /** TCP port; default 0 (any free port). */
  readonly port?: number
  /** Framebuffer size; default 1024x768. */
  readonly width?: number
  readonly height?: number
  /** Desktop refreshes per second (clock, frame counter, typed text); default 10. */
  readonly frameRate?: number
  /** Desktop name sent in ServerInit and drawn in the title bar; default "StreamSpace test desktop". */
  readonly name?: string
  /** When set, viewers must pass VNC Authentication with it (only the first 8 bytes count). */
  readonly password?: string
  /** Answer every FramebufferUpdateRequest, incremental or not, with the whole requested area at once. */
  readonly bandwidthMode?: boolean
  /** The clock the desktop's time and frames follow; default real time. A test passes its TestClock to tick by hand. */
  readonly clock?: Clock.Clock
}

export interface StartOptions extends VncTestServerOptions {
  /** Receives one call per log line; default prints to stderr. */
  readonly log?: LogFn
}

export interface RunningVncTestServer {
  readonly host: string
  readonly port: number
  readonly state: () => ServerState
  readonly setServerCutText: (text: string) => void
  readonly close: () => Promise<void>
}

export class VncTestServerError extends Schema.TaggedError<VncTestServerError>()("VncTestServerError", {
  reason: Schema.Literals(["InvalidOptions", "ListenFailed"]),
  message: Schema.String
}) {}

const resolveOptions = (options: VncTestServerOptions, log: LogFn): EngineOptions | string => {
  const o: EngineOptions = {
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 0,
    width: options.width ?? 1024,
    height: options.height ?? 768,
    frameRate: options.frameRate ?? 10,
    name: options.name ?? "StreamSpace test desktop",
    password: options.password,
    bandwidthMode: options.bandwidthMode ?? false,
    log,
    clock: options.clock
  }
  const isInt = (n: number, lo: number, hi: number) => Number.isInteger(n) && n >= lo && n <= hi
  if (!isInt(o.width, 1, 65535) || !isInt(o.height, 1, 65535)) return `size ${o.width}x${o.height} must be 1..65535 in each direction`
  if (!isInt(o.port, 0, 65535)) return `port ${o.port} must be 0..65535`
  if (!(o.frameRate > 0 && o.frameRate <= 1000)) return `frame rate ${o.frameRate} must be in (0, 1000]`
  return o
}

const stderrLog: LogFn = (level, message, fields) => {
  const extra = Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(" ")
  process.stderr.write(`vnc-testserver ${level}: ${message}${extra === "" ? "" : ` ${extra}`}\n`)
}

const toRunning = (engine: Engine): RunningVncTestServer => ({
  host: engine.host,
  port: engine.port,
  state: engine.state,
  setServerCutText: engine.setServerCutText,
  close: engine.close
})

/** Starts a server outside Effect (CLI, bench, demo). Rejects on bad options or when the port is taken. */
export const start = async (options: StartOptions = {}): Promise<RunningVncTestServer> => {
  const resolved = resolveOptions(options, options.log ?? stderrLog)
  if (typeof resolved === "string") throw new Error(`vnc-testserver: ${resolved}`)
  return toRunning(await startEngine(resolved))
}

interface LogLine {
  readonly level: "info" | "warn"
  readonly message: string
  readonly fields: Readonly<Record<string, string | number>>
}

export class VncTestServer extends Context.Service<VncTestServer, {
  readonly host: string
  readonly port: number
  /** What the desktop has seen so far (typed text, clicks, pointer, cut text) plus connection counts. */
  readonly state: Effect.Effect<ServerState>
  /** Sends ServerCutText to every connected viewer. */
  readonly setServerCutText: (text: string) => Effect.Effect<void>
}>()("vnc-testserver/VncTestServer") {
  /** Listens while the layer's scope is open; engine log lines become Effect log lines. */
  static layer(options: VncTestServerOptions = {}): Layer.Layer<VncTestServer, VncTestServerError> {
    return Layer.effect(
      VncTestServer,
      Effect.gen(function*() {
        // the engine runs outside Effect; its log lines are queued and logged by a scoped fiber
        const logs = yield* Queue.unbounded<LogLine>()
        yield* Effect.forkScoped(Effect.forever(
          Queue.take(logs).pipe(Effect.flatMap((line) =>
            (line.level === "warn" ? Effect.logWarning(line.message) : Effect.logInfo(line.message)).pipe(
              Effect.annotateLogs({ component: "vnc-testserver", ...line.fields })
            )
          ))
        ))
        const resolved = resolveOptions(options, (level, message, fields) => {
          Queue.offerUnsafe(logs, { level, message, fields })
        })
        if (typeof resolved === "string") {
          return yield* new VncTestServerError({ reason: "InvalidOptions", message: resolved })
        }
        const engine = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: () => startEngine(resolved),
            catch: (cause) =>
              new VncTestServerError({ reason: "ListenFailed", message: `cannot listen on ${resolved.host}:${resolved.port}: ${String(cause)}` })
          }),
          (engine) => Effect.promise(() => engine.close())
        )
        yield* Effect.logInfo(`listening on ${engine.host}:${engine.port}`).pipe(Effect.annotateLogs({ component: "vnc-testserver" }))
        return VncTestServer.of({
          host: engine.host,
          port: engine.port,
          state: Effect.sync(engine.state),
          setServerCutText: Effect.fn("VncTestServer.setServerCutText")(function*(text: string) {
            engine.setServerCutText(text)
          })
        })
      })
    )
  }
}
