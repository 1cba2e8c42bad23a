// StreamSpace web UI: plain ES modules, no build step. Talks to /api/v1 with the browser's login cookie
// ("Log in with <provider>", login.js) or the user's bearer token (kept in localStorage; a `#token=...` link
// logs in at once, or asks first when another token is stored).
import * as login from "./login.js"
import { makeUsersPage } from "./users.js"
// Lists refresh by polling, faster while a session is changing state; a page re-renders only what changed, so forms and focus survive a refresh.
import { attachSharing, mountLinkViewer, sharedMark } from "/ui/sharing.js"
import { usagePage as makeUsagePage } from "./usage.js"
import { recordingMark, recordingsPage } from "./recordings.js"
import { openViewer } from "./viewer.js"
import { mountViewerTools } from "./viewerTools.js"

const TOKEN_KEY = "streamspace.token"
const PHASES = ["pending", "creating", "running"]
const MOVING = new Set(["pending", "creating", "terminating", "hibernating"])
const FAST_POLL_MS = 500
const SLOW_POLL_MS = 2000
const REQUEST_TIMEOUT_MS = 10000
const $ = (sel, root = document) => root.querySelector(sel)
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])

let token = localStorage.getItem(TOKEN_KEY)
let timer = undefined
let viewer = undefined
let detachSharing = undefined
let page = undefined
let keepBanner = false
let unreachable = false
let bannerTimer = undefined

// ---- API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(message, code) {
    super(message)
    this.code = code
  }
}

// Sentences for the errors a user can act on; anything else shows the server's own message.
const HINTS = {
  no_eligible_agent: "No agent can take a new session right now. On the Agents page, an agent must be online, approved and not draining.",
  forbidden: "Your account is not allowed to do that (it needs the admin role).",
  unavailable: "The control plane cannot complete this right now (its database or an agent is unavailable). Try again in a moment.",
  limit_exceeded: "You have reached a per-user limit the operator set. Delete a session or close a viewer, or wait a moment, and try again."
}

// Every item of a paginated list endpoint (`limit`, `cursor`, `next_cursor`), page after page, as `{ [key]: items }`.
async function apiAll(path, key) {
  const items = []
  let cursor = null
  do {
    const page = await api("GET", `${path}?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`)
    items.push(...page[key])
    cursor = page.next_cursor ?? null
  } while (cursor)
  return { [key]: items }
}

async function api(method, path, body) {
  let res
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers: { ...login.authHeaders(method, token), ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined,
      // A request that never gets an answer (a server still starting) must not stall the refresh loop.
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS)
    })
  } catch {
    throw new ApiError("The control plane cannot be reached. Is it still running?", "network")
  }
  const text = await res.text()
  let data
  try { data = text ? JSON.parse(text) : undefined } catch { data = undefined }
  if (res.status === 401) {
    logout(`Your login token was not accepted (${data?.error?.message ?? "unauthorized"}). Log in with a current token.`)
    throw new ApiError("Not logged in", "unauthorized")
  }
  if (!res.ok) {
    const code = data?.error?.code
    const detail = data?.error?.message
    const hint = HINTS[code]
    throw new ApiError(hint ? `${hint}${detail ? ` (${detail})` : ""}` : detail ?? `The request failed (${res.status} ${res.statusText}).`, code)
  }
  return data
}

// ---- login state and banner --------------------------------------------------------------------

function claimsOf(jwt) {
  try { return JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) } catch { return {} }
}
const claims = () => (login.state.cookie ? { sub: login.state.cookie.user.id, role: login.state.cookie.user.role } : claimsOf(token))
const loggedIn = () => Boolean(token || login.state.cookie)
const describeToken = (c) => `${c.sub ?? "an unknown user"} (${c.role === "admin" ? "admin" : "user"})`
const isAdmin = () => claims().role === "admin"

async function logout(message) {
  if (login.state.cookie && await login.logoutCookie()) return
  localStorage.removeItem(TOKEN_KEY)
  token = null
  if (message) showBanner(message)
  keepBanner = true
  if (location.hash !== "#/login") location.hash = "#/login"
  else render()
}

function showBanner(message, kind = "error") {
  const b = $("#banner")
  b.textContent = message ?? ""
  b.className = `banner ${kind === "info" ? "info" : ""}`
  b.hidden = !message
  clearTimeout(bannerTimer)
  if (message && kind === "info") bannerTimer = setTimeout(() => showBanner(""), 5000)
}

