// One benchmark helper process. bench/run.ts starts several of these (via rpc.ts), each in one role:
//   target   - the "VNC server": a TCP source that blasts bytes or echoes, chosen by a 16-byte header
//   kube     - kube-testserver (real HTTP, real port-forward) pointing every pod's port-forward at the target
//   viewer   - viewer clients over raw TCP, WebSocket (websockify, control plane) or a raw port-forward
//   fakecp   - a minimal protocol-speaking control plane for one real agent (the agent hop alone, footprint)
//   agents   - many simulated agents speaking the protocol to a real control plane (scale, storm, CP hop alone)
// Plain Node + ws: these are load generators, not the system under test.
// `as any` here: this load generator builds frames from plain numbers and untyped socket addresses on
// purpose, so it can send what a misbehaving peer would; the decoders on the other side do the checking.
import { createServer, connect, type Server, type Socket } from "node:net"
import { randomBytes } from "node:crypto"
import { WebSocket, WebSocketServer } from "ws"
import { start as startKube, type KubeTestServerHandle } from "../../packages/kube-testserver/src/index.ts"
import {
  AGENT_SUBPROTOCOL,
  creditThreshold,
  decodeBinary,
  decodeFromAgent,
  decodeFromControlPlane,
  encodeData,
  encodeText,
  encodeWindow,
  makeMessage,
  MAX_BINARY_PAYLOAD_BYTES,
  PROTOCOL_VERSIONS
} from "../../packages/protocol/src/index.ts"
import { followClose, followOpen, followReport } from "./follow.ts"
import { GREETING, HEADER, RFB_START, rfbHeader, updateRequests } from "./rfbHeader.ts"
import { serveRpc } from "./rpc.ts"

const now = () => performance.timeOrigin + performance.now()
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))
const header = (mode: "B" | "E", tag: string) => Buffer.from((mode + tag).padEnd(HEADER, " ").slice(0, HEADER))
let msgCounter = 0
const msgId = () => `m-${process.pid}-${++msgCounter}`
const text = (type: any, payload: any) => encodeText(makeMessage(type, payload, msgId(), new Date().toISOString()) as any)

// ================================================================================================
// target: first 16 bytes = mode ('B' blast | 'E' echo | 'F' paced frames) + tag. Counts bytes written per tag.
// ================================================================================================
let targetServer: Server | undefined
const written = new Map<string, number>()
const BLAST = randomBytes(256 * 1024)

const serveTarget = (sock: Socket) => {
  sock.setNoDelay(true)
  sock.write(GREETING)
  let head = Buffer.alloc(0)
  const onData = (d: Buffer) => {
    head = Buffer.concat([head, d])
    // A viewer's header comes after an RFB client start (rfbHeader); fakecp's is bare.
    const skip = head[0] === 0x52 ? RFB_START.length : 0
    if (head.length < skip + HEADER) return
    sock.off("data", onData)
    const mode = String.fromCharCode(head[skip]!)
    const tag = head.subarray(skip + 1, skip + HEADER).toString().trim()
    const rest = head.subarray(skip + HEADER)
    if (mode === "E") {
      if (rest.length > 0) sock.write(rest)
      sock.on("data", (x) => sock.write(x))
    } else if (mode === "F") {
      // Paced "frames" (8 KiB every 20 ms, 50 per second) for viewers that time pauses, not throughput.
      sock.on("data", () => {})
      const frame = BLAST.subarray(0, 8192)
      const timer = setInterval(() => {
        if (sock.destroyed) return clearInterval(timer)
        if (sock.writableLength < 1024 * 1024) sock.write(frame)
      }, 20)
      sock.once("close", () => clearInterval(timer))
    } else {
      sock.on("data", () => {})
      const pump = () => {
        while (!sock.destroyed) {
          written.set(tag, (written.get(tag) ?? 0) + BLAST.length)
          if (!sock.write(BLAST)) return void sock.once("drain", pump)
        }
      }
      pump()
    }
  }
  sock.on("data", onData)
  sock.on("error", () => {})
}

// ================================================================================================
// viewers: streams that count bytes, and echo probes.
// ================================================================================================
type ViewerSpec =
  | { kind: "tcp"; host: string; port: number }
  | { kind: "ws"; url: string; protocols?: Array<string>; headers?: Record<string, string> }
  | { kind: "pf"; url: string; token: string; ca?: string }

