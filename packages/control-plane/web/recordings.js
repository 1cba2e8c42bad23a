// Session recording in the web UI: the "Recording" mark every viewer of a recorded session shows, and the
// recordings page of a session (#/sessions/:id/recordings[/:rid]): the owner's choice where the template's
// policy is `optional`, the list (play, download, delete) and the player (web/player.js).
import { authHeaders } from "./login.js"
import { parseRecording, RecordingPlayer } from "./player.js"

const MARK_POLL_MS = 3000
const LIST_POLL_MS = 3000

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])
const clock = (ms) => {
  const s = Math.max(0, ms) / 1000
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, "0")}`
}
const size = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`)

/**
 * Shows "● Recording" in `bar` while the session is being recorded, for as long as `bar` is in the page.
 * `api(method, path)` is the UI's API helper; `rfb` the viewer, whose connect is checked at once (the proxy
 * starts a recording as the viewer connects).
 */
export function recordingMark(sessionId, api, bar, rfb) {
  const mark = document.createElement("span")
  mark.className = "rec-mark"
  mark.dataset.testid = "recording-mark"
  mark.title = "This session is being recorded: what it shows and the input of every viewer are kept for its owner and admins."
  mark.textContent = "● Recording"
  mark.hidden = true
  bar.append(mark)
  let timer
  let busy = false
  const check = async () => {
    if (busy) return
    clearTimeout(timer)
    if (!mark.isConnected) return
    busy = true
    try {
      const s = await api("GET", `/sessions/${encodeURIComponent(sessionId)}/recording`)
      mark.hidden = !s.recording
    } catch {}
    busy = false
    timer = setTimeout(check, MARK_POLL_MS)
  }
  rfb?.addEventListener("connect", check)
  check()
}