const ago = (iso) => {
  if (!iso) return "never"
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : s < 86400 ? `${Math.floor(s / 3600)}h ago` : `${Math.floor(s / 86400)}d ago`
}
const timeAgo = (iso) => `<time datetime="${esc(iso ?? "")}" data-ago>${esc(ago(iso))}</time>`
function tickTimes() {
  for (const t of document.querySelectorAll("time[data-ago]")) t.textContent = ago(t.getAttribute("datetime"))
}

/** Replaces an element's content only when the markup changed (keeps hover, focus and clicks stable). */
function patch(el, html) {
  if (el && el.dataset.html !== html) {
    el.innerHTML = html
    el.dataset.html = html
    tickTimes()
  }
}

// ---- pages -------------------------------------------------------------------------------------

// A `#token=` link while another token is stored: say who each one is and let the user choose, so a link
// sent by someone else cannot silently swap a logged-in admin for another account.
let offeredToken = null

const switchPage = {
  mount() {
    $("#nav").hidden = true
    const next = claimsOf(offeredToken)
    const current = claims()
    const expires = typeof next.exp === "number" ? ` It expires ${esc(new Date(next.exp * 1000).toLocaleString())}.` : ""
    $("#main").innerHTML = `
      <div class="card narrow-card" data-testid="switch-account">
        <h1>Switch account?</h1>
        <p>The link you opened logs in as <strong data-testid="offered-who">${esc(describeToken(next))}</strong>.${expires}</p>
        <p>You are logged in as <strong data-testid="current-who">${esc(describeToken(current))}</strong>.</p>
        <p class="muted">Only switch if you expected this link. Someone else's link would make you act as them.</p>
        <div class="inline">
          <button data-testid="switch-accept">Log in as ${esc(next.sub ?? "that user")}</button>
          <button class="secondary" data-testid="switch-keep">Stay ${esc(current.sub ?? "logged in")}</button>
        </div>
      </div>`
    const done = (accept) => {
      if (accept) {
        token = offeredToken
        localStorage.setItem(TOKEN_KEY, token)
      }
      offeredToken = null
      location.hash = "#/sessions"
    }
    $("[data-testid=switch-accept]").onclick = () => done(true)
    $("[data-testid=switch-keep]").onclick = () => done(false)
  }
}

const loginPage = {
  mount() {
    $("#nav").hidden = true
    $("#main").innerHTML = `
      <div class="card narrow-card">
        <h1>Log in</h1>
        ${login.loginOptionsHtml()}
        <p class="muted">Or paste the access token (a JWT) your administrator gave you. The quick start (<code>npm start</code>)
        prints a one-click login link and an admin token when it starts.</p>
        <form id="login" class="inline">
          <label class="grow">Token <input name="token" autocomplete="off" required data-testid="token-input"></label>
          <button data-testid="login">Log in</button>
        </form>
      </div>`
    $("#login").onsubmit = (e) => {
      e.preventDefault()
      token = new FormData(e.target).get("token").trim()
      localStorage.setItem(TOKEN_KEY, token)
      showBanner("")
      location.hash = "#/sessions"
    }
  }
}