interface Conn {
  readonly send: (b: Buffer) => void
  readonly onData: (f: (b: Buffer) => void) => void
  readonly pause: () => void
  readonly resume: () => void
  readonly close: () => void
  readonly closed: Promise<string>
}

const openConn = (spec: ViewerSpec): Promise<Conn> =>
  new Promise((resolve, reject) => {
    if (spec.kind === "tcp") {
      const s = connect(spec.port, spec.host)
      s.setNoDelay(true)
      const closed = new Promise<string>((r) => s.once("close", () => r("closed")))
      s.once("error", reject)
      s.once("connect", () =>
        resolve({
          send: (b) => void s.write(b),
          onData: (f) => void s.on("data", f),
          pause: () => void s.pause(),
          resume: () => void s.resume(),
          close: () => s.destroy(),
          closed
        }))
      return
    }
    const pf = spec.kind === "pf"
    const ws = pf
      ? new WebSocket(spec.url, ["v4.channel.k8s.io"], { headers: { authorization: `Bearer ${spec.token}` }, perMessageDeflate: false, ...(spec.ca === undefined ? {} : { ca: spec.ca }) })
      : new WebSocket(spec.url, spec.protocols ?? ["binary"], { headers: spec.headers ?? {}, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 })
    ws.binaryType = "nodebuffer"
    const closed = new Promise<string>((r) => ws.once("close", (code, reason) => r(`${code} ${reason}`)))
    ws.once("unexpected-response", (_q, res) => {
      let body = ""
      res.on("data", (c: Buffer) => (body += c))
      res.on("end", () => reject(new Error(`HTTP ${res.statusCode}: ${body.slice(0, 300)}`)))
    })
    ws.once("error", reject)
    ws.once("open", () => {
      const listeners: Array<(b: Buffer) => void> = []
      // What arrives before the caller's first listener (the server may speak first, in the same read as the
      // upgrade's answer, before the promise's continuation runs) is held for it, not lost.
      let early: Array<Buffer> | undefined = []
      const deliver = (b: Buffer) => {
        if (early !== undefined) early.push(b)
        else for (const l of listeners) l(b)
      }
      // port-forward v4: byte 0 is the channel; the first frame of each channel is a 2-byte port preamble.
      const seen = new Set<number>()
      ws.on("message", (d: Buffer) => {
        if (pf) {
          const ch = d[0]!
          let body = d.subarray(1)
          if (!seen.has(ch)) {
            seen.add(ch)
            body = body.subarray(2)
          }
          if (ch !== 0 || body.length === 0) return
          deliver(body)
        } else deliver(d)
      })
      resolve({
        send: (b) => ws.send(pf ? Buffer.concat([Buffer.from([0]), b]) : b),
        onData: (f) => {
          listeners.push(f)
          const held = early
          early = undefined
          for (const b of held ?? []) f(b)
        },
        pause: () => ws.pause(),
        resume: () => ws.resume(),
        close: () => ws.terminate(),
        closed
      })
    })
  })

interface Stream {
  readonly conn: Conn
  bytes: number
  readonly tag: string
}
const streams = new Map<string, Array<Stream>>()
let streamGroup = 0

/** Opens n blasting streams; returns a group id. */
const openStreams = async (args: { spec: ViewerSpec; n: number; tagPrefix?: string }) => {
  const group = `g${++streamGroup}`
  const list: Array<Stream> = []
  await Promise.all(Array.from({ length: args.n }, async (_, i) => {
    const conn = await openConn(args.spec)
    // Tags must be unique across viewer processes: the target counts bytes written per tag (15 chars max).
    const s: Stream = { conn, bytes: 0, tag: `${args.tagPrefix ?? `${process.pid}${group}`}-${i}` }
    let greeted = false
    conn.onData((b) => {
      s.bytes += b.length
      if (!greeted) {
        greeted = true
        conn.send(rfbHeader("B", s.tag))
      }
    })
    list.push(s)
  }))
  streams.set(group, list)
  return { group, tags: list.map((s) => s.tag) }
}

