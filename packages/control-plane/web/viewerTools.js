// The viewer's toolbar: frame rate and round trip, fullscreen, a keys menu (keys the browser would eat), and the
// clipboard (the async Clipboard API where the browser allows it, a panel always).
//
//   mountViewerTools(bar, viewer, { screen })   // bar: the element the controls are appended to
//
// Clipboard: text the desktop copies (ServerCutText, UTF-8 through noVNC's extended clipboard when the server
// offers it) appears in the panel and, where the browser lets the page write the clipboard, in the local one.
// Text the user sends (the panel's Send, or the local clipboard read when the desktop gets focus where the
// browser allows it) goes as ClientCutText. The control plane may block either direction per template.

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])

// X11 keysyms (noVNC's KeyTable) and the DOM codes noVNC passes along.
const XK = { Control_L: 0xffe3, Alt_L: 0xffe9, Super_L: 0xffeb, Delete: 0xffff, Tab: 0xff09, Escape: 0xff1b, BackSpace: 0xff08, F1: 0xffbe, Print: 0xff61 }
const CODES = { [XK.Control_L]: "ControlLeft", [XK.Alt_L]: "AltLeft", [XK.Super_L]: "MetaLeft", [XK.Delete]: "Delete", [XK.Tab]: "Tab", [XK.Escape]: "Escape", [XK.BackSpace]: "Backspace", [XK.Print]: "PrintScreen" }
const fkey = (n) => XK.F1 + n - 1

/** Key combinations the browser or the operating system keeps for itself. */
export const KEY_COMBOS = [
  { id: "ctrl-alt-del", label: "Ctrl+Alt+Del", keys: [XK.Control_L, XK.Alt_L, XK.Delete] },
  { id: "ctrl-alt-backspace", label: "Ctrl+Alt+Backspace", keys: [XK.Control_L, XK.Alt_L, XK.BackSpace] },
  { id: "alt-tab", label: "Alt+Tab", keys: [XK.Alt_L, XK.Tab] },
  { id: "alt-f4", label: "Alt+F4", keys: [XK.Alt_L, fkey(4)] },
  { id: "ctrl-w", label: "Ctrl+W", keys: [XK.Control_L, 0x0077] },
  { id: "ctrl-t", label: "Ctrl+T", keys: [XK.Control_L, 0x0074] },
  { id: "ctrl-n", label: "Ctrl+N", keys: [XK.Control_L, 0x006e] },
  { id: "escape", label: "Esc", keys: [XK.Escape] },
  { id: "super", label: "Super (Windows key)", keys: [XK.Super_L] },
  { id: "print", label: "Print Screen", keys: [XK.Print] },
  { id: "f11", label: "F11", keys: [fkey(11)] },
  { id: "f12", label: "F12", keys: [fkey(12)] }
]

/** Presses the keys in order and releases them in reverse. */
export function sendCombo(rfb, keys) {
  for (const k of keys) rfb.sendKey(k, CODES[k] ?? null, true)
  for (const k of [...keys].reverse()) rfb.sendKey(k, CODES[k] ?? null, false)
}

