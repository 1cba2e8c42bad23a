// StreamSpace web UI: plain ES modules, no build step. Talks to /api/v1 with the user's bearer token.
const TOKEN_KEY = "streamspace.token"
const PHASES = ["pending", "creating", "running"]
const $ = (sel, root = document) => root.querySelector(sel)
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])

let token = localStorage.getItem(TOKEN_KEY)
let timer = undefined
let viewer = undefined

// ---- API -------------------------------------------------------------------------------------

class ApiError extends Error {}

async function api(method, path, body) {
  let res
  try {
    res = await fetch(`/api/v1${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { "content-type": "application/json" } : {}) },
      body: body ? JSON.stringify(body) : undefined
    })
  } catch {
    throw new ApiError("The control plane cannot be reached. Is it running?")
  }
  if (res.status === 401) {
    logout("Your login token was not accepted (expired or invalid). Please log in again.")
    throw new ApiError("Not logged in")
  }
  const text = await res.text()
  let data
  try { data = text ? JSON.parse(text) : undefined } catch { data = undefined }
  if (!res.ok) throw new ApiError(data?.error?.message ?? `The request failed (${res.status} ${res.statusText}).`)
  return data
}
const listOf = (data, key) => (Array.isArray(data) ? data : data?.[key] ?? data?.items ?? [])

// ---- session -----------------------------------------------------------------------------------

function claims() {
  try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))) } catch { return {} }
}
const isAdmin = () => claims().role === "admin"

function logout(message) {
  localStorage.removeItem(TOKEN_KEY)
  token = null
  location.hash = "#/login"
  if (message) showBanner(message)
}

function showBanner(message, kind = "error") {
  const b = $("#banner")
  b.textContent = message
  b.className = `banner ${kind === "info" ? "info" : ""}`
  b.hidden = !message
}

// ---- pages -------------------------------------------------------------------------------------

function loginPage() {
  $("#nav").hidden = true
  $("#main").innerHTML = `
    <div class="card" style="max-width:520px;margin:2rem auto">
      <h1>Log in</h1>
      <p class="muted">Paste the access token (a JWT) your administrator gave you. A local quick start prints one at start.</p>
      <form id="login" class="inline">
        <label style="flex:1">Token <input name="token" autocomplete="off" required data-testid="token-input"></label>
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

const ago = (iso) => {
  if (!iso) return "never"
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

async function agentsPage() {
  const agents = listOf(await api("GET", "/agents"), "agents")
  const admin = isAdmin()
  $("#main").innerHTML = `
    <h1>Agents</h1>
    <div class="table-wrap"><table data-testid="agents">
      <thead><tr><th>Agent</th><th>Status</th><th>Region</th><th>Capacity</th><th>Sessions</th><th>Last heartbeat</th><th>Enrolment</th>${admin ? "<th></th>" : ""}</tr></thead>
      <tbody>${agents.length === 0 ? `<tr><td colspan="8" class="muted">No agent has connected yet. Start one with AGENT_ID and CONTROL_PLANE_URL set.</td></tr>` : ""}
      ${agents.map((a) => `<tr data-agent="${esc(a.id)}">
        <td>${esc(a.id)}</td>
        <td><span class="badge ${esc(a.status)}" data-testid="agent-status">${esc(a.status)}</span></td>
        <td>${esc(a.region || "—")}</td>
        <td>${a.capacity ? `${esc(a.capacity.cpu)} CPU, ${esc(a.capacity.memory)}, ${esc(a.capacity.max_sessions)} sessions` : "—"}</td>
        <td>${esc(a.active_sessions ?? 0)}</td>
        <td>${esc(ago(a.last_heartbeat))}</td>
        <td><span class="badge ${esc(a.enrollment)}">${esc(a.enrollment ?? "—")}</span></td>
        ${admin ? `<td class="actions">
          ${a.enrollment === "pending" ? `<button data-act="approve">Approve</button><button class="danger" data-act="reject">Reject</button>` : ""}
          ${a.enrollment === "approved" ? (a.status === "draining" || a.draining ? `<button class="secondary" data-act="undrain">Undrain</button>` : `<button class="secondary" data-act="drain">Drain</button>`) : ""}
        </td>` : ""}
      </tr>`).join("")}
      </tbody></table></div>`
  for (const btn of document.querySelectorAll("[data-agent] button")) {
    btn.onclick = async () => {
      const id = btn.closest("[data-agent]").dataset.agent
      const act = btn.dataset.act
      btn.disabled = true
      try {
        if (act === "drain" || act === "undrain") await api("PATCH", `/agents/${encodeURIComponent(id)}`, { status: act === "drain" ? "offline" : "online" })
        else await api("POST", `/agents/${encodeURIComponent(id)}/${act}`)
        showBanner("")
      } catch (e) { showBanner(e.message) }
      render()
    }
  }
}

function progress(state) {
  const at = PHASES.indexOf(state)
  if (at < 0) return ""
  return `<span class="progress" title="${esc(state)}">${PHASES.map((_, i) => `<i class="${i < at || state === "running" ? "done" : i === at ? "now" : ""}"></i>`).join("")}</span>`
}

async function sessionsPage() {
  const [sessions, templates] = await Promise.all([api("GET", "/sessions"), api("GET", "/templates")])
  const list = listOf(sessions, "sessions")
  const tpls = listOf(templates, "templates")
  const keep = $("#create") ? new FormData($("#create")) : undefined
  $("#main").innerHTML = `
    <h1>Sessions</h1>
    <div class="card">
      <form id="create" class="inline">
        <label>Template <select name="template" data-testid="template-select">${tpls.map((t) => `<option value="${esc(t.name)}">${esc(t.display_name || t.name)}</option>`).join("")}</select></label>
        <label>Region (optional) <input name="region" placeholder="any"></label>
        <button data-testid="create-session" ${tpls.length ? "" : "disabled"}>New session</button>
      </form>
    </div>
    <div class="table-wrap"><table data-testid="sessions">
      <thead><tr><th>Session</th><th>State</th><th>Template</th><th>Agent</th><th>Created</th><th></th></tr></thead>
      <tbody>${list.length === 0 ? `<tr><td colspan="6" class="muted">No sessions yet.</td></tr>` : ""}
      ${list.map((s) => `<tr data-session="${esc(s.id)}">
        <td>${esc(s.id)}</td>
        <td><span class="badge ${esc(s.state)}" data-testid="session-state">${esc(s.state)}</span>${progress(s.state)}
          ${s.state === "failed" || s.reason ? `<div class="reason">${esc(s.reason ?? "")}${s.message ? `: ${esc(s.message)}` : ""}</div>` : ""}</td>
        <td>${esc(s.template)}</td>
        <td>${esc(s.agent_id ?? "—")}</td>
        <td>${esc(ago(s.created_at))}</td>
        <td class="actions">
          ${s.state === "running" ? `<a href="#/sessions/${encodeURIComponent(s.id)}/view"><button data-testid="view-session">View</button></a>` : ""}
          ${s.state !== "terminated" && s.state !== "terminating" ? `<button class="danger" data-act="delete" data-testid="delete-session">Delete</button>` : ""}
        </td>
      </tr>`).join("")}
      </tbody></table></div>`
  if (keep) for (const [k, v] of keep) { const el = $(`#create [name="${k}"]`); if (el) el.value = v }
  $("#create").onsubmit = async (e) => {
    e.preventDefault()
    const form = new FormData(e.target)
    const body = { template: form.get("template") }
    if (form.get("region")) body.region = form.get("region")
    e.submitter && (e.submitter.disabled = true)
    try {
      await api("POST", "/sessions", body)
      showBanner("")
    } catch (err) { showBanner(err.message) }
    render()
  }
  for (const btn of document.querySelectorAll("[data-session] [data-act=delete]")) {
    btn.onclick = async () => {
      btn.disabled = true
      try { await api("DELETE", `/sessions/${encodeURIComponent(btn.closest("[data-session]").dataset.session)}`); showBanner("") } catch (e) { showBanner(e.message) }
      render()
    }
  }
}

async function templatesPage() {
  const tpls = listOf(await api("GET", "/templates"), "templates")
  $("#main").innerHTML = `
    <h1>Templates</h1>
    ${isAdmin() ? `<div class="card"><form id="tpl" class="inline">
      <label>Name <input name="name" required pattern="[a-z0-9]([-a-z0-9]*[a-z0-9])?" placeholder="firefox"></label>
      <label>Display name <input name="display_name" required></label>
      <label>Image <input name="image" required placeholder="registry/image:tag"></label>
      <label>CPU <input name="cpu" value="1000m" size="6"></label>
      <label>Memory <input name="memory" value="2Gi" size="6"></label>
      <label>VNC port <input name="vnc_port" value="5900" size="5"></label>
      <label>Home <select name="persistent_home"><option value="false">ephemeral</option><option value="true">persistent</option></select></label>
      <button>Add template</button></form></div>` : ""}
    <div class="table-wrap"><table data-testid="templates">
      <thead><tr><th>Name</th><th>Display name</th><th>Image</th><th>Resources</th><th>VNC port</th><th>Home</th></tr></thead>
      <tbody>${tpls.map((t) => `<tr><td>${esc(t.name)}</td><td>${esc(t.display_name)}</td><td>${esc(t.image)}</td>
        <td>${esc(t.cpu ?? t.resources?.cpu ?? "")} / ${esc(t.memory ?? t.resources?.memory ?? "")}</td><td>${esc(t.vnc_port)}</td>
        <td>${t.persistent_home ? "persistent" : "ephemeral"}</td></tr>`).join("")}</tbody></table></div>`
  const form = $("#tpl")
  if (form) form.onsubmit = async (e) => {
    e.preventDefault()
    const f = new FormData(form)
    try {
      await api("POST", "/templates", {
        name: f.get("name"), display_name: f.get("display_name"), image: f.get("image"),
        resources: { cpu: f.get("cpu"), memory: f.get("memory") },
        vnc_port: Number(f.get("vnc_port")), persistent_home: f.get("persistent_home") === "true"
      })
      showBanner("")
    } catch (err) { showBanner(err.message) }
    render()
  }
}

async function viewerPage(id) {
  $("#main").innerHTML = `
    <div class="viewer-bar">
      <a href="#/sessions">← Sessions</a>
      <strong>${esc(id)}</strong>
      <span id="vstatus" class="muted" data-testid="viewer-status">Connecting…</span>
    </div>
    <div id="screen" data-testid="screen"></div>`
  const { ticket } = await api("POST", `/sessions/${encodeURIComponent(id)}/vnc-ticket`)
  const { default: RFB } = await import("/vendor/novnc/core/rfb.js")
  const scheme = location.protocol === "https:" ? "wss" : "ws"
  const url = `${scheme}://${location.host}/api/v1/sessions/${encodeURIComponent(id)}/vnc?ticket=${encodeURIComponent(ticket)}`
  viewer = new RFB($("#screen"), url, { wsProtocols: ["binary"] })
  viewer.scaleViewport = true
  viewer.focusOnClick = true
  viewer.addEventListener("connect", () => { $("#vstatus").textContent = "Connected"; viewer.focus() })
  viewer.addEventListener("disconnect", (e) => {
    const s = $("#vstatus")
    if (s) s.textContent = e.detail.clean ? "Disconnected." : "The connection to the session was lost (the session may have stopped). Go back and check its state."
    viewer = undefined
  })
  viewer.addEventListener("credentialsrequired", () => { $("#vstatus").textContent = "The session asks for a VNC password, which this viewer does not have." })
}

// ---- router --------------------------------------------------------------------------------------

async function render() {
  clearTimeout(timer)
  const hash = location.hash || "#/sessions"
  const fromLink = /[#&?]token=([^&]+)/.exec(hash)
  if (fromLink) {
    token = decodeURIComponent(fromLink[1])
    localStorage.setItem(TOKEN_KEY, token)
    history.replaceState(null, "", "#/sessions")
    return render()
  }
  if (!token || hash.startsWith("#/login")) return loginPage()
  const who = claims()
  $("#nav").hidden = false
  $("#who").textContent = `${who.sub ?? "user"}${who.role === "admin" ? " (admin)" : ""}`
  const view = /^#\/sessions\/([^/]+)\/view$/.exec(hash)
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", hash.startsWith(`#/${a.dataset.page}`) && !view)
  if (!view && viewer) { viewer.disconnect(); viewer = undefined }
  try {
    if (view) { if (!viewer) await viewerPage(decodeURIComponent(view[1])); return }
    if (hash.startsWith("#/agents")) await agentsPage()
    else if (hash.startsWith("#/templates")) await templatesPage()
    else await sessionsPage()
  } catch (e) {
    if (e instanceof ApiError) showBanner(e.message)
    else { console.error(e); showBanner("Something went wrong in the page. Reload to try again.") }
  }
  // Live updates: lists refresh every 1.5 s while visible; the templates page only on action.
  if (!view && !hash.startsWith("#/templates")) timer = setTimeout(() => { if (!document.hidden && !document.activeElement?.closest("form")) render(); else timer = setTimeout(render, 1500) }, 1500)
}

$("#logout").onclick = () => logout()
window.addEventListener("hashchange", render)
render()