/** Bytes/s per stream over `seconds` (after `warmupMs`). */
const measureStreams = async (args: { group: string; seconds: number; warmupMs?: number }) => {
  const list = streams.get(args.group) ?? []
  await sleep(args.warmupMs ?? 0)
  const start = list.map((s) => s.bytes)
  const t0 = now()
  await sleep(args.seconds * 1000)
  const dt = (now() - t0) / 1000
  return list.map((s, i) => ({ tag: s.tag, bytesPerSec: (s.bytes - start[i]!) / dt, total: s.bytes }))
}

const closeStreams = async (args: { group: string }) => {
  for (const s of streams.get(args.group) ?? []) s.conn.close()
  streams.delete(args.group)
}

const pauseStream = (args: { group: string; index: number; paused: boolean }) => {
  const s = streams.get(args.group)?.[args.index]
  if (s === undefined) throw new Error("no such stream")
  if (args.paused) s.conn.pause()
  else s.conn.resume()
  return { bytes: s.bytes, tag: s.tag }
}

/** Round trips of `size`-byte messages through an echo connection, one at a time. */
const echoLatency = async (args: { spec: ViewerSpec; count: number; size?: number; gapMs?: number; warmup?: number }) => {
  const conn = await openConn(args.spec)
  let greeting = 0
  let greeted: () => void = () => {}
  const hello = new Promise<void>((r) => (greeted = r))
  // RFB FramebufferUpdateRequests of 10 bytes (rfbHeader.ts): the default 32 bytes -> 3 messages, 30 bytes.
  const size = 10 * Math.max(1, Math.round((args.size ?? 32) / 10))
  let got = 0
  let wake: (() => void) | undefined
  conn.onData((d) => {
    let b = d
    if (greeting < GREETING.length) {
      const take = Math.min(GREETING.length - greeting, b.length)
      greeting += take
      b = b.subarray(take)
      if (greeting === GREETING.length) greeted()
    }
    got += b.length
    if (got >= size && wake !== undefined) {
      const w = wake
      wake = undefined
      w()
    }
  })
  const helloTimeout = setTimeout(() => conn.close(), 30_000)
  await Promise.race([hello, conn.closed])
  clearTimeout(helloTimeout)
  if (greeting < GREETING.length) throw new Error(`echo over ${args.spec.kind}: no greeting from the target within 30 s`)
  conn.send(rfbHeader("E", `echo-${process.pid}`))
  const rtts: Array<number> = []
  const total = args.count + (args.warmup ?? 20)
  for (let i = 0; i < total; i++) {
    got = 0
    const done = new Promise<void>((r) => (wake = r))
    const t0 = now()
    conn.send(updateRequests(size / 10))
    const timeout = sleep(30_000).then(() => "timeout")
    const r = await Promise.race([done.then(() => "ok"), timeout])
    if (r !== "ok") {
      conn.close()
      throw new Error(`echo ${i} over ${args.spec.kind} ${"url" in args.spec ? args.spec.url : args.spec.port} got no answer within 30 s (${got} of ${size} bytes back)`)
    }
    if (i >= (args.warmup ?? 20)) rtts.push(now() - t0)
    if (args.gapMs !== undefined) await sleep(args.gapMs)
  }
  conn.close()
  return rtts
}

// ================================================================================================
// fakecp: one real agent connects here; we drive it with commands and act as instant viewers.
// ================================================================================================
interface FakeTunnel {
  readonly id: number
  readonly sessionId: string
  bytes: number
  unreturned: number
  readonly threshold: number
  stalled: boolean
  /** Credit the agent granted us towards the session. */
  agentWindow: number
  /** Data frames received: bytes / frames is the agent's frame size. */
  frames: number
}
const fake = {
  wss: undefined as WebSocketServer | undefined,
  ws: undefined as WebSocket | undefined,
  connectedAt: 0,
  connects: 0,
  waiters: new Map<string, (m: any) => void>(),
  tunnels: new Map<number, FakeTunnel>(),
  statuses: new Map<string, string>(),
  nextTunnel: 1,
  window: 1024 * 1024
}

