// How the web UI is logged in: with the browser's login cookie from "Log in with <provider>" (OpenID Connect;
// the cookie is HttpOnly, so the page never holds a credential: it asks GET /auth/me who it is and for the
// login's CSRF token, sent as X-CSRF-Token on every request that changes something), or with a pasted JWT
// (bearer). The control plane's GET /auth/config says whether OIDC is configured and whether it runs in dev mode.
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c])

/** The cookie login ({ user, csrf }) or null; the server's login options ({ oidc, dev_mode }). */
export const state = { cookie: null, config: { oidc: null, dev_mode: false } }

async function getJson(path) {
  try {
    const res = await fetch(path, { credentials: "same-origin", signal: AbortSignal.timeout(10000) })
    return res.ok ? await res.json() : null
  } catch { return null }
}

/** Reads the login options and whether this browser has a cookie login. */
export async function detect() {
  const [config, me] = await Promise.all([getJson("/auth/config"), getJson("/auth/me")])
  if (config) state.config = config
  state.cookie = me && me.csrf_token ? { user: me.user, csrf: me.csrf_token } : null
  const badge = document.getElementById("dev-mode")
  if (badge) badge.hidden = !state.config.dev_mode
  return state
}

/** The headers that authenticate a request: the CSRF token of a cookie login, else the bearer token. */
export function authHeaders(method, token) {
  if (state.cookie) return method === "GET" || method === "HEAD" ? {} : { "x-csrf-token": state.cookie.csrf }
  return token ? { authorization: `Bearer ${token}` } : {}
}

/** Ends the cookie login here and, where the provider supports it, at the provider (the browser goes there). */
export async function logoutCookie() {
  const csrf = state.cookie?.csrf
  state.cookie = null
  try {
    const res = await fetch("/auth/logout", { method: "POST", credentials: "same-origin", headers: csrf ? { "x-csrf-token": csrf } : {} })
    const data = await res.json()
    if (data?.redirect && data.redirect !== location.origin + "/") {
      location.assign(data.redirect)
      return true
    }
  } catch {}
  return false
}

/** The login page's options above the token form: the provider's button, and the dev-mode notice. */
export function loginOptionsHtml() {
  const { oidc, dev_mode } = state.config
  const provider = oidc
    ? `<p><a class="button" href="${esc(oidc.login_url)}?return_to=${encodeURIComponent("/#/sessions")}" data-testid="oidc-login">Log in with ${esc(oidc.provider_name)}</a></p>`
    : ""
  const dev = dev_mode
    ? `<p class="banner dev" data-testid="dev-mode-notice"><strong>Dev mode.</strong> This control plane runs with DEV_MODE=true: the
       one-click login link it printed at start logs in as a local admin. Never use dev mode in production.</p>`
    : ""
  return provider + dev
}
