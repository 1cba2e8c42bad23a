// The RFB engine: a node:net server speaking RFB 3.3/3.7/3.8 to any number of viewers (Viewer.ts) of one
// shared synthetic desktop (Desktop.ts), redrawn every 1/frameRate s on the given Clock. Plain Node code
// (no Effect) where it runs per byte; VncTestServer wraps it in a scoped layer and `start` exposes it to
// scripts. Each viewer is an independent state machine: bad input from one closes that viewer only.
import { Clock, Duration, Effect, Schedule } from "effect"
import * as net from "node:net"
import { Desktop, type DesktopState } from "./Desktop.ts"
import { type LogFn, Viewer } from "./Viewer.ts"

export type { LogFn, LogLevel } from "./Viewer.ts"

export interface EngineOptions {
  readonly host: string
  readonly port: number
  readonly width: number
  readonly height: number
  readonly frameRate: number
  readonly name: string
  readonly password: string | undefined
  readonly bandwidthMode: boolean
  readonly log: LogFn
  /** The desktop's time and frame ticks; undefined: real time. */
  readonly clock: Clock.Clock | undefined
}

export interface ServerState extends DesktopState {
  /** Viewers past the handshake and currently connected. */
  readonly connections: number
  /** FramebufferUpdate messages sent, over all connections. */
  readonly updatesSent: number
}

export interface Engine {
  readonly host: string
  readonly port: number
  readonly state: () => ServerState
  readonly setServerCutText: (text: string) => void
  readonly close: () => Promise<void>
}

class EngineImpl {
  readonly options: EngineOptions
  desktop: Desktop
  readonly connections = new Set<Viewer>()
  readonly sockets = new Set<net.Socket>()
  updatesSent = 0

  constructor(options: EngineOptions) {
    this.options = options
    this.desktop = new Desktop(options.width, options.height, options.name)
  }

  now(): number {
    return this.options.clock?.currentTimeMillisUnsafe() ?? Date.now()
  }

  /** A new framebuffer of the new size with the same model (typed text, clicks, clipboard); every viewer is told. */
  resize(width: number, height: number, by: Viewer): void {
    const before = this.desktop
    this.desktop = before.resized(width, height)
    this.desktop.render(this.now())
    by.log("info", `desktop resized from ${before.width}x${before.height} to ${width}x${height}`)
    for (const c of this.connections) c.desktopResized(c === by)
  }

  /** Redraws the desktop; every viewer gets what changed. */
  tick(): void {
    const rects = this.desktop.render(this.now())
    if (rects.length === 0) return
    for (const c of this.connections) c.invalidate(rects)
  }

  /** Ticks every 1/frameRate s on the engine's clock until the returned function is called. */
  startTicking(): () => void {
    const { clock, frameRate } = this.options
    const period = Duration.millis(Math.max(1, Math.round(1000 / frameRate)))
    const ticks = Effect.sleep(period).pipe(Effect.andThen(Effect.repeat(Effect.sync(() => this.tick()), Schedule.fixed(period))))
    const fiber = Effect.runFork(clock === undefined ? ticks : Effect.provideService(ticks, Clock.Clock, clock))
    return () => fiber.interruptUnsafe()
  }
}

/** Starts listening; resolves once the port is bound. */
export const startEngine = (options: EngineOptions): Promise<Engine> => {
  const engine = new EngineImpl(options)
  engine.desktop.render(engine.now())
  let nextId = 1
  const server = net.createServer((socket) => {
    engine.sockets.add(socket)
    socket.on("close", () => engine.sockets.delete(socket))
    new Viewer(nextId++, socket, engine)
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.port, options.host, () => {
      server.off("error", reject)
      const stopTicking = engine.startTicking()
      const address = server.address() as net.AddressInfo
      resolve({
        host: options.host,
        port: address.port,
        state: () => ({ ...engine.desktop.state(), connections: engine.connections.size, updatesSent: engine.updatesSent }),
        setServerCutText: (text) => {
          for (const c of engine.connections) c.sendCutText(text)
        },
        close: () =>
          new Promise<void>((done) => {
            stopTicking()
            for (const s of engine.sockets) s.destroy()
            server.close(() => done())
          })
      })
    })
  })
}