const agentsPage = {
  mount() {
    $("#main").innerHTML = `<h1>Agents</h1><div id="agents" class="table-wrap"></div>`
    $("#agents").onclick = async (e) => {
      const btn = e.target.closest("button[data-act]")
      if (!btn) return
      const id = btn.closest("[data-agent]").dataset.agent
      const act = btn.dataset.act
      btn.disabled = true
      try {
        if (act === "drain" || act === "undrain") await api("PATCH", `/agents/${encodeURIComponent(id)}`, { status: act === "drain" ? "offline" : "online" })
        else if (act === "delete") await api("DELETE", `/agents/${encodeURIComponent(id)}`)
        else await api("POST", `/agents/${encodeURIComponent(id)}/${act}`)
        showBanner("")
      } catch (err) { showBanner(err.message) }
      refreshSoon(0)
    }
  },
  async refresh() {
    const { agents } = await apiAll("/agents", "agents")
    const admin = isAdmin()
    patch($("#agents"), `<table data-testid="agents">
      <thead><tr><th>Agent</th><th>Status</th><th>Region</th><th>Capacity</th><th>Sessions</th><th>Last heartbeat</th><th>Enrolment</th>${admin ? "<th></th>" : ""}</tr></thead>
      <tbody>${agents.length === 0 ? `<tr><td colspan="8" class="muted">No agent has connected yet. Start one with AGENT_ID, CONTROL_PLANE_URL and AGENT_TOKEN set.</td></tr>` : ""}
      ${agents.map((a) => `<tr data-agent="${esc(a.id)}">
        <td data-label="Agent"><strong>${esc(a.id)}</strong><div class="muted small">${esc(a.platform)} ${esc(a.version)}</div></td>
        <td data-label="Status"><span class="badge ${esc(a.status)}" data-testid="agent-status">${esc(a.status)}</span></td>
        <td data-label="Region">${esc(a.region || "—")}</td>
        <td data-label="Capacity">${a.capacity ? `${esc(cpuText(a.capacity.cpu))} CPU, ${esc(a.capacity.memory)}, ${esc(a.capacity.max_sessions)} sessions` : "—"}</td>
        <td data-label="Sessions">${esc(a.active_sessions)}${a.unknown_sessions?.length ? ` <span class="muted small" title="${esc(a.unknown_sessions.join(", "))}">(+${a.unknown_sessions.length} unknown)</span>` : ""}</td>
        <td data-label="Last heartbeat">${a.last_heartbeat ? timeAgo(a.last_heartbeat) : "never"}</td>
        <td data-label="Enrolment"><span class="badge ${esc(a.enrollment)}" data-testid="agent-enrollment">${esc(a.enrollment)}</span>${a.enrollment === "pending" && a.fingerprint ? `<div class="muted small" data-testid="agent-fingerprint" title="Approve only if the agent's log shows the same fingerprint">from ${esc(a.remote_address ?? "?")} · fingerprint <code>${esc(a.fingerprint)}</code></div>` : ""}</td>
        ${admin ? `<td class="actions"><div>
          ${a.enrollment === "pending" ? `<button data-act="approve">Approve</button><button class="danger" data-act="reject">Reject</button>` : ""}
          ${a.enrollment === "rejected" ? `<button class="danger" data-act="delete">Delete</button>` : ""}
          ${a.enrollment === "approved" ? (a.draining ? `<button class="secondary" data-act="undrain">Undrain</button>` : `<button class="secondary" data-act="drain">Drain</button>`) : ""}
        </div></td>` : ""}
      </tr>`).join("")}
      </tbody></table>`)
    return SLOW_POLL_MS
  }
}

const clipboardText = (c) => (!c || (c.upload && c.download) ? "both ways" : c.upload ? "browser → desktop" : c.download ? "desktop → browser" : "off")

/** "100000m" reads better as "100". */
const cpuText = (q) => {
  const m = /^(\d+)m$/.exec(String(q))
  return m && Number(m[1]) % 1000 === 0 ? String(Number(m[1]) / 1000) : q
}

function progress(state) {
  const at = PHASES.indexOf(state)
  if (at < 0) return ""
  const steps = PHASES.map((p, i) => `<i class="${i < at || state === "running" ? "done" : i === at ? "now" : ""}" title="${p}"></i>`).join("")
  return `<span class="progress" data-testid="session-progress" role="progressbar" aria-valuemin="1" aria-valuemax="3" aria-valuenow="${at + 1}" aria-label="${esc(state)}">${steps}</span>`
}

/** When a running session expires under its policy, for the sessions list. */
function expiryDetail(s) {
  if (s.state !== "running" || !s.expires_at) return ""
  const when = new Date(s.expires_at).toLocaleTimeString()
  const what = s.activity?.next_action === "hibernate" ? "hibernates" : "ends"
  return `<div class="${s.expiry_warning ? "reason" : "muted"} small" data-testid="session-expiry">${what} at ${esc(when)} (${esc(s.expiry_reason)})</div>`
}

function stateDetail(s) {
  if (s.state === "failed") return `<div class="reason">${esc(s.reason ?? "failed")}${s.message ? `: ${esc(s.message)}` : ""}</div>`
  if (MOVING.has(s.state) && (s.reason || s.message)) return `<div class="muted small">${esc(s.reason ?? "")}${s.message ? `: ${esc(s.message)}` : ""}</div>`
  if (s.state === "terminated" && s.reason) return `<div class="muted small">${esc(s.reason)}</div>`
  return ""
}