const fakeStart = async (args: { window?: number }) => {
  fake.window = args.window ?? fake.window
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", path: "/api/v1/agent/connect", maxPayload: 2 * 1024 * 1024, perMessageDeflate: false, handleProtocols: () => AGENT_SUBPROTOCOL })
  fake.wss = wss
  wss.on("connection", (ws) => {
    fake.ws = ws
    ws.binaryType = "nodebuffer"
    ws.on("message", (data: Buffer, isBinary) => {
      if (isBinary) {
        const f = decodeBinary(data)
        if (f._tag !== "Success" || f.success.kind === "link_window") return
        const t = fake.tunnels.get(f.success.tunnelId)
        if (t === undefined) return
        if (f.success.kind === "window") {
          t.agentWindow += f.success.credit
          return
        }
        t.bytes += f.success.payload.length
        t.frames++
        t.unreturned += f.success.payload.length
        if (!t.stalled && t.unreturned >= t.threshold) {
          ws.send(encodeWindow(t.id as any, t.unreturned))
          t.unreturned = 0
        }
        return
      }
      const m = decodeFromAgent(data.toString())
      if (m._tag !== "Success") return
      const msg: any = m.success
      switch (msg.type) {
        case "hello":
          fake.connects++
          fake.connectedAt = now()
          ws.send(text("welcome", { protocol_version: PROTOCOL_VERSIONS[0], enrollment: "approved", draining: false }))
          break
        case "command_completed":
        case "command_failed":
          fake.waiters.get(msg.payload.command_id)?.(msg)
          fake.waiters.delete(msg.payload.command_id)
          break
        case "session_status":
          fake.statuses.set(msg.payload.session_id, msg.payload.phase)
          break
      }
    })
  })
  await new Promise<void>((r) => wss.once("listening", () => r()))
  return { url: `ws://127.0.0.1:${(wss.address() as any).port}` }
}

let cmdCounter = 0
const fakeCommand = (action: string, args: unknown, timeoutMs = 60_000): Promise<any> => {
  const ws = fake.ws
  if (ws === undefined) return Promise.reject(new Error("no agent connected"))
  const id = `c-${process.pid}-${++cmdCounter}`
  const p = new Promise<any>((resolve, reject) => {
    const t = setTimeout(() => {
      fake.waiters.delete(id)
      reject(new Error(`${action} ${id} timed out`))
    }, timeoutMs)
    fake.waiters.set(id, (m) => (clearTimeout(t), resolve(m)))
  })
  ws.send(text("command", { command_id: id, deadline: new Date(Date.now() + timeoutMs).toISOString(), action, args }))
  return p
}

const spec = (user: string) => ({ user_id: user, template: "bench", image: "bench/desktop:1", persistent_home: false, vnc_port: 5900 })

const fakeCreateSessions = async (args: { ids: Array<string>; concurrency?: number }) => {
  const t0 = now()
  const queue = [...args.ids]
  const failures: Array<string> = []
  await Promise.all(Array.from({ length: args.concurrency ?? 10 }, async () => {
    while (queue.length > 0) {
      const id = queue.shift()!
      const r = await fakeCommand("create_session", { session_id: id, spec: spec("bench") })
      if (r.type !== "command_completed") failures.push(`${id}: ${JSON.stringify(r.payload.error)}`)
    }
  }))
  // Wait for every session to be running (the agent reports it via session_status or the result).
  const until = now() + 60_000
  while (now() < until && args.ids.some((id) => fake.statuses.get(id) !== "running")) await sleep(50)
  return { ms: now() - t0, failures, notRunning: args.ids.filter((id) => fake.statuses.get(id) !== "running").length }
}

const fakeOpenTunnels = async (args: { sessionIds: Array<string>; blast: boolean }) => {
  const ids: Array<number> = []
  await Promise.all(args.sessionIds.map(async (sessionId) => {
    const id = fake.nextTunnel++
    const t: FakeTunnel = { id, sessionId, bytes: 0, unreturned: 0, threshold: creditThreshold(fake.window), stalled: false, agentWindow: 0, frames: 0 }
    fake.tunnels.set(id, t)
    const r = await fakeCommand("vnc_connect", { session_id: sessionId, tunnel_id: id, window: fake.window })
    if (r.type !== "command_completed") throw new Error(`vnc_connect failed: ${JSON.stringify(r.payload.error)}`)
    t.agentWindow = r.payload.result.window
    if (args.blast) fake.ws!.send(encodeData(id as any, header("B", `fake-${id}`)))
    ids.push(id)
  }))
  return ids
}

