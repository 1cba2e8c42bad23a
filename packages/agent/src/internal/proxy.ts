// HTTP CONNECT proxy support for the control-plane WebSocket: an http.Agent whose sockets are tunnels
// opened with `CONNECT host:port` through the proxy, then TLS (wss) or plain (ws) over the tunnel.
// Which proxy applies follows the usual HTTPS_PROXY / HTTP_PROXY / NO_PROXY conventions.
import * as http from "node:http"
import type * as net from "node:net"
import { isIP } from "node:net"
import type { Duplex } from "node:stream"
import * as tls from "node:tls"

export interface ProxySettings {
  readonly httpsProxy: string | undefined
  readonly httpProxy: string | undefined
  readonly noProxy: string | undefined
}

const defaultPort = (url: URL) => (url.port !== "" ? Number(url.port) : url.protocol === "wss:" || url.protocol === "https:" ? 443 : 80)

/** True when NO_PROXY exempts this host (and port): `*`, exact names, domain suffixes (`.example.com` or `example.com`), `host:port`. */
export const bypassesProxy = (target: URL, noProxy: string | undefined): boolean => {
  if (noProxy === undefined) return false
  const host = target.hostname.replace(/^\[|\]$/g, "").toLowerCase()
  const port = defaultPort(target)
  return noProxy.split(/[,\s]+/).map((e) => e.trim().toLowerCase()).filter((e) => e !== "").some((entry) => {
    if (entry === "*") return true
    let name = entry
    const m = /^(.*):(\d+)$/.exec(entry)
    if (m !== null && !entry.includes("]") && (entry.match(/:/g) ?? []).length === 1) {
      if (Number(m[2]) !== port) return false
      name = m[1]!
    }
    name = name.replace(/^\[|\]$/g, "").replace(/^\*?\./, ".")
    if (name.startsWith(".")) return host.endsWith(name) || host === name.slice(1)
    return host === name || host.endsWith(`.${name}`)
  })
}

/** The proxy URL to use for a control-plane URL, or undefined to connect directly. */
export const proxyFor = (target: URL, settings: ProxySettings): URL | undefined => {
  if (bypassesProxy(target, settings.noProxy)) return undefined
  const raw = target.protocol === "wss:" ? settings.httpsProxy ?? settings.httpProxy : settings.httpProxy
  if (raw === undefined) return undefined
  return new URL(raw.includes("://") ? raw : `http://${raw}`)
}

/** Opens sockets to the target through an HTTP CONNECT tunnel. */
export class ConnectProxyAgent extends http.Agent {
  readonly proxy: URL
  readonly secure: boolean
  readonly tlsOptions: tls.ConnectionOptions

  constructor(proxy: URL, secure: boolean, tlsOptions: tls.ConnectionOptions = {}) {
    super({ keepAlive: false })
    // http.ClientRequest insists that the agent's protocol matches the request's (https: for wss).
    ;(this as unknown as { protocol: string }).protocol = secure ? "https:" : "http:"
    this.proxy = proxy
    this.secure = secure
    this.tlsOptions = tlsOptions
  }

  override createConnection(args: http.ClientRequestArgs, callback?: (err: Error | null, stream: Duplex) => void): undefined {
    const options = args as http.ClientRequestArgs & tls.ConnectionOptions
    const host = String(options.host ?? options.hostname ?? "").replace(/^\[|\]$/g, "")
    const port = Number(options.port ?? (this.secure ? 443 : 80))
    const authority = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`
    const headers: Record<string, string> = { host: authority }
    if (this.proxy.username !== "") {
      const user = decodeURIComponent(this.proxy.username)
      const pass = decodeURIComponent(this.proxy.password)
      headers["proxy-authorization"] = `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`
    }
    let done = false
    const finish = (err: Error | null, socket?: net.Socket) => {
      if (done) return
      done = true
      callback?.(err, socket as net.Socket)
    }
    const req = http.request({
      host: this.proxy.hostname.replace(/^\[|\]$/g, ""),
      port: this.proxy.port === "" ? 80 : Number(this.proxy.port),
      method: "CONNECT",
      path: authority,
      headers,
      agent: false
    })
    req.once("connect", (res, socket, head) => {
      if (res.statusCode !== 200) {
        socket.destroy()
        finish(new Error(`proxy ${this.proxy.host} refused CONNECT ${authority}: HTTP ${res.statusCode}`))
        return
      }
      if (head.length > 0) socket.unshift(head)
      if (!this.secure) {
        finish(null, socket)
        return
      }
      // Verify the certificate against the control plane's host, not the proxy's; SNI only for names.
      const servername = options.servername ?? (isIP(host) === 0 ? host : undefined)
      const secured = tls.connect({
        ...this.tlsOptions,
        ...(options.ca !== undefined ? { ca: options.ca } : {}),
        socket,
        host,
        ...(servername !== undefined && servername !== "" ? { servername } : {})
      })
      secured.once("secureConnect", () => finish(null, secured))
      secured.once("error", (e) => finish(e))
    })
    req.once("error", (e) => finish(new Error(`proxy ${this.proxy.host} unreachable: ${e.message}`)))
    req.end()
    return undefined
  }
}