const sessionsPage = {
  mount() {
    $("#main").innerHTML = `
      <h1>Sessions</h1>
      <div class="card">
        <form id="create" class="inline">
          <label>Template <select name="template" data-testid="template-select"></select></label>
          <label>Region (optional) <input name="region" placeholder="any" size="10"></label>
          <label class="inline-check" title="Where the template allows it (its recording policy is optional)"><input type="checkbox" name="record" data-testid="create-record"> Record</label>
          <button data-testid="create-session" disabled>New session</button>
        </form>
      </div>
      <div id="sessions" class="table-wrap"></div>`
    $("#create").onsubmit = async (e) => {
      e.preventDefault()
      const form = new FormData(e.target)
      const body = { template: form.get("template") }
      if (form.get("region")) body.region = form.get("region")
      const button = $("#create button")
      button.disabled = true
      try {
        const s = await api("POST", "/sessions", body)
        showBanner(`Session ${s.id} is starting…`, "info")
        if (form.get("record")) await api("PUT", `/sessions/${encodeURIComponent(s.id)}/recording`, { enabled: true })
      } catch (err) { showBanner(err.message) }
      button.disabled = false
      refreshSoon(0)
    }
    $("#sessions").onclick = async (e) => {
      const hib = e.target.closest("button[data-act=hibernate]")
      if (hib) {
        const id = hib.closest("[data-session]").dataset.session
        hib.disabled = true
        try {
          await api("POST", `/sessions/${encodeURIComponent(id)}/hibernate`)
          showBanner(`Session ${id} is hibernating: its desktop stops, its home folder is kept.`, "info")
        } catch (err) { showBanner(err.message) }
        return refreshSoon(0)
      }
      const btn = e.target.closest("button[data-act=delete]")
      if (!btn) return
      const id = btn.closest("[data-session]").dataset.session
      btn.disabled = true
      try {
        await api("DELETE", `/sessions/${encodeURIComponent(id)}`)
        showBanner(`Session ${id} is being deleted…`, "info")
      } catch (err) { showBanner(err.message) }
      refreshSoon(0)
    }
  },
  async refresh() {
    const [{ sessions }, { templates }] = await Promise.all([apiAll("/sessions", "sessions"), apiAll("/templates", "templates")])
    const select = $("#create select")
    const options = templates.map((t) => `<option value="${esc(t.name)}">${esc(t.display_name || t.name)}</option>`).join("")
    if (select.dataset.html !== options) {
      const chosen = select.value
      patch(select, options)
      if (chosen) select.value = chosen
    }
    $("#create button").disabled = templates.length === 0
    patch($("#sessions"), `<table data-testid="sessions">
      <thead><tr><th>Session</th><th>State</th><th>Template</th><th>Agent</th><th>Created</th><th></th></tr></thead>
      <tbody>${sessions.length === 0 ? `<tr><td colspan="6" class="muted">No sessions yet. Pick a template above and press New session.</td></tr>` : ""}
      ${sessions.map((s) => `<tr data-session="${esc(s.id)}" data-state="${esc(s.state)}">
        <td data-label="Session"><strong>${esc(s.id)}</strong>${sharedMark(s)}${isAdmin() ? `<div class="muted small">${esc(s.user_id)}</div>` : ""}</td>
        <td data-label="State"><span class="badge ${esc(s.state)}" data-testid="session-state">${esc(s.state)}</span>${progress(s.state)}${stateDetail(s)}${expiryDetail(s)}</td>
        <td data-label="Template">${esc(s.template)}</td>
        <td data-label="Agent">${esc(s.agent_id ?? "—")}</td>
        <td data-label="Created">${timeAgo(s.created_at)}</td>
        <td class="actions"><div>
          ${s.state === "running" || s.state === "hibernated" ? `<a class="button" href="#/sessions/${encodeURIComponent(s.id)}/view" data-testid="view-session">${s.state === "hibernated" ? "Resume" : "View"}</a>` : ""}
          ${!s.shared ? `<a class="button secondary" href="#/sessions/${encodeURIComponent(s.id)}/recordings" data-testid="session-recordings">Recordings</a>` : ""}
          ${s.state === "running" && s.persistent_home && !s.shared ? `<button data-act="hibernate" data-testid="hibernate-session" title="Stop the desktop and keep its home folder">Hibernate</button>` : ""}
          ${s.state !== "terminated" && s.state !== "terminating" && !s.shared ? `<button class="danger" data-act="delete" data-testid="delete-session">Delete</button>` : ""}
        </div></td>
      </tr>`).join("")}
      </tbody></table>`)
    return sessions.some((s) => MOVING.has(s.state)) ? FAST_POLL_MS : SLOW_POLL_MS
  }
}