const fakeMeasure = async (args: { ids: Array<number>; seconds: number; warmupMs?: number }) => {
  await sleep(args.warmupMs ?? 0)
  const start = args.ids.map((id) => ({ bytes: fake.tunnels.get(id)?.bytes ?? 0, frames: fake.tunnels.get(id)?.frames ?? 0 }))
  const t0 = now()
  await sleep(args.seconds * 1000)
  const dt = (now() - t0) / 1000
  return args.ids.map((id, i) => {
    const bytes = (fake.tunnels.get(id)?.bytes ?? 0) - start[i]!.bytes
    return { id, bytesPerSec: bytes / dt, bytesPerFrame: bytes / ((fake.tunnels.get(id)?.frames ?? 0) - start[i]!.frames) }
  })
}

const fakeCloseTunnels = async (args: { ids: Array<number> }) => {
  await Promise.all(args.ids.map(async (id) => {
    await fakeCommand("vnc_disconnect", { tunnel_id: id }).catch(() => undefined)
    fake.tunnels.delete(id)
  }))
}

// ================================================================================================
// agents: many simulated agents against a real control plane.
// ================================================================================================
interface SimAgent {
  readonly id: string
  token: string
  ws: WebSocket | undefined
  connected: boolean
  attempt: number
  connectedAt: number | undefined
  lostAt: number | undefined
  reconnectedAt: number | undefined
  dials: number
  /** When each dial since the last reset started (the herd check counts these). */
  dialTimes: Array<number>
  errors: Array<string>
  readonly sessions: Map<string, string>
  hbTimer: NodeJS.Timeout | undefined
  readonly tunnels: Map<number, { credit: number; window: number; blasting: boolean; closed: boolean }>
  stopped: boolean
  /** A credential arrived on this socket: the control plane closes it, and we redial at once with the credential. */
  redialNow: boolean
  /** Ceiling of the backoff delay before the latest dial (ms). */
  lastCeiling: number
}

const sim = {
  url: "",
  agents: [] as Array<SimAgent>,
  heartbeatMs: 5000,
  reconnectBaseMs: 5000,
  reconnectCapMs: 300_000,
  commandsSeen: new Map<string, number>(),
  /** When a create_session for a session id first arrived. */
  sessionsSeen: new Map<string, number>(),
  commandsByAction: new Map<string, number>(),
  credentials: new Map<string, string>(),
  errors: [] as Array<string>,
  blastChunk: randomBytes(MAX_BINARY_PAYLOAD_BYTES)
}

const capacity = { cpu: "64", memory: "256Gi", max_sessions: 1000 }

const simSend = (a: SimAgent, type: string, payload: unknown) => {
  if (a.ws !== undefined && a.ws.readyState === WebSocket.OPEN) a.ws.send(text(type, payload))
}

const simBlast = (a: SimAgent, tunnelId: number) => {
  const t = a.tunnels.get(tunnelId)
  const ws = a.ws
  if (t === undefined || ws === undefined || t.closed) return
  if (t.blasting) return
  t.blasting = true
  const pump = () => {
    t.blasting = false
    while (!t.closed && t.credit > 0 && ws.readyState === WebSocket.OPEN) {
      if (ws.bufferedAmount > 4 * 1024 * 1024) {
        t.blasting = true
        setTimeout(pump, 1)
        return
      }
      const n = Math.min(t.credit, MAX_BINARY_PAYLOAD_BYTES)
      ws.send(encodeData(tunnelId as any, n === sim.blastChunk.length ? sim.blastChunk : sim.blastChunk.subarray(0, n)))
      t.credit -= n
    }
  }
  pump()
}

