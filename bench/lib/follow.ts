// Following viewers for the rolling-restart benchmark (worker.ts serves these): each one keeps a WebSocket to the
// control plane open as a viewer would, asking the target for paced frames ('F': 8 KiB every 20 ms) once it has greeted, and when the
// socket closes it reconnects (at once, then every 250 ms while refused). Every pause in the frames longer than
// GAP_MS is recorded with its wall-clock start and end, and why the socket closed, if it did.
import { WebSocket } from "ws"
import { rfbHeader } from "./rfbHeader.ts"

const GAP_MS = 100
const now = () => performance.timeOrigin + performance.now()

export interface Gap {
  readonly start: number
  readonly end: number
}

interface Follower {
  readonly tag: string
  readonly url: string
  readonly headers: Record<string, string>
  ws: WebSocket | undefined
  lastAt: number
  bytes: number
  readonly gaps: Array<Gap>
  readonly closes: Array<string>
  connects: number
  stopped: boolean
}

const groups = new Map<string, Array<Follower>>()
let nextGroup = 0

const connect = (f: Follower) => {
  if (f.stopped) return
  const ws = new WebSocket(f.url, ["binary"], { headers: f.headers, perMessageDeflate: false, maxPayload: 64 * 1024 * 1024 })
  f.ws = ws
  ws.binaryType = "nodebuffer"
  let opened = false
  ws.on("unexpected-response", (_q, res) => {
    f.closes.push(`HTTP ${res.statusCode}`)
    res.resume()
    ws.terminate()
  })
  ws.on("error", () => {})
  ws.on("open", () => {
    opened = true
    f.connects++
  })
  let greeted = false
  ws.on("message", (d: Buffer) => {
    if (!greeted) {
      // The target's RFB greeting: now the tunnel is open, ask for frames.
      greeted = true
      ws.send(rfbHeader("F", f.tag))
    }
    const t = now()
    if (t - f.lastAt > GAP_MS) f.gaps.push({ start: f.lastAt, end: t })
    f.lastAt = t
    f.bytes += d.length
  })
  ws.on("close", (code, reason) => {
    if (opened) f.closes.push(`${code} ${reason.toString().slice(0, 80)}`)
    if (f.stopped) return
    setTimeout(() => connect(f), opened ? 0 : 250)
  })
}

/** Opens one following viewer per url; returns the group id. */
export const followOpen = (args: { urls: Array<string>; headers: Record<string, string>; tagPrefix: string }) => {
  const group = `f${++nextGroup}`
  const list = args.urls.map((url, i): Follower => ({
    tag: `${args.tagPrefix}${i}`.slice(0, 15),
    url,
    headers: args.headers,
    ws: undefined,
    lastAt: now(),
    bytes: 0,
    gaps: [],
    closes: [],
    connects: 0,
    stopped: false
  }))
  for (const f of list) connect(f)
  groups.set(group, list)
  return { group }
}

/** Per viewer: its gaps (an ongoing one ends now), closes, connects, bytes and how long since the last frame. */
export const followReport = (args: { group: string }) => {
  const t = now()
  return (groups.get(args.group) ?? []).map((f) => ({
    tag: f.tag,
    gaps: t - f.lastAt > GAP_MS ? [...f.gaps, { start: f.lastAt, end: t }] : [...f.gaps],
    closes: [...f.closes],
    connects: f.connects,
    bytes: f.bytes,
    sinceLastMs: t - f.lastAt
  }))
}

export const followClose = (args: { group: string }) => {
  for (const f of groups.get(args.group) ?? []) {
    f.stopped = true
    f.ws?.terminate()
  }
  groups.delete(args.group)
  return { ok: true }
}
