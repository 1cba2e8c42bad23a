// The session viewer: noVNC on a ticketed WebSocket to the control plane's VNC proxy.
//
//   const v = openViewer(screenElement, sessionId, { api })
//   v.events.addEventListener("status", (e) => show(e.detail.text, e.detail.kind))   // "muted" | "ok" | "reason"
//   v.events.addEventListener("connect", () => ...)      // the desktop is shown (detail: { rfb })
//   v.events.addEventListener("disconnect", (e) => ...)  // detail: { code, reason }
//   v.rfb                                                 // the noVNC RFB object while connected, else undefined
//   v.close()                                             // disconnects for good
//
// `api(method, path, body)` is the web UI's API call (it throws an error with a user-facing `message` and a
// `code`). Other UI modules (sharing, recording) hook in through `events` and `rfb`.

export function openViewer(screen, sessionId, { api }) {
  const events = new EventTarget()
  const emit = (type, detail) => events.dispatchEvent(new CustomEvent(type, { detail }))
  const status = (text, kind = "muted") => emit("status", { text, kind })
  const path = `/sessions/${encodeURIComponent(sessionId)}`
  let rfb
  let closed = false

  async function connect() {
    let ws
    try {
      const ticket = await api("POST", `${path}/vnc-ticket`)
      const { default: RFB } = await import("/vendor/novnc/core/rfb.js")
      if (closed) return
      const scheme = location.protocol === "https:" ? "wss" : "ws"
      ws = new WebSocket(`${scheme}://${location.host}${ticket.url}`, ["binary"])
      rfb = new RFB(screen, ws)
    } catch (err) {
      status(err?.code ? err.message : "The viewer could not start. Reload the page to try again.", "reason")
      return
    }
    let close = { code: 1006, reason: "" }
    ws.addEventListener("close", (e) => { close = { code: e.code, reason: e.reason } })
    rfb.scaleViewport = true
    rfb.focusOnClick = true
    rfb.addEventListener("connect", () => {
      status("Connected. Click the desktop to type.", "ok")
      rfb.focus()
      emit("connect", { rfb })
    })
    rfb.addEventListener("disconnect", (e) => {
      rfb = undefined
      if (closed) return
      status(e.detail.clean ? "Disconnected." : "The connection to the session was lost (the session may have stopped, or its agent went offline). Go back to Sessions to check its state.", e.detail.clean ? "muted" : "reason")
      emit("disconnect", close)
    })
    rfb.addEventListener("securityfailure", (e) => status(`The session refused the connection: ${e.detail.reason ?? "security failure"}.`, "reason"))
    rfb.addEventListener("credentialsrequired", () => status("The session asks for a VNC password, which this viewer does not have.", "reason"))
  }

  connect()
  return {
    events,
    get rfb() { return rfb },
    close() {
      closed = true
      if (rfb) rfb.disconnect()
      rfb = undefined
    }
  }
}