const simHandleCommand = (a: SimAgent, cmd: any) => {
  const t = now()
  if (!sim.commandsSeen.has(cmd.command_id)) sim.commandsSeen.set(cmd.command_id, t)
  sim.commandsByAction.set(cmd.action, (sim.commandsByAction.get(cmd.action) ?? 0) + 1)
  simSend(a, "command_ack", { command_id: cmd.command_id })
  const observed = new Date().toISOString()
  switch (cmd.action) {
    case "create_session": {
      const sid = cmd.args.session_id
      if (!sim.sessionsSeen.has(sid)) sim.sessionsSeen.set(sid, t)
      a.sessions.set(sid, "running")
      const status = { session_id: sid, phase: "running", user_id: cmd.args.spec.user_id, template: cmd.args.spec.template, observed_at: observed }
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "create_session", session: status } })
      simSend(a, "session_status", status)
      break
    }
    case "delete_session": {
      a.sessions.delete(cmd.args.session_id)
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "delete_session", session_id: cmd.args.session_id } })
      break
    }
    case "list_sessions":
      simSend(a, "command_completed", {
        command_id: cmd.command_id,
        result: { action: "list_sessions", sessions: [...a.sessions.keys()].map((s) => ({ session_id: s, phase: "running", observed_at: observed })) }
      })
      break
    case "vnc_connect": {
      const window = cmd.args.window ?? 1024 * 1024
      a.tunnels.set(cmd.args.tunnel_id, { credit: window, window, blasting: false, closed: false })
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "vnc_connect", tunnel_id: cmd.args.tunnel_id, window: 1024 * 1024 } })
      // Like the TCP target, the "server" speaks first; the viewer sends its header once it has the greeting.
      if (a.ws !== undefined && a.ws.readyState === WebSocket.OPEN) {
        a.ws.send(encodeData(cmd.args.tunnel_id, GREETING))
        a.tunnels.get(cmd.args.tunnel_id)!.credit -= GREETING.length
      }
      break
    }
    // What every agent is asked on connect (issue 16): no homes, no warm pods here.
    case "list_homes":
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "list_homes", homes: [] } })
      break
    case "set_warm_pools":
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "set_warm_pools" } })
      break
    case "delete_home":
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "delete_home", name: cmd.args.name } })
      break
    case "vnc_disconnect": {
      const tn = a.tunnels.get(cmd.args.tunnel_id)
      if (tn !== undefined) tn.closed = true
      a.tunnels.delete(cmd.args.tunnel_id)
      simSend(a, "command_completed", { command_id: cmd.command_id, result: { action: "vnc_disconnect", tunnel_id: cmd.args.tunnel_id } })
      break
    }
  }
}

const simDial = (a: SimAgent) => {
  if (a.stopped) return
  a.dials++
  a.dialTimes.push(now())
  const ws = new WebSocket(`${sim.url}/api/v1/agent/connect`, [AGENT_SUBPROTOCOL], {
    headers: { authorization: `Bearer ${a.token}` },
    perMessageDeflate: false,
    maxPayload: 2 * 1024 * 1024,
    // As the agent (internal/linkSocket.ts): an all-zero masking key, so neither side masks tunnel bytes in JavaScript.
    generateMask: (mask: Buffer) => void mask.fill(0),
    // As the agent: the dial gives up after PING_INTERVAL + PING_TIMEOUT (30 s), the welcome PING_TIMEOUT (10 s) later.
    handshakeTimeout: 30_000
  })
  const welcomeTimer = setTimeout(() => {
    if (!welcomed) {
      a.errors.push("handshake or welcome timed out (40 s)")
      ws.terminate()
    }
  }, 40_000)
  ws.binaryType = "nodebuffer"
  a.ws = ws
  let welcomed = false
  ws.on("unexpected-response", (_q, res) => {
    a.errors.push(`HTTP ${res.statusCode}`)
    res.resume()
    ws.terminate()
  })
  ws.on("error", (e) => {
    if (!welcomed) a.errors.push((e as any).code ?? e.message)
  })
  ws.on("open", () => {
    ws.send(text("hello", {
      agent_id: a.id,
      platform: "kubernetes",
      region: "bench",
      version: "0.0.0-bench",
      protocol_versions: [...PROTOCOL_VERSIONS],
      capacity,
      sessions: [...a.sessions.keys()].map((s) => ({ session_id: s, phase: "running", observed_at: new Date().toISOString() }))
    }))
  })
  ws.on("message", (data: Buffer, isBinary) => {
    if (isBinary) {
      const f = decodeBinary(data)
      if (f._tag === "Success" && f.success.kind === "window") {
        const t = a.tunnels.get(f.success.tunnelId)
        if (t !== undefined) {
          t.credit = Math.min(t.window, t.credit + f.success.credit)
          simBlast(a, f.success.tunnelId)
        }
      } else if (f._tag === "Success" && f.success.kind === "data") {
        // Viewer bytes towards the session: return credit at once (an instant session).
        ws.send(encodeWindow(f.success.tunnelId, f.success.payload.length))
        // The first bytes of a tunnel ask for a blast (same header as the TCP target).
        const t = a.tunnels.get(f.success.tunnelId)
        const p = f.success.payload
        const mode = p[0] === 0x52 /* R: after the RFB start (rfbHeader.ts) */ ? p[RFB_START.length] : p[0]
        if (t !== undefined && mode === 66 /* B */) simBlast(a, f.success.tunnelId)
      }
      return
    }
    const m = decodeFromControlPlane(data.toString())
    if (m._tag !== "Success") {
      a.errors.push(`bad frame: ${m.failure.message}`)
      return
    }
    const msg: any = m.success
    switch (msg.type) {
      case "welcome":
        clearTimeout(welcomeTimer)
        if (msg.payload.enrollment === "approved") {
          welcomed = true
          a.connected = true
          a.attempt = 0
          const t = now()
          a.connectedAt = t
          if (a.lostAt !== undefined && a.reconnectedAt === undefined) a.reconnectedAt = t
          simSend(a, "heartbeat", { status: "online", capacity, active_sessions: a.sessions.size, active_tunnels: a.tunnels.size })
          a.hbTimer = setInterval(
            () => simSend(a, "heartbeat", { status: "online", capacity, active_sessions: a.sessions.size, active_tunnels: a.tunnels.size }),
            sim.heartbeatMs
          )
        }
        break
      case "credential":
        a.token = msg.payload.token
        a.redialNow = true
        sim.credentials.set(a.id, a.token)
        break
      case "command":
        simHandleCommand(a, msg.payload)
        break
      case "ping":
        simSend(a, "pong", { nonce: msg.payload.nonce })
        break
      case "error":
        a.errors.push(`error frame: ${msg.payload.code}`)
        break
    }
  })
  ws.on("close", () => {
    clearTimeout(welcomeTimer)
    if (a.hbTimer !== undefined) clearInterval(a.hbTimer)
    a.hbTimer = undefined
    for (const t of a.tunnels.values()) t.closed = true
    a.tunnels.clear()
    if (a.ws === ws) a.ws = undefined
    if (a.connected && a.lostAt === undefined) a.lostAt = now()
    a.connected = false
    if (a.stopped) return
    if (a.redialNow) {
      a.redialNow = false
      setImmediate(() => simDial(a))
      return
    }
    // The agent's backoff: full jitter, uniform in [0, min(cap, base * 2^attempt)].
    const ceiling = Math.min(sim.reconnectCapMs, sim.reconnectBaseMs * 2 ** Math.min(a.attempt, 30))
    a.attempt++
    a.lastCeiling = ceiling
    setTimeout(() => simDial(a), Math.floor(Math.random() * ceiling))
  })
}