const templatesPage = {
  mount() {
    $("#main").innerHTML = `
      <h1>Templates</h1>
      ${isAdmin() ? `<div class="card"><form id="tpl" class="inline">
        <label>Name <input name="name" required pattern="[a-z0-9]([\\-a-z0-9]*[a-z0-9])?" title="lowercase letters, digits and -" placeholder="firefox" size="12"></label>
        <label>Display name <input name="display_name" placeholder="Firefox" size="14"></label>
        <label class="grow">Image <input name="image" required placeholder="registry/image:tag"></label>
        <label>CPU <input name="cpu" value="1000m" size="6"></label>
        <label>Memory <input name="memory" value="2Gi" size="6"></label>
        <label>VNC port <input name="vnc_port" value="5900" size="5" inputmode="numeric"></label>
        <label>Home <select name="persistent_home"><option value="false">ephemeral</option><option value="true">persistent</option></select></label>
        <label title="No user input for this long: the idle action (empty: the control plane's default; 0s: none)">Idle timeout <input name="idle_timeout" placeholder="default" size="6"></label>
        <label title="Hard limit from creation (empty: default; 0s: none)">Max lifetime <input name="max_lifetime" placeholder="default" size="6"></label>
        <label>When idle <select name="idle_action"><option value="">default</option><option value="hibernate">hibernate</option><option value="delete">delete</option></select></label>
        <label title="Warning shown before any automatic action">Warn before <input name="warn_before" placeholder="default" size="6"></label>
        <label title="Clipboard directions the control plane lets through">Clipboard <select name="clipboard" data-testid="template-clipboard"><option value="both">both ways</option><option value="download">desktop → browser</option><option value="upload">browser → desktop</option><option value="none">off</option></select></label>
        <button>Add template</button></form></div>` : ""}
      <div id="templates" class="table-wrap"></div>`
    const form = $("#tpl")
    if (form) form.onsubmit = async (e) => {
      e.preventDefault()
      const f = new FormData(form)
      const body = {
        name: f.get("name"), image: f.get("image"),
        resources: { cpu: f.get("cpu"), memory: f.get("memory") },
        vnc_port: Number(f.get("vnc_port")), persistent_home: f.get("persistent_home") === "true"
      }
      if (f.get("display_name")) body.display_name = f.get("display_name")
      for (const k of ["idle_timeout", "max_lifetime", "idle_action", "warn_before"]) if (f.get(k)) body[k] = f.get(k)
      const clip = f.get("clipboard")
      body.clipboard = { upload: clip === "both" || clip === "upload", download: clip === "both" || clip === "download" }
      try {
        await api("POST", "/templates", body)
        showBanner(`Template ${body.name} added.`, "info")
        form.reset()
      } catch (err) { showBanner(err.message) }
      refreshSoon(0)
    }
  },
  async refresh() {
    const { templates } = await apiAll("/templates", "templates")
    patch($("#templates"), `<table data-testid="templates">
      <thead><tr><th>Name</th><th>Display name</th><th>Image</th><th>Resources</th><th>VNC port</th><th>Home</th><th>Lifecycle</th><th>Clipboard</th></tr></thead>
      <tbody>${templates.map((t) => `<tr>
        <td data-label="Name"><strong>${esc(t.name)}</strong></td><td data-label="Display name">${esc(t.display_name)}</td>
        <td data-label="Image"><code>${esc(t.image)}</code></td>
        <td data-label="Resources">${esc(cpuText(t.resources?.cpu ?? "default"))} CPU / ${esc(t.resources?.memory ?? "default")}</td>
        <td data-label="VNC port">${esc(t.vnc_port)}</td>
        <td data-label="Home">${t.persistent_home ? "persistent" : "ephemeral"}</td>
        <td data-label="Lifecycle" class="small">idle ${esc(t.idle_timeout ?? "default")} → ${esc(t.idle_action ?? "default")} · lifetime ${esc(t.max_lifetime ?? "default")} · warn ${esc(t.warn_before ?? "default")}</td>
        <td data-label="Clipboard" data-testid="template-clipboard-cell">${clipboardText(t.clipboard)}</td></tr>`).join("")}</tbody></table>`)
    return undefined
  }
}