/** The recordings page of one session; `rid` opens the player on that recording. */
export function recordingsPage(sessionId, rid, { api, token, showBanner }) {
  const base = `/sessions/${encodeURIComponent(sessionId)}`
  let player
  const download = async (id) => {
    const res = await fetch(`/api/v1${base}/recordings/${encodeURIComponent(id)}`, { headers: authHeaders("GET", token()) })
    if (!res.ok) throw new Error(`The recording could not be downloaded (${res.status}).`)
    return res.arrayBuffer()
  }
  const openPlayer = async (meta) => {
    const box = document.querySelector("#player")
    box.hidden = false
    box.querySelector("[data-testid=player-title]").textContent = `Recording ${meta.id} · started ${new Date(meta.started_at).toLocaleString()}`
    const [bytes, { default: RFB }] = await Promise.all([download(meta.id), import("/vendor/novnc/core/rfb.js")])
    const recording = parseRecording(bytes)
    player?.destroy()
    player = new RecordingPlayer(box.querySelector("#player-screen"), recording, meta, RFB)
    const toggle = box.querySelector("[data-testid=player-toggle]")
    const seek = box.querySelector("[data-testid=player-seek]")
    const time = box.querySelector("[data-testid=player-time]")
    seek.max = String(player.duration)
    let dragging = false
    const show = () => {
      box.dataset.state = player.state
      box.dataset.positionMs = String(Math.round(player.position))
      box.dataset.seekFrom = player.seekFrom
      toggle.textContent = player.playing ? "Pause" : "Play"
      time.textContent = `${clock(player.position)} / ${clock(player.duration)}`
      if (!dragging) seek.value = String(Math.round(player.position))
    }
    player.addEventListener("position", show)
    toggle.onclick = () => (player.playing ? player.pause() : player.play())
    seek.oninput = () => { dragging = true }
    seek.onchange = () => {
      dragging = false
      player.seek(Number(seek.value))
    }
    show()
    player.play()
  }

  return {
    async mount() {
      document.querySelector("#main").innerHTML = `
        <div class="viewer-bar">
          <a href="#/sessions">← Sessions</a>
          <strong>Recordings of ${esc(sessionId)}</strong>
          <span id="rec-choice"></span>
        </div>
        <div id="player" class="card" data-testid="player" hidden>
          <div class="viewer-bar"><strong data-testid="player-title"></strong></div>
          <div id="player-screen" data-testid="player-screen"></div>
          <div class="player-controls">
            <button data-testid="player-toggle">Play</button>
            <input type="range" min="0" max="0" step="10" value="0" data-testid="player-seek" aria-label="Position">
            <span data-testid="player-time" class="muted">0:00.0 / 0:00.0</span>
          </div>
        </div>
        <div id="recordings" class="table-wrap"></div>`
      document.querySelector("#recordings").onclick = async (e) => {
        const button = e.target.closest("button[data-act]")
        if (!button) return
        const id = button.closest("[data-recording]").dataset.recording
        button.disabled = true
        try {
          if (button.dataset.act === "delete") {
            await api("DELETE", `${base}/recordings/${encodeURIComponent(id)}`)
            showBanner(`Recording ${id} deleted.`, "info")
            if (rid === id) location.hash = `#${base}/recordings`
          } else {
            const url = URL.createObjectURL(new Blob([await download(id)], { type: "application/octet-stream" }))
            const a = Object.assign(document.createElement("a"), { href: url, download: `${sessionId}-${id}.ssrec` })
            a.click()
            setTimeout(() => URL.revokeObjectURL(url), 10000)
          }
        } catch (err) { showBanner(err.message) }
        button.disabled = false
        await this.refresh()
      }
      await this.refresh()
      if (rid) {
        const meta = this.list.find((r) => r.id === rid)
        if (!meta) showBanner(`There is no recording ${rid} of this session.`)
        else await openPlayer(meta).catch((err) => showBanner(err.message))
      }
    },
    async refresh() {
      const [status, { recordings }] = await Promise.all([api("GET", `${base}/recording`), api("GET", `${base}/recordings`)])
      const choice = document.querySelector("#rec-choice")
      const policy = status.policy === "always" ? "Recorded by policy (always)." : status.policy === "off" ? "Recording is off for this template." : ""
      const html = status.policy === "optional"
        ? `<label class="inline-check"><input type="checkbox" data-testid="record-session" ${status.enabled ? "checked" : ""}> Record this session</label>`
        : `<span class="muted small">${esc(policy)}</span>`
      if (choice.dataset.html !== html) {
        choice.innerHTML = html
        choice.dataset.html = html
        const box = choice.querySelector("input")
        if (box) box.onchange = async () => {
          try { await api("PUT", `${base}/recording`, { enabled: box.checked }) } catch (err) { showBanner(err.message) }
        }
      }
      const rows = recordings.map((r) => `<tr data-recording="${esc(r.id)}">
        <td data-label="Started">${esc(new Date(r.started_at).toLocaleString())}</td>
        <td data-label="Length">${esc(clock(r.duration_ms))}</td>
        <td data-label="Size">${esc(size(r.bytes))}</td>
        <td data-label="Viewer" class="small">${esc(r.viewer)}</td>
        <td data-label="State">${r.active ? `<span class="badge running">recording</span>` : r.incomplete ? `<span class="badge warning" title="The control plane stopped while recording: playable up to there">incomplete</span>` : r.truncated ? `<span class="badge warning" title="RECORDING_MAX_BYTES reached">truncated</span>` : "complete"}</td>
        <td class="actions"><div>
          ${r.active ? "" : `<a class="button" href="#${base}/recordings/${encodeURIComponent(r.id)}" data-testid="play-recording">Play</a>`}
          <button class="secondary" data-act="download">Download</button>
          ${r.active ? "" : `<button class="danger" data-act="delete" data-testid="delete-recording">Delete</button>`}
        </div></td></tr>`).join("")
      const table = `<table data-testid="recordings"><thead><tr><th>Started</th><th>Length</th><th>Size</th><th>Viewer</th><th>State</th><th></th></tr></thead>
        <tbody>${rows || `<tr><td colspan="6" class="muted">No recordings of this session.</td></tr>`}</tbody></table>`
      const el = document.querySelector("#recordings")
      if (el.dataset.html !== table) {
        el.innerHTML = table
        el.dataset.html = table
      }
      this.list = recordings
      return LIST_POLL_MS
    },
    unmount() {
      player?.destroy()
    }
  }
}