const agentsStart = async (args: {
  url: string
  ids: Array<string>
  token: string
  credentials?: Record<string, string>
  heartbeatMs?: number
  reconnectBaseMs?: number
  /** Spread the first dials over this long. */
  rampMs?: number
}) => {
  sim.url = args.url
  sim.heartbeatMs = args.heartbeatMs ?? 5000
  sim.reconnectBaseMs = args.reconnectBaseMs ?? 5000
  const fresh: Array<SimAgent> = args.ids.map((id) => ({
    id,
    token: args.credentials?.[id] ?? args.token,
    ws: undefined,
    connected: false,
    attempt: 0,
    connectedAt: undefined,
    lostAt: undefined,
    reconnectedAt: undefined,
    dials: 0,
    dialTimes: [],
    errors: [],
    sessions: new Map(),
    hbTimer: undefined,
    tunnels: new Map(),
    stopped: false,
    redialNow: false,
    lastCeiling: 0
  }))
  sim.agents.push(...fresh)
  const ramp = args.rampMs ?? 0
  fresh.forEach((a, i) => setTimeout(() => simDial(a), ramp === 0 ? 0 : Math.floor((i * ramp) / fresh.length)))
  return { started: fresh.length }
}

const agentsStatus = () => {
  const connected = sim.agents.filter((a) => a.connected).length
  return {
    total: sim.agents.length,
    connected,
    credentials: sim.credentials.size,
    sessions: sim.agents.reduce((n, a) => n + a.sessions.size, 0),
    dials: sim.agents.reduce((n, a) => n + a.dials, 0),
    errors: sim.agents.reduce((n, a) => n + a.errors.length, 0)
  }
}

const agentsCommandTimes = (args: { ids: Array<string> }) => args.ids.map((id) => sim.commandsSeen.get(id) ?? null)
const agentsSessionTimes = (args: { ids: Array<string> }) => args.ids.map((id) => sim.sessionsSeen.get(id) ?? null)