/** A hibernated session's viewer offers to resume it; resolves with the session once it runs (or stops moving). */
function offerResume(id, status) {
  status("This session is hibernated: its desktop was stopped and its home folder kept.", "reason")
  const bar = $(".viewer-bar")
  const button = document.createElement("button")
  button.textContent = "Resume session"
  button.dataset.testid = "resume-session"
  bar.append(button)
  return new Promise((resolve, reject) => {
    button.onclick = async () => {
      button.disabled = true
      status("Resuming: starting the desktop again…", "muted")
      try {
        let s = await api("POST", `/sessions/${encodeURIComponent(id)}/resume`)
        while (s.state === "creating" || s.state === "pending") {
          await new Promise((r) => setTimeout(r, FAST_POLL_MS))
          s = await api("GET", `/sessions/${encodeURIComponent(id)}`)
        }
        button.remove()
        resolve(s)
      } catch (err) {
        button.disabled = false
        reject(err)
      }
    }
  })
}

function viewerPage(id) {
  const status = (text, kind = "muted") => {
    const s = $("#vstatus")
    if (s) { s.textContent = text; s.className = kind }
  }
  return {
    async mount() {
      $("#main").innerHTML = `
        <div class="viewer-bar">
          <a href="#/sessions">← Sessions</a>
          <strong>${esc(id)}</strong>
          <span id="vstatus" class="muted" data-testid="viewer-status" role="status">Connecting…</span>
        </div>
        <div id="expiry" data-testid="expiry-banner" role="alert" hidden></div>
        <div id="screen" data-testid="screen"></div>`
      $("#expiry").onclick = async (e) => {
        const btn = e.target.closest("button[data-act=keep]")
        if (!btn) return
        btn.disabled = true
        try { showExpiry(await api("POST", `/sessions/${encodeURIComponent(id)}/keepalive`)) } catch (err) { showBanner(err.message) }
        btn.disabled = false
      }
      let session
      try {
        session = await api("GET", `/sessions/${encodeURIComponent(id)}`)
        if (session.state === "hibernated") session = await offerResume(id, status)
        if (session.state !== "running") {
          status(`This session is ${session.state}, not running: there is nothing to view yet.`, "reason")
          return
        }
      } catch (err) {
        status(err instanceof ApiError ? err.message : "The viewer could not start. Reload the page to try again.", "reason")
        return
      }
      viewer = openViewer($("#screen"), id, { api })
      viewer.events.addEventListener("status", (e) => { status(e.detail.text, e.detail.kind); $("#vstatus")?.setAttribute("data-state", e.detail.state) })
      mountViewerTools($(".viewer-bar"), viewer, { screen: $("#screen") })
      let viewerId
      viewer.events.addEventListener("ticket", (e) => { viewerId = e.detail.viewerId })
      detachSharing = attachSharing({ after: $(".viewer-bar"), session, viewerId: () => viewerId, token, api, me: claims().sub, showBanner })
      recordingMark(id, api, $(".viewer-bar"), viewer.events)
    },
    async refresh() {
      showExpiry(await api("GET", `/sessions/${encodeURIComponent(id)}`))
      return EXPIRY_POLL_MS
    }
  }
}

/** How often an open viewer looks at its session's expiry (the banner's countdown moves with it). */
const EXPIRY_POLL_MS = 1000

