// Sharing in the web UI (issue 17): the mark on shared sessions in the list, the panel beside an open viewer
// (who is watching, who has control, request / grant / take back / end, the control mode, and for the owner
// and admins the session's shares and share links), and the page a share link opens (`#share=<token>`: no
// login; the token is exchanged for a single-use viewer ticket). The control plane's proxy enforces all of it;
// this only shows it and asks. Presence is read by long polls on GET /api/v1/sessions/:id/presence?since=.
import { authHeaders } from "./login.js"

const enc = encodeURIComponent
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])
/** How long one presence long poll may take before it is retried (the server answers within 25 s). */
const PRESENCE_TIMEOUT_MS = 35000
const RETRY_MS = 2000
const LINK_TTLS = [["3600", "1 hour"], ["86400", "1 day"], ["604800", "7 days"]]

/** The people (not viewers) among `viewers`; link guests read as "link guest". */
const people = (viewers) => [...new Set(viewers.map((v) => (v.user.startsWith("link:") ? "link guest" : v.user)))]

/** The mark a session shared with the user carries in the sessions list. */
export const sharedMark = (s) =>
  s.shared ? ` <span class="badge shared" data-testid="session-shared" title="Shared with you by ${esc(s.shared.owner)}">shared by ${esc(s.shared.owner)} · ${esc(s.shared.access)}</span>` : ""

/**
 * Adds the sharing panel to an open viewer's page, below `after`. `session` is the API's session (with `shared`
 * when it is someone else's), `viewerId` a function giving the id the viewer's current ticket gave (a new one after each
 * reconnect). Returns a function that removes it.
 */
