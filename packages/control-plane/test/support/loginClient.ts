// A small browser for login tests without Chromium: fetch with a cookie jar per host, redirects followed by
// hand, and the provider's development login and consent forms filled in.
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"

export interface Page {
  readonly url: URL
  readonly status: number
  readonly text: string
}

export const freePort = () =>
  new Promise<number>((resolve) => {
    const probe = createServer().listen(0, "127.0.0.1", () => {
      const port = (probe.address() as AddressInfo).port
      probe.close(() => resolve(port))
    })
  })

export const makeBrowser = () => {
  const jar = new Map<string, Map<string, string>>()
  const cookiesOf = (host: string) => {
    let m = jar.get(host)
    if (m === undefined) jar.set(host, m = new Map())
    return m
  }
  const send = async (url: URL, init: RequestInit = {}) => {
    const headers = new Headers(init.headers)
    const cookies = [...cookiesOf(url.host)].map(([k, v]) => `${k}=${v}`).join("; ")
    if (cookies !== "") headers.set("cookie", cookies)
    const res = await fetch(url, { ...init, headers, redirect: "manual" })
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(";")
      const eq = pair!.indexOf("=")
      const name = pair!.slice(0, eq).trim()
      const value = pair!.slice(eq + 1).trim()
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a) || (/^\s*expires=/i.test(a) && new Date(a.split("=")[1]!).getTime() < Date.now()))
      if (expired || value === "") cookiesOf(url.host).delete(name)
      else cookiesOf(url.host).set(name, value)
    }
    return res
  }
  /** Requests `url` and follows redirects (as GET) to the page at the end. */
  const go = async (url: string | URL, init: RequestInit = {}): Promise<Page> => {
    let at = new URL(url)
    let res = await send(at, init)
    for (let hops = 0; res.status >= 300 && res.status < 400 && hops < 20; hops++) {
      at = new URL(res.headers.get("location")!, at)
      res = await send(at)
    }
    return { url: at, status: res.status, text: await res.text() }
  }
  const submit = (page: Page, fields: Record<string, string>) => {
    const action = /<form[^>]*action="([^"]+)"/.exec(page.text)?.[1]
    if (action === undefined) throw new Error(`no form on ${page.url.href}: ${page.text.slice(0, 300)}`)
    return go(new URL(action.replaceAll("&amp;", "&"), page.url), {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(fields).toString()
    })
  }
  /** Logs in through the control plane's /auth/login, the provider's login page and its consent page. */
  const login = async (base: string, account: string): Promise<Page> => {
    const loginPage = await go(`${base}/auth/login`)
    if (!loginPage.text.includes('name="login"')) return loginPage // an error page before the provider
    let page = await submit(loginPage, { prompt: "login", login: account, password: "any" })
    if (page.text.includes('name="prompt" value="consent"')) page = await submit(page, { prompt: "consent" })
    return page
  }
  return { go, send, submit, login, cookie: (host: string, name: string) => cookiesOf(host).get(name), jar }
}
