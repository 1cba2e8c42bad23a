// Plays a StreamSpace recording (GET /api/v1/sessions/:id/recordings/:rid) in the browser with the same noVNC
// decoder the viewer uses: noVNC's RFB is given a WebSocket-like channel (websock.js needs send, close,
// binaryType, protocol, readyState and the on* handlers) that replays the recorded server-to-client bytes at
// their recorded times and ignores whatever the client sends. The recording starts with the server's own
// handshake, so noVNC connects to it as to a server (a VNC password prompt is answered with a dummy: the
// recorded server's answer is what counts).
//
// Seeking: forward within what is already decoded feeds the bytes up to the target at once. Backward, or
// forward past a keyframe, starts a fresh decoder, feeds it the handshake and then the stream from the
// nearest keyframe at or before the target (a full-screen update the recorder found), then everything up to
// the target without waiting. A recording without keyframes (the server used an encoding the recorder could
// not follow, e.g. Tight or ZRLE, whose decoders keep state) is replayed from the start, fast-forwarded.
// `seekFrom` says which was done.

const MAGIC = "SSREC01\n"
const HEADER = 9

/** The records of a recording: server chunks with their stream offsets, input messages, and the duration. */
export function parseRecording(buffer) {
  const bytes = new Uint8Array(buffer)
  if (new TextDecoder().decode(bytes.subarray(0, MAGIC.length)) !== MAGIC) throw new Error("This file is not a StreamSpace recording.")
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const server = []
  const input = []
  let offset = 0
  let duration = 0
  for (let o = MAGIC.length; o + HEADER <= bytes.length;) {
    const track = view.getUint8(o)
    const t = view.getUint32(o + 1)
    const length = view.getUint32(o + 5)
    if (o + HEADER + length > bytes.length) break // cut short by a crash: play what is whole
    const payload = bytes.subarray(o + HEADER, o + HEADER + length)
    if (track === 0) {
      server.push({ t, offset, bytes: payload })
      offset += length
    } else if (track === 1) input.push({ t, bytes: payload })
    duration = Math.max(duration, t)
    o += HEADER + length
  }
  return { server, input, duration, serverBytes: offset }
}

/** What noVNC's Websock accepts as a channel: replayed bytes in, everything sent dropped. */
class ReplayChannel {
  constructor() {
    this.binaryType = "arraybuffer"
    this.protocol = "binary"
    this.readyState = "open"
    this.onopen = null
    this.onmessage = null
    this.onclose = null
    this.onerror = null
  }
  send() {}
  close() {
    if (this.readyState === "closed") return
    this.readyState = "closed"
    queueMicrotask(() => this.onclose?.({ code: 1000, reason: "", wasClean: true }))
  }
  push(bytes) {
    if (this.readyState !== "open" || bytes.length === 0) return
    this.onmessage?.({ data: bytes.slice().buffer })
  }
}

export class RecordingPlayer extends EventTarget {
  /**
   * @param target element the desktop is drawn in
   * @param recording parseRecording's result
   * @param meta the recording as the list API shows it (keyframes, handshake_bytes)
   * @param RFB noVNC's RFB class
   */
  constructor(target, recording, meta, RFB) {
    super()
    this.target = target
    this.rec = recording
    this.RFB = RFB
    this.keyframes = meta.handshake_bytes == null ? [] : (meta.keyframes ?? []).filter((k) => k.offset >= meta.handshake_bytes && k.offset <= recording.serverBytes)
    this.handshakeBytes = meta.handshake_bytes
    // The recording runs until its viewer left, which may be after its last bytes.
    this.duration = Math.max(recording.duration, meta.duration_ms ?? 0)
    this.position = 0
    this.playing = false
    this.seekFrom = "start"
    this.rfb = undefined
    this.next = 0 // index of the next server chunk to feed
    this.timer = undefined
    this.reset()
  }

  /** A fresh decoder in a fresh element; the old one is disconnected and removed. */
  reset() {
    if (this.rfb) {
      try { this.rfb.disconnect() } catch {}
    }
    this.holder?.remove()
    this.holder = document.createElement("div")
    this.holder.className = "player-holder"
    this.target.append(this.holder)
    this.channel = new ReplayChannel()
    const rfb = new this.RFB(this.holder, this.channel, { shared: true })
    rfb.viewOnly = true
    rfb.scaleViewport = true
    rfb.addEventListener("credentialsrequired", () => rfb.sendCredentials({ username: "", password: "recording", target: "" }))
    this.rfb = rfb
    this.next = 0
    this.fed = 0
  }

  /** Feeds the server stream's bytes [from, to) (chunks already fed are skipped by the caller). */
  feedRange(from, to) {
    for (const c of this.rec.server) {
      const end = c.offset + c.bytes.length
      if (end <= from || c.offset >= to) continue
      this.channel.push(c.bytes.subarray(Math.max(0, from - c.offset), Math.min(c.bytes.length, to - c.offset)))
    }
    this.fed = to
  }

  /** Feeds every chunk recorded at or before `t`. */
  feedUntil(t) {
    const chunks = this.rec.server
    while (this.next < chunks.length && chunks[this.next].t <= t) {
      const c = chunks[this.next++]
      const skip = Math.max(0, this.fed - c.offset)
      if (skip < c.bytes.length) this.channel.push(skip === 0 ? c.bytes : c.bytes.subarray(skip))
      this.fed = Math.max(this.fed, c.offset + c.bytes.length)
    }
  }

  emit() {
    this.dispatchEvent(new Event("position"))
  }

  get state() {
    return this.playing ? "playing" : this.position >= this.duration ? "ended" : "paused"
  }

  play() {
    if (this.playing) return
    if (this.position >= this.duration) this.seek(0)
    this.playing = true
    this.startedAt = performance.now() - this.position
    const tick = () => {
      if (!this.playing) return
      this.position = Math.min(this.duration, performance.now() - this.startedAt)
      this.feedUntil(this.position)
      if (this.position >= this.duration) this.playing = false
      else this.timer = setTimeout(tick, 16)
      this.emit()
    }
    tick()
  }

  pause() {
    if (!this.playing) return
    this.playing = false
    clearTimeout(this.timer)
    this.position = Math.min(this.duration, performance.now() - this.startedAt)
    this.feedUntil(this.position)
    this.emit()
  }

  /** Shows the desktop as it was at `t` ms (see the header for how). */
  seek(t) {
    t = Math.max(0, Math.min(this.duration, Math.round(t)))
    let keyframe
    for (const k of this.keyframes) if (k.time_ms <= t) keyframe = k
    const forward = t >= this.position
    if (forward && (keyframe === undefined || keyframe.offset <= this.fed)) {
      this.feedUntil(t)
      this.seekFrom = "continued"
    } else if (keyframe !== undefined) {
      this.reset()
      this.feedRange(0, this.handshakeBytes)
      this.fed = keyframe.offset
      this.next = this.rec.server.findIndex((c) => c.offset + c.bytes.length > keyframe.offset)
      if (this.next < 0) this.next = this.rec.server.length
      this.feedUntil(t)
      this.seekFrom = `keyframe@${keyframe.time_ms}`
    } else {
      this.reset()
      this.feedUntil(t)
      this.seekFrom = "start"
    }
    this.position = t
    if (this.playing) this.startedAt = performance.now() - t
    this.emit()
  }

  destroy() {
    this.playing = false
    clearTimeout(this.timer)
    try { this.rfb?.disconnect() } catch {}
    this.holder?.remove()
  }
}