export function attachSharing({ after, session, viewerId: currentViewerId, token, api, me, showBanner }) {
  const id = session.id
  const manager = !session.shared
  const panel = document.createElement("aside")
  panel.className = "card sharing"
  panel.dataset.testid = "sharing-panel"
  panel.innerHTML = `
    <div class="sharing-head">
      <strong data-testid="control-state" role="status">…</strong>
      <span class="sharing-mine"></span>
      ${manager ? `<label class="mode">Control <select data-testid="control-mode"><option value="exclusive">one at a time</option><option value="shared">everyone who may</option></select></label>` : ""}
    </div>
    <ul class="presence" data-testid="presence"></ul>
    ${manager ? `<details class="share-manage" data-testid="share-manage"><summary>Share this session</summary>
      <form class="inline" data-form="share">
        <label>User <input name="user" required placeholder="user id" size="12" data-testid="share-user"></label>
        <label>Access <select name="access" data-testid="share-access"><option value="view">view only</option><option value="control">may control</option></select></label>
        <button data-testid="share-add">Share</button>
      </form>
      <ul class="shares" data-testid="shares"></ul>
      <form class="inline" data-form="link">
        <label>Link <select name="access" data-testid="link-access"><option value="view">view only</option><option value="control">may control</option></select></label>
        <label>Expires after <select name="ttl">${LINK_TTLS.map(([v, t]) => `<option value="${v}">${t}</option>`).join("")}</select></label>
        <button data-testid="link-create">Create link</button>
      </form>
      <div class="new-link" data-testid="new-link" hidden></div>
      <ul class="links" data-testid="links"></ul>
    </details>` : ""}`
  after.after(panel)

  let stopped = false
  let presence = undefined
  const abort = new AbortController()
  const act = async (fn) => {
    try { await fn(); showBanner("") } catch (err) { showBanner(err.message) }
  }
  const control = (action, viewer) => act(async () => render(await api("POST", `/sessions/${enc(id)}/control/${action}`, viewer ? { viewer } : undefined)))

  function render(p) {
    presence = p
    const mine = p.viewers.find((v) => v.id === currentViewerId())
    const holders = p.viewers.filter((v) => v.control)
    const controllingUser = p.viewers.some((v) => v.control && v.user === me)
    const state = panel.querySelector("[data-testid=control-state]")
    state.textContent = !mine ? "Connecting…"
      : mine.control ? (p.mode === "shared" ? "You have control (shared)" : "You have control")
      : mine.access === "view" ? "View only: your keys and clicks are not sent"
      : holders.length ? `${people(holders).join(", ")} ${people(holders).length > 1 ? "have" : "has"} control` : "Nobody has control"
    state.className = mine?.control ? "ok" : "muted"
    const buttons = []
    if (mine && !mine.control && mine.access !== "view") {
      buttons.push(manager ? `<button data-act="take" data-testid="take-control">Take control</button>`
        : mine.requested ? `<span class="muted small" data-testid="control-requested">control requested</span>`
        : `<button data-act="request" data-testid="request-control">Request control</button>`)
    }
    if (mine?.control && p.mode === "exclusive") buttons.push(`<button class="secondary" data-act="release-mine" data-testid="release-control">Give up control</button>`)
    panel.querySelector(".sharing-mine").innerHTML = buttons.join(" ")
    const mode = panel.querySelector("[data-testid=control-mode]")
    if (mode && document.activeElement !== mode) mode.value = p.mode
    panel.querySelector("[data-testid=presence]").innerHTML = p.viewers.map((v) => {
      const acts = []
      if (v.id !== currentViewerId() && !v.control && v.access !== "view" && (manager || controllingUser)) acts.push(`<button class="secondary" data-act="grant" data-testid="grant-control">${v.requested ? "Grant requested control" : "Give control"}</button>`)
      if (v.id !== currentViewerId() && v.control && manager) acts.push(`<button class="secondary" data-act="release" data-testid="revoke-control">Take back</button>`)
      if (v.id !== currentViewerId() && manager) acts.push(`<button class="danger" data-act="end" data-testid="end-viewer">End</button>`)
      return `<li data-viewer="${esc(v.id)}" data-user="${esc(v.user)}">
        <span>${esc(v.user.startsWith("link:") ? "link guest" : v.user)}${v.id === currentViewerId() ? " (you)" : ""}</span>
        <span class="badge ${v.control ? "running" : ""}">${v.control ? "control" : v.access === "view" ? "viewing (view only)" : "viewing"}</span>
        ${v.requested ? `<span class="badge pending" data-testid="requested">asks for control</span>` : ""}
        ${acts.join(" ")}</li>`
    }).join("")
  }

  panel.onclick = (e) => {
    const btn = e.target.closest("button[data-act]")
    if (!btn) return
    const target = btn.closest("[data-viewer]")?.dataset.viewer
    switch (btn.dataset.act) {
      case "request": return control("request", currentViewerId())
      case "take": return control("take", currentViewerId())
      case "release-mine": return control("release", currentViewerId())
      case "grant": return control("grant", target)
      case "release": return control("release", target)
      case "end": return act(() => api("DELETE", `/sessions/${enc(id)}/viewers/${enc(target)}`))
      case "unshare": return act(async () => { await api("DELETE", `/sessions/${enc(id)}/shares/${enc(btn.dataset.user)}`); await loadShares() })
      case "revoke": return act(async () => { await api("DELETE", `/sessions/${enc(id)}/share-links/${enc(btn.dataset.link)}`); await loadShares() })
      case "copy": return act(() => navigator.clipboard.writeText(btn.dataset.url))
    }
  }
  panel.onchange = (e) => {
    if (e.target.dataset.testid === "control-mode") act(async () => render(await api("PUT", `/sessions/${enc(id)}/control-mode`, { mode: e.target.value })))
  }
  panel.onsubmit = (e) => {
    e.preventDefault()
    const f = new FormData(e.target)
    if (e.target.dataset.form === "share") {
      return act(async () => {
        await api("POST", `/sessions/${enc(id)}/shares`, { user: String(f.get("user")).trim(), access: f.get("access") })
        e.target.reset()
        await loadShares()
      })
    }
    return act(async () => {
      const link = await api("POST", `/sessions/${enc(id)}/share-links`, { access: f.get("access"), ttl_seconds: Number(f.get("ttl")) })
      const url = link.url.startsWith("/") || link.url.startsWith("#") ? `${location.origin}/${link.url.replace(/^\//, "")}` : link.url
      const box = panel.querySelector("[data-testid=new-link]")
      box.hidden = false
      box.innerHTML = `<span class="small">New link (shown once; anyone with it can ${link.access === "view" ? "watch" : "watch and control"} until ${esc(new Date(link.expires_at).toLocaleString())}):</span>
        <input readonly value="${esc(url)}" data-testid="new-link-url" size="40"> <button class="secondary" data-act="copy" data-url="${esc(url)}" data-testid="copy-link">Copy</button>`
      await loadShares()
    })
  }

  async function loadShares() {
    if (!manager) return
    const [{ shares }, { links }] = await Promise.all([api("GET", `/sessions/${enc(id)}/shares`), api("GET", `/sessions/${enc(id)}/share-links`)])
    panel.querySelector("[data-testid=shares]").innerHTML = shares.map((s) =>
      `<li data-share="${esc(s.user)}">${esc(s.user)} <span class="badge">${esc(s.access)}</span> <button class="danger" data-act="unshare" data-user="${esc(s.user)}" data-testid="unshare">Remove</button></li>`).join("")
    panel.querySelector("[data-testid=links]").innerHTML = links.filter((l) => l.active).map((l) =>
      `<li data-link="${esc(l.id)}">link ${esc(l.id)} <span class="badge">${esc(l.access)}</span> <span class="muted small">expires ${esc(new Date(l.expires_at).toLocaleString())} · used ${esc(l.uses)}×</span>
        <button class="danger" data-act="revoke" data-link="${esc(l.id)}" data-testid="revoke-link">Revoke</button></li>`).join("")
  }

  async function follow() {
    while (!stopped) {
      try {
        const query = presence ? `?since=${presence.version}` : ""
        const res = await fetch(`/api/v1/sessions/${enc(id)}/presence${query}`, {
          headers: authHeaders("GET", token),
          signal: AbortSignal.any([abort.signal, AbortSignal.timeout(PRESENCE_TIMEOUT_MS)])
        })
        if (res.status === 404) return
        if (!res.ok) throw new Error(`presence: ${res.status}`)
        render(await res.json())
      } catch {
        if (stopped) return
        await new Promise((r) => setTimeout(r, RETRY_MS))
      }
    }
  }
  follow()
  loadShares().catch((err) => showBanner(err.message))
  return () => {
    stopped = true
    abort.abort()
    panel.remove()
  }
}

