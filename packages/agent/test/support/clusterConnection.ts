// A fake Connection for the tunnel tests: records every text message and binary frame the agent sends,
// and plays the control plane's part of a tunnel: a "viewer" is a Duplex stream (so RfbClient can run over
// it) whose writes become data frames into TunnelPool.receive and whose reads come from the agent's data
// frames, returning credit as they are consumed (or never, for a slow viewer).
import type { AgentMessage, BinaryFrame, TunnelId } from "@streamspace/protocol"
import { creditThreshold, decodeBinary, MAX_BINARY_PAYLOAD_BYTES } from "@streamspace/protocol"
import { Effect, Layer, Option, Result, Stream } from "effect"
import { Duplex } from "node:stream"
import { Connection, ConnectionError } from "../../src/Connection.ts"
import type { TunnelPoolShape } from "../../src/TunnelPool.ts"

export interface SentText {
  readonly type: AgentMessage["type"]
  readonly payload: unknown
}

export interface TunnelStats {
  /** Data bytes the agent sent on this tunnel. */
  received: number
  /** Credit the fake control plane returned. */
  credited: number
  /** Largest (received - credited) seen: must never exceed the window granted. */
  maxInFlight: number
  /** Credit frames from the agent (for bytes towards the session). */
  creditFromAgent: number
}

export interface FakeLink {
  readonly texts: Array<SentText>
  readonly stats: Map<number, TunnelStats>
  /** Listeners for data frames per tunnel. */
  readonly onData: Map<number, (payload: Uint8Array) => void>
  /** Data that arrived before its tunnel had a listener (the VNC server speaks first). */
  readonly pending: Map<number, Array<Uint8Array>>
  connected: boolean
  readonly closedMessages: () => Array<{ tunnel_id: number; reason: string; message?: string }>
}

export const makeFakeLink = (): { readonly link: FakeLink; readonly layer: Layer.Layer<Connection> } => {
  const link: FakeLink = {
    texts: [],
    stats: new Map(),
    onData: new Map(),
    pending: new Map(),
    connected: true,
    closedMessages: () =>
      link.texts.filter((t) => t.type === "vnc_closed").map((t) => t.payload as { tunnel_id: number; reason: string; message?: string })
  }
  const statsOf = (id: number) => {
    let s = link.stats.get(id)
    if (s === undefined) {
      s = { received: 0, credited: 0, maxInFlight: 0, creditFromAgent: 0 }
      link.stats.set(id, s)
    }
    return s
  }
  const notConnected = new ConnectionError({ reason: "NotConnected", message: "fake link is down" })
  const layer = Layer.succeed(Connection, Connection.of({
    send: (type, payload) =>
      link.connected ? Effect.sync(() => void link.texts.push({ type, payload })) : Effect.fail(notConnected),
    sendBinary: (frame) =>
      Effect.suspend(() => {
        if (!link.connected) return Effect.fail(notConnected)
        const decoded = decodeBinary(frame)
        if (Result.isFailure(decoded)) return Effect.die(decoded.failure)
        const f = decoded.success
        // Link credit flows from the control plane to the agent only.
        if (f.kind === "link_window") return Effect.die(new Error("the agent sent a link_window frame"))
        const s = statsOf(f.tunnelId)
        if (f.kind === "window") s.creditFromAgent += f.credit
        else {
          s.received += f.payload.length
          s.maxInFlight = Math.max(s.maxInFlight, s.received - s.credited)
          const copy = Uint8Array.from(f.payload)
          const listener = link.onData.get(f.tunnelId)
          if (listener !== undefined) listener(copy)
          else link.pending.set(f.tunnelId, [...(link.pending.get(f.tunnelId) ?? []), copy])
        }
        return Effect.void
      }),
    incoming: Stream.never,
    // The test hands frames to TunnelPool.receive itself.
    routeTunnelFrames: () => Effect.void,
    status: Stream.make(true),
    isConnected: Effect.sync(() => link.connected),
    announcedHeartbeatInterval: Effect.succeed(Option.none()),
    close: () => Effect.void
  }))
  return { link, layer }
}

export interface ViewerOptions {
  /** The window granted to the agent (must match what was passed to open). */
  readonly window: number
  /** A slow viewer never returns credit. */
  readonly returnCredit?: boolean
}

/**
 * The control plane's end of one tunnel as a Duplex: bytes written go to the session, bytes read come from
 * it. Credit is returned as the consumer reads (Duplex pull), batched like the real proxy would.
 */
export const viewer = (
  pool: TunnelPoolShape,
  link: FakeLink,
  tunnelId: TunnelId,
  options: ViewerOptions,
  /** Runs effects in the test's runtime (its TestClock), e.g. Effect.runPromiseWith(yield* Effect.context()). */
  runPromise: (eff: Effect.Effect<void>) => Promise<void> = Effect.runPromise
): Duplex => {
  const run = (frame: BinaryFrame) => runPromise(pool.receive(frame))
  const threshold = creditThreshold(options.window)
  let owed = 0
  const stats = () => link.stats.get(tunnelId)
  const duplex = new Duplex({
    read() {
      if (options.returnCredit === false || owed === 0) return
      const credit = owed
      owed = 0
      const s = stats()
      if (s !== undefined) s.credited += credit
      void run({ kind: "window", tunnelId, credit })
    },
    write(chunk: Buffer, _enc, done) {
      const sends: Array<Promise<void>> = []
      for (let off = 0; off < chunk.length; off += MAX_BINARY_PAYLOAD_BYTES) {
        sends.push(run({ kind: "data", tunnelId, payload: chunk.subarray(off, off + MAX_BINARY_PAYLOAD_BYTES) }))
      }
      Promise.all(sends).then(() => done(), done)
    }
  })
  const onData = (payload: Uint8Array) => {
    owed += payload.length
    duplex.push(Buffer.from(payload))
    // Credit for what the consumer has already taken is returned from read(); top it up here too when
    // the consumer keeps up, so a steady stream does not wait for the buffer to drain.
    if (options.returnCredit !== false && owed >= threshold && duplex.readableLength < options.window / 2) {
      const credit = owed
      owed = 0
      const s = stats()
      if (s !== undefined) s.credited += credit
      void run({ kind: "window", tunnelId, credit })
    }
  }
  link.onData.set(tunnelId, onData)
  for (const early of link.pending.get(tunnelId) ?? []) onData(early)
  link.pending.delete(tunnelId)
  return duplex
}
