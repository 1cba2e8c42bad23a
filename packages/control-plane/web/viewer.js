// The session viewer: noVNC on a ticketed WebSocket to the control plane's VNC proxy, reconnecting by itself.
//
//   const v = openViewer(screenElement, sessionId, { api })
//   v.events.addEventListener("status", (e) => show(e.detail))  // { text, kind: "muted"|"ok"|"reason", state }
//   v.events.addEventListener("connect", (e) => ...)     // the desktop is shown (detail: { rfb })
//   v.events.addEventListener("disconnect", (e) => ...)  // detail: { code, reason, retry: bool }
//   v.events.addEventListener("stats", (e) => ...)       // detail: { fps, rttMs } every STATS_MS
//   v.rfb                                                 // the noVNC RFB object while connected, else undefined
//   v.state                                               // "connecting" | "connected" | "reconnecting" | "ended" | "failed" | "closed"
//   v.close()                                             // disconnects for good
//
// `api(method, path, body)` is the web UI's API call (it throws an error with a user-facing `message` and a
// `code`). Other UI modules (sharing, recording, the toolbar in viewerTools.js) hook in through `events` and `rfb`.
//
// Reconnecting: every attempt takes a new ticket. A drop of the tunnel, the agent or the control plane is retried
// with backoff (RETRY_MS, jittered), showing the reason and a countdown. The session being gone (404, 4404, or
// the API saying it is terminated or failed) ends the viewer with "session ended"; forbidden (4403) and the
// session hibernated stop too. Any other 4xxx close is retried (e.g. a draining replica).

/** Backoff between attempts; the last value repeats. Reset once a connection reaches the desktop. */
export const RETRY_MS = [1000, 2000, 4000, 8000, 15000]
const STATS_MS = 2000
/** Close codes after which retrying cannot help. */
const FINAL = new Map([
  [4403, "This viewer was ended: the owner or an admin closed it, or your access to the session ended."],
  [4404, "This session no longer exists."]
])
const ENDED_STATES = new Set(["terminated", "failed", "terminating"])

const closeText = ({ code, reason }) =>
  reason ? reason : code === 1006 ? "the connection to the control plane was lost" : code === 1001 ? "the control plane is restarting" : `connection closed (${code})`