/** The banner every open viewer shows while the session is warned: what happens, when, and "Keep working". */
function showExpiry(s) {
  const el = $("#expiry")
  if (!el) return
  if (!s.expiry_warning || !s.expires_at) {
    el.hidden = true
    el.innerHTML = ""
    return
  }
  const left = Math.max(0, Math.round((Date.parse(s.expires_at) - Date.now()) / 1000))
  const clock = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`
  const action = s.activity?.next_action === "hibernate" ? "hibernate (its home folder is kept; resume it later)" : "be deleted"
  const why = s.expiry_reason === "max_lifetime" ? "it reached its maximum lifetime" : "nobody has used it for a while"
  const text = `This session will ${action} in <strong data-testid="expiry-countdown">${clock}</strong>: ${why}.`
  const keep = s.expiry_reason === "idle_timeout" ? ` <button data-act="keep" data-testid="keep-working">Keep working</button>` : ""
  const html = `<span>${text}</span>${keep}`
  if (el.dataset.html !== html) {
    el.dataset.html = html
    el.innerHTML = html
  }
  el.hidden = false
}

// ---- router ------------------------------------------------------------------------------------

function refreshSoon(ms) {
  clearTimeout(timer)
  timer = setTimeout(poll, ms)
}

async function poll() {
  const current = page
  let next = SLOW_POLL_MS
  try {
    next = await current.refresh()
    // Reachable again: the "cannot be reached" banner is out of date.
    if (unreachable) { unreachable = false; showBanner("") }
  } catch (e) {
    // The page changed while it refreshed (a click on View during a slow list): its DOM is gone, nothing to show.
    if (current !== page) return
    if (e instanceof ApiError) {
      if (e.code === "network") unreachable = true
      if (e.code !== "unauthorized") showBanner(e.message)
    }
    else { console.error(e); showBanner("Something went wrong in this page. Reload to try again.") }
  }
  if (current === page && next !== undefined && loggedIn()) refreshSoon(document.hidden ? SLOW_POLL_MS : next)
}

/**
 * Takes the token of a `#token=` link out of the address bar: stored at once, or, while another token is stored,
 * offered on the #/switch page. Synchronous, so a navigation right after the page loads cannot drop it.
 */
function takeLinkedToken() {
  const fromLink = /[#&?]token=([^&]+)/.exec(location.hash)
  if (!fromLink) return false
  const offered = decodeURIComponent(fromLink[1])
  if (token && token !== offered) {
    offeredToken = offered
    history.replaceState(null, "", `${location.pathname}#/switch`) // the token leaves the address bar either way
    return true
  }
  token = offered
  localStorage.setItem(TOKEN_KEY, token)
  history.replaceState(null, "", `${location.pathname}#/sessions`)
  return true
}

async function render() {
  clearTimeout(timer)
  const hash = location.hash || "#/sessions"
  if (takeLinkedToken()) return render()
  if (hash.startsWith("#/switch")) {
    if (offeredToken && token) {
      page = switchPage
      return switchPage.mount()
    }
    history.replaceState(null, "", `${location.pathname}#/sessions`)
    return render()
  }
  if (viewer) { viewer.close(); viewer = undefined }
  page?.unmount?.()
  if (detachSharing) { detachSharing(); detachSharing = undefined }
  const shareLink = /^#share=([\w-]+)/.exec(hash)
  if (shareLink) {
    $("#nav").hidden = true
    page = { refresh: async () => undefined }
    const linkRfb = await mountLinkViewer($("#main"), shareLink[1])
    viewer = linkRfb && { close: () => linkRfb.disconnect() }
    return
  }
  if (!loggedIn() || hash.startsWith("#/login")) {
    page = loginPage
    return loginPage.mount()
  }
  const who = claims()
  $("#nav").hidden = false
  $("#who").textContent = `${who.sub ?? "user"}${who.role === "admin" ? " (admin)" : ""}`
  const view = /^#\/sessions\/([^/]+)\/view$/.exec(hash)
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", !view && hash.startsWith(`#/${a.dataset.page}`))
  $("#nav a[data-page=usage]").hidden = !isAdmin()
  $("#nav a[data-page=users]").hidden = !isAdmin()
  const recs = /^#\/sessions\/([^/]+)\/recordings(?:\/([^/]+))?$/.exec(hash)
  if (recs) page = recordingsPage(decodeURIComponent(recs[1]), recs[2] && decodeURIComponent(recs[2]), { api, token: () => token, showBanner })
  else page = view ? viewerPage(decodeURIComponent(view[1])) : hash.startsWith("#/agents") ? agentsPage : hash.startsWith("#/users") ? usersPage
    : hash.startsWith("#/templates") ? templatesPage : hash.startsWith("#/usage") && isAdmin() ? usagePage : sessionsPage
  await page.mount()
  await poll()
}

const usagePage = makeUsagePage({ api, esc, patch, $ })

$("#logout").onclick = () => logout()
const usersPage = makeUsersPage({ $, api, apiAll, patch, esc, timeAgo, showBanner, refreshSoon, pollMs: SLOW_POLL_MS })
takeLinkedToken()
await login.detect()
window.addEventListener("hashchange", () => {
  if (!keepBanner) showBanner("")
  keepBanner = false
  render()
})
setInterval(tickTimes, 1000)
render()