/** Marks every agent as "about to lose its link" so the next reconnect is timed. */
const agentsResetReconnect = () => {
  for (const a of sim.agents) {
    a.lostAt = undefined
    a.reconnectedAt = undefined
    a.errors = []
    a.dials = 0
    a.dialTimes = []
  }
  return { ok: true }
}

const agentsReconnectReport = () =>
  sim.agents.map((a) => ({ id: a.id, lostAt: a.lostAt ?? null, reconnectedAt: a.reconnectedAt ?? null, dials: a.dials, dialTimes: a.dialTimes, errors: a.errors, lastCeiling: a.lastCeiling }))

const agentsStop = () => {
  for (const a of sim.agents) {
    a.stopped = true
    a.ws?.terminate()
  }
  return { ok: true }
}

// ================================================================================================

let kube: KubeTestServerHandle | undefined

serveRpc({
  ping: () => "pong",
  memory: () => process.memoryUsage(),
  "target.start": async () => {
    targetServer = createServer(serveTarget)
    await new Promise<void>((r) => targetServer!.listen(0, "127.0.0.1", () => r()))
    return { port: (targetServer.address() as any).port }
  },
  "target.written": (args: { tag: string }) => written.get(args.tag) ?? 0,
  "kube.start": async (args: { startDelayMs: number; target: { host: string; port: number } }) => {
    kube = await startKube({ kubelet: { startDelayMs: args.startDelayMs }, namespaces: ["default", "streamspace"] })
    kube.setDefaultPortForward(() => args.target)
    return { url: kube.url, port: kube.port, adminToken: kube.adminToken, kubeconfig: kube.kubeconfigFor(kube.adminToken, { namespace: "streamspace", user: "admin" }) }
  },
  "kube.createPod": (args: { name: string }) => {
    kube!.put("pods", {
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: args.name, namespace: "streamspace", labels: { app: "bench" } },
      spec: { nodeName: "node-1", containers: [{ name: "vnc", image: "bench/desktop:1", ports: [{ containerPort: 5900 }] }] },
      status: { phase: "Running", podIP: "10.0.0.9", conditions: [{ type: "Ready", status: "True" }] }
    })
    return { ok: true }
  },
  "kube.count": (args: { resource: string }) => kube!.list(args.resource, "streamspace").length,
  /** Warm pods of a template's pool that are running and not being deleted. */
  "kube.warmReady": (args: { template: string }) =>
    kube!.list("pods", "streamspace").filter((p: any) =>
      p.metadata?.labels?.["streamspace.io/warm-pool"] === args.template && p.metadata.deletionTimestamp === undefined && p.status?.phase === "Running"
    ).length,
  "viewer.open": openStreams,
  "viewer.measure": measureStreams,
  "viewer.close": closeStreams,
  "viewer.pause": pauseStream,
  "viewer.echo": echoLatency,
  "follow.open": followOpen,
  "follow.report": followReport,
  "follow.close": followClose,
  "fakecp.start": fakeStart,
  "fakecp.connected": () => ({ connected: fake.ws !== undefined && fake.ws.readyState === WebSocket.OPEN && fake.connects > 0, connects: fake.connects }),
  "fakecp.createSessions": fakeCreateSessions,
  "fakecp.deleteSessions": async (args: { ids: Array<string> }) => {
    await Promise.all(args.ids.map((id) => fakeCommand("delete_session", { session_id: id }).catch(() => undefined)))
    return { ok: true }
  },
  "fakecp.openTunnels": fakeOpenTunnels,
  "fakecp.measure": fakeMeasure,
  "fakecp.closeTunnels": fakeCloseTunnels,
  "fakecp.stall": (args: { id: number; stalled: boolean }) => {
    const t = fake.tunnels.get(args.id)
    if (t !== undefined) t.stalled = args.stalled
    return { bytes: t?.bytes ?? 0 }
  },
  "agents.start": agentsStart,
  "agents.status": agentsStatus,
  "agents.commandTimes": agentsCommandTimes,
  "agents.sessionTimes": agentsSessionTimes,
  "agents.credentials": () => Object.fromEntries(sim.credentials),
  "agents.resetReconnect": agentsResetReconnect,
  "agents.reconnectReport": agentsReconnectReport,
  "agents.stop": agentsStop
})