/**
 * The page a share link opens: exchanges the token for a ticket (no login) and opens the viewer. Resolves with
 * the noVNC RFB object (the caller disconnects it when the page changes), or undefined when the link is no good.
 */
export async function mountLinkViewer(main, linkToken) {
  main.innerHTML = `
    <div class="viewer-bar">
      <strong>Shared session</strong>
      <span id="vstatus" class="muted" data-testid="viewer-status" role="status">Opening the link…</span>
    </div>
    <div id="screen" data-testid="screen"></div>`
  const status = (text, kind = "muted") => {
    const s = main.querySelector("#vstatus")
    if (s) { s.textContent = text; s.className = kind }
  }
  const res = await fetch("/api/v1/share-links/redeem", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token: linkToken }) })
  const data = await res.json().catch(() => undefined)
  if (!res.ok) {
    status(res.status === 410 ? "This share link has expired, was revoked or was used up. Ask for a new one." : data?.error?.message ?? `The link could not be opened (${res.status}).`, "reason")
    return undefined
  }
  const { default: RFB } = await import("/vendor/novnc/core/rfb.js")
  const scheme = location.protocol === "https:" ? "wss" : "ws"
  const rfb = new RFB(main.querySelector("#screen"), `${scheme}://${location.host}${data.url}`, { wsProtocols: ["binary"] })
  rfb.scaleViewport = true
  rfb.addEventListener("connect", () => status(data.access === "view" ? "Watching (view only)." : "Connected. Click the desktop to type when you have control.", "ok"))
  rfb.addEventListener("disconnect", (e) => status(e.detail.clean ? "Disconnected: the link was revoked or the session ended." : "The connection to the session was lost.", e.detail.clean ? "muted" : "reason"))
  return rfb
}