export function openViewer(screen, sessionId, { api }) {
  const events = new EventTarget()
  const emit = (type, detail) => events.dispatchEvent(new CustomEvent(type, { detail }))
  const path = `/sessions/${encodeURIComponent(sessionId)}`
  let rfb
  let state = "connecting"
  let attempt = 0
  let retryTimer
  let countdown
  let statsTimer
  let frames = 0
  let rttMs

  const status = (text, kind = "muted", next = state) => {
    state = next
    emit("status", { text, kind, state })
  }
  const finish = (text, next = "ended") => {
    clearTimers()
    status(text, "reason", next)
  }
  const clearTimers = () => {
    clearTimeout(retryTimer)
    clearInterval(countdown)
    clearInterval(statsTimer)
  }

  /** Schedules the next attempt, showing why and when. */
  function retry(why) {
    if (state === "closed") return
    const wait = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)] * (0.8 + Math.random() * 0.4)
    attempt++
    const due = Date.now() + wait
    const reason = String(why).replace(/\.+$/, "")
    const show = () => status(`Reconnecting in ${Math.max(0, Math.ceil((due - Date.now()) / 1000))} s (attempt ${attempt}): ${reason}.`, "reason", "reconnecting")
    show()
    clearInterval(countdown)
    countdown = setInterval(show, 1000)
    retryTimer = setTimeout(() => {
      clearInterval(countdown)
      connect()
    }, wait)
  }

  /** After a drop: is the session still there to reconnect to? Ends the viewer when it is not. */
  async function afterDrop(close) {
    if (FINAL.has(close.code)) return finish(close.reason ? `${FINAL.get(close.code)} (${close.reason})` : FINAL.get(close.code))
    let session
    try {
      session = await api("GET", path)
    } catch (err) {
      if (state === "closed") return
      if (err?.code === "not_found") return finish("This session has ended: it no longer exists.")
      if (err?.code === "unauthorized") return finish("Log in again to view this session.", "failed")
      return retry(err?.code === "network" ? "the control plane cannot be reached" : `${closeText(close)} (${err?.message ?? "no answer"})`)
    }
    if (state === "closed") return
    if (ENDED_STATES.has(session.state)) return finish(`This session has ended (${session.state}${session.reason ? `: ${session.reason}` : ""}).`)
    if (session.state === "hibernated") return finish("This session was hibernated. Reload the page to resume it.")
    retry(closeText(close))
  }

  async function connect() {
    if (state === "closed") return
    let close = { code: 1006, reason: "" }
    status(attempt === 0 ? "Connecting…" : `Reconnecting (attempt ${attempt})…`, "muted", attempt === 0 ? "connecting" : "reconnecting")
    let ws
    try {
      const ticket = await api("POST", `${path}/vnc-ticket`)
      emit("ticket", { viewerId: ticket.viewer_id })
      const { default: RFB } = await import("/vendor/novnc/core/rfb.js")
      if (state === "closed") return
      const scheme = location.protocol === "https:" ? "wss" : "ws"
      ws = new WebSocket(`${scheme}://${location.host}${ticket.url}`, ["binary"])
      // Before noVNC's own handler, which reports the disconnect at once: the code and reason are known by then.
      ws.addEventListener("close", (e) => { close = { code: e.code, reason: e.reason } })
      rfb = new RFB(screen, ws)
    } catch (err) {
      if (state === "closed") return
      if (err?.code === "not_found") return finish("This session has ended: it no longer exists.")
      if (err?.code === "unauthorized" || err?.code === "forbidden") return finish(err.message, "failed")
      if (err?.code === "agent_offline") return retry(`the agent running this session is offline`)
      if (err?.code === "session_not_running") return afterDrop({ code: 4409, reason: err.message })
      if (err?.code === "network") return retry("the control plane cannot be reached")
      if (err?.code) return retry(err.message)
      return finish("The viewer could not start. Reload the page to try again.", "failed")
    }
    const current = rfb
    current.scaleViewport = true
    current.resizeSession = true
    current.focusOnClick = true
    countFrames(current)
    current.addEventListener("connect", () => {
      attempt = 0
      status("Connected. Click the desktop to type.", "ok", "connected")
      current.focus()
      startStats()
      emit("connect", { rfb: current })
    })
    current.addEventListener("disconnect", () => {
      if (rfb === current) rfb = undefined
      clearInterval(statsTimer)
      // Closed by the page, or already ended or failed for a reason shown (a security failure comes first).
      if (state === "closed" || state === "ended" || state === "failed") return
      const retryable = !FINAL.has(close.code)
      emit("disconnect", { ...close, retry: retryable })
      afterDrop(close)
    })
    current.addEventListener("securityfailure", (e) => finish(`The session refused the connection: ${e.detail.reason ?? "security failure"}.`, "failed"))
    current.addEventListener("credentialsrequired", () => {
      finish("The session asks for a VNC password, which this viewer does not have.", "failed")
      current.disconnect()
    })
  }

  /** Counts completed framebuffer updates (noVNC 1.7's _framebufferUpdate returns true when one is complete). */
  function countFrames(target) {
    const original = target._framebufferUpdate
    if (typeof original !== "function") return
    target._framebufferUpdate = function(...args) {
      const done = original.apply(this, args)
      if (done) frames++
      return done
    }
  }

  /** Frame rate from the updates counted; round trip as the time of an API request to the control plane. */
  function startStats() {
    clearInterval(statsTimer)
    frames = 0
    let last = performance.now()
    statsTimer = setInterval(async () => {
      const now = performance.now()
      const fps = frames / ((now - last) / 1000)
      frames = 0
      last = now
      const sent = performance.now()
      try {
        await api("GET", path)
        rttMs = Math.round(performance.now() - sent)
      } catch {
        rttMs = undefined
      }
      if (state === "connected") emit("stats", { fps: Math.round(fps * 10) / 10, rttMs })
    }, STATS_MS)
  }

  connect()
  return {
    events,
    sessionId,
    get rfb() { return rfb },
    get state() { return state },
    close() {
      clearTimers()
      state = "closed"
      if (rfb) rfb.disconnect()
      rfb = undefined
    }
  }
}