export function mountViewerTools(bar, viewer, { screen }) {
  const tools = document.createElement("span")
  tools.className = "viewer-tools"
  tools.innerHTML = `
    <span class="muted small" data-testid="viewer-stats" title="Frame rate: screen updates drawn per second. Round trip: an API request from this browser to the control plane and back (not to the desktop itself).">– fps · – ms</span>
    <span class="keys-menu">
      <button class="secondary" data-testid="keys-button" aria-haspopup="true" aria-expanded="false">Keys ▾</button>
      <span class="menu" data-testid="keys-menu" role="menu" hidden>
        ${KEY_COMBOS.map((c) => `<button role="menuitem" class="secondary" data-combo="${esc(c.id)}" data-testid="key-${esc(c.id)}">${esc(c.label)}</button>`).join("")}
      </span>
    </span>
    <button class="secondary" data-testid="clipboard-button" aria-expanded="false">Clipboard</button>
    <button class="secondary" data-testid="fullscreen-button">Fullscreen</button>`
  bar.append(tools)
  const panel = document.createElement("div")
  panel.className = "card clipboard-panel"
  panel.hidden = true
  panel.dataset.testid = "clipboard-panel"
  panel.innerHTML = `
    <label>Desktop clipboard <span class="muted small">(text the desktop copied; also copied to this computer where the browser allows it)</span>
      <textarea readonly rows="3" data-testid="clipboard-from-desktop"></textarea></label>
    <label>Send to the desktop <textarea rows="3" data-testid="clipboard-to-desktop" placeholder="Paste text here, then Send"></textarea></label>
    <div class="inline"><button data-testid="clipboard-send">Send</button><span class="muted small" data-testid="clipboard-note"></span></div>`
  bar.after(panel)

  const $ = (sel) => tools.querySelector(sel) ?? panel.querySelector(sel)
  const stats = $("[data-testid=viewer-stats]")
  const menu = $("[data-testid=keys-menu]")
  const keysButton = $("[data-testid=keys-button]")
  const note = (text) => { $("[data-testid=clipboard-note]").textContent = text }

  viewer.events.addEventListener("stats", (e) => {
    const { fps, rttMs } = e.detail
    stats.textContent = `${fps} fps · ${rttMs === undefined ? "–" : rttMs} ms`
    stats.dataset.fps = String(fps)
    stats.dataset.rtt = rttMs === undefined ? "" : String(rttMs)
  })
  viewer.events.addEventListener("status", (e) => {
    if (e.detail.state !== "connected") stats.textContent = "– fps · – ms"
  })

  keysButton.onclick = () => {
    menu.hidden = !menu.hidden
    keysButton.setAttribute("aria-expanded", String(!menu.hidden))
  }
  menu.onclick = (e) => {
    const b = e.target.closest("button[data-combo]")
    if (!b || !viewer.rfb) return
    const combo = KEY_COMBOS.find((c) => c.id === b.dataset.combo)
    if (combo.id === "ctrl-alt-del") viewer.rfb.sendCtrlAltDel()
    else sendCombo(viewer.rfb, combo.keys)
    menu.hidden = true
    keysButton.setAttribute("aria-expanded", "false")
    viewer.rfb.focus()
  }

  const fullscreen = $("[data-testid=fullscreen-button]")
  fullscreen.onclick = async () => {
    try {
      if (document.fullscreenElement) await document.exitFullscreen()
      else await screen.requestFullscreen()
    } catch {
      fullscreen.title = "This browser did not allow fullscreen."
    }
  }
  document.addEventListener("fullscreenchange", () => {
    fullscreen.textContent = document.fullscreenElement ? "Exit fullscreen" : "Fullscreen"
  })

  // ---- clipboard
  const clipButton = $("[data-testid=clipboard-button]")
  clipButton.onclick = () => {
    panel.hidden = !panel.hidden
    clipButton.setAttribute("aria-expanded", String(!panel.hidden))
  }
  let lastSent
  const send = (text, how) => {
    if (!viewer.rfb || typeof text !== "string") return
    viewer.rfb.clipboardPasteFrom(text)
    lastSent = text
    note(`Sent ${text.length} characters ${how}.`)
  }
  $("[data-testid=clipboard-send]").onclick = () => send($("[data-testid=clipboard-to-desktop]").value, "from the panel")
  const hook = (rfb) => {
    rfb.addEventListener("clipboard", async (e) => {
      const text = e.detail.text
      $("[data-testid=clipboard-from-desktop]").value = text
      lastSent = text
      try { await navigator.clipboard?.writeText(text) } catch { /* not allowed here: the panel shows it */ }
    })
  }
  // Where the browser lets the page read the clipboard (Chromium with the permission), the local clipboard goes
  // to the desktop when the desktop gets focus; elsewhere the panel is the way.
  screen.addEventListener("focusin", async () => {
    if (!viewer.rfb || !navigator.clipboard?.readText) return
    try {
      const text = await navigator.clipboard.readText()
      if (text && text !== lastSent) send(text, "from this computer's clipboard")
    } catch { /* no permission: the panel is the way */ }
  })
  viewer.events.addEventListener("connect", (e) => hook(e.detail.rfb))
  return { panel, tools }
}
