// A protocol-level fake agent for multi-replica tests: a real WebSocket to a URL (a balancer in front of the
// replicas) that says hello with its credential, heartbeats, and redials after any close (a killed replica,
// a replica that lost its lease), as the real agent does. It executes each command once: a duplicate (a
// redelivery) is answered with the first result, as the real agent's dedupe does. It records how many times
// each command arrived and how many times it was executed, and how often it connected.
import type { AgentId, Command, CommandResult, MessageType, PayloadOf, SessionStatus } from "@streamspace/protocol"
import { AGENT_SUBPROTOCOL, decodeFromControlPlane, encodeText, makeMessage } from "@streamspace/protocol"
import { Result } from "effect"
import { randomUUID } from "node:crypto"
import { WebSocket } from "ws"
import { helloPayload } from "./fakeAgent.ts"

export interface ClusterAgent {
  readonly id: AgentId
  /** Times each command id arrived (redeliveries included). */
  readonly received: Map<string, number>
  /** Command ids executed (once each), in order. */
  readonly executed: Array<Command>
  /** Welcomes received: one per successful connection. */
  readonly welcomes: () => number
  /** How each of its sockets was closed by the control plane (code and reason), in order. */
  readonly closes: Array<{ readonly code: number; readonly reason: string }>
  readonly connected: () => boolean
  /** The `drain` frames received (their `draining`), in order. */
  readonly drains: Array<boolean>
  /** Closes the socket and stops redialling. */
  readonly stop: () => void
}

const CAPACITY = { cpu: "1000", memory: "4000Gi", max_sessions: 100_000 }

const resultOf = (c: Command, sessions: Map<string, SessionStatus>): CommandResult => {
  const now = new Date().toISOString()
  switch (c.action) {
    case "create_session":
    case "resume_session": {
      const session: SessionStatus = { session_id: c.args.session_id, phase: "running", observed_at: now }
      sessions.set(session.session_id, session)
      return { action: c.action, session } as CommandResult
    }
    case "delete_session":
      sessions.delete(c.args.session_id)
      return { action: c.action } as CommandResult
    case "list_homes":
      return { action: "list_homes", homes: [] }
    default:
      return { action: c.action } as CommandResult
  }
}

export const startClusterAgent = (options: { readonly url: string; readonly id: string; readonly token: string }): ClusterAgent => {
  const id = options.id as AgentId
  const received = new Map<string, number>()
  const results = new Map<string, CommandResult>()
  const executed: Array<Command> = []
  /** What it runs: its hello's inventory on every connect, as the real agent's. */
  const sessions = new Map<string, SessionStatus>()
  let welcomes = 0
  const drains: Array<boolean> = []
  const closes: Array<{ readonly code: number; readonly reason: string }> = []
  let ws: WebSocket | undefined
  let open = false
  let stopped = false
  let beat: ReturnType<typeof setInterval> | undefined

  const send = <T extends MessageType>(socket: WebSocket, type: T, payload: PayloadOf<T>) => {
    if (socket.readyState === socket.OPEN) socket.send(encodeText(makeMessage(type, payload, randomUUID(), new Date().toISOString()) as never))
  }

  const dial = () => {
    if (stopped) return
    const socket = new WebSocket(`${options.url.replace(/^http/, "ws")}/api/v1/agent/connect`, [AGENT_SUBPROTOCOL], {
      headers: { authorization: `Bearer ${options.token}` }
    })
    ws = socket
    socket.on("open", () => send(socket, "hello", helloPayload(id, { capacity: CAPACITY, sessions: [...sessions.values()] })))
    socket.on("message", (data, isBinary) => {
      if (isBinary) return
      const decoded = decodeFromControlPlane(data.toString())
      if (Result.isFailure(decoded)) return
      const msg = decoded.success
      if (msg.type === "welcome") {
        welcomes++
        open = true
        clearInterval(beat)
        beat = setInterval(() => send(socket, "heartbeat", { status: "online", capacity: CAPACITY, active_sessions: 0, active_tunnels: 0 }), 300)
      } else if (msg.type === "drain") {
        drains.push(msg.payload.draining)
      } else if (msg.type === "command") {
        const c = msg.payload as Command
        received.set(c.command_id, (received.get(c.command_id) ?? 0) + 1)
        send(socket, "command_ack", { command_id: c.command_id })
        let result = results.get(c.command_id)
        if (result === undefined) {
          result = resultOf(c, sessions)
          results.set(c.command_id, result)
          executed.push(c)
        }
        send(socket, "command_completed", { command_id: c.command_id, result })
      }
    })
    socket.on("error", () => socket.terminate())
    socket.on("close", (code, reason) => {
      closes.push({ code, reason: reason.toString() })
      open = false
      clearInterval(beat)
      if (ws === socket) setTimeout(dial, 50 + Math.floor(Math.random() * 100))
    })
  }
  dial()
  return {
    id,
    received,
    executed,
    welcomes: () => welcomes,
    closes,
    drains,
    connected: () => open,
    stop: () => {
      stopped = true
      clearInterval(beat)
      ws?.terminate()
    }
  }
}
