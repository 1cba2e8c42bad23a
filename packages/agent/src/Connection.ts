// Connection: the one outbound WebSocket to the control plane. Dials (proxy, custom CA, wss required),
// runs the hello/welcome handshake and enrolment, exposes incoming frames and send, keeps the link alive
// with transport pings, and reconnects with capped exponential backoff and full jitter.
import type { AgentMessage, BinaryFrame, ControlPlaneMessage, MessageType, PayloadOf } from "@streamspace/protocol"
import type { Effect, Stream } from "effect"
import { Context, Schema } from "effect"

export class ConnectionError extends Schema.TaggedError<ConnectionError>()("ConnectionError", {
  reason: Schema.Literals(["NotConnected", "Closed", "Unauthorized", "Rejected", "Transport"]),
  message: Schema.String
}) {}

/** What arrives from the control plane after the handshake. */
export type Incoming = ControlPlaneMessage | BinaryFrame

export interface ConnectionShape {
  /** Sends one text message (id and ts are filled in). Fails with NotConnected while the link is down. */
  readonly send: <T extends AgentMessage["type"] & MessageType>(type: T, payload: PayloadOf<T>) => Effect.Effect<void, ConnectionError>
  /** Sends one binary frame; waits while the socket's send buffer is over its high-water mark. */
  readonly sendBinary: (frame: Uint8Array) => Effect.Effect<void, ConnectionError>
  /** Every frame received after `welcome`, in order, across reconnects. */
  readonly incoming: Stream.Stream<Incoming>
  /** Emits true on each successful handshake and false on each loss of the link. */
  readonly status: Stream.Stream<boolean>
  readonly isConnected: Effect.Effect<boolean>
  /** Sends `goodbye` and closes the socket with 1001; no reconnect afterwards. */
  readonly close: (reason: string) => Effect.Effect<void>
}

export class Connection extends Context.Service<Connection, ConnectionShape>()("agent/Connection") {}
