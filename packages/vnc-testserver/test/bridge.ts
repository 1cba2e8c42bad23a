// A WebSocket-to-TCP bridge for browser tests: one HTTP port on 127.0.0.1 that serves a tiny noVNC
// page and the noVNC ES modules from node_modules, and upgrades /websockify to a TCP connection
// to the RFB server (like websockify does in front of a real VNC server).
import { readFile } from "node:fs/promises"
import * as http from "node:http"
import { createRequire } from "node:module"
import * as net from "node:net"
import * as path from "node:path"
import { WebSocketServer } from "ws"

const require = createRequire(import.meta.url)
// the package exports only core/rfb.js; the files we serve sit around it
const novncRoot = path.dirname(path.dirname(require.resolve("@novnc/novnc")))

const page = (width: number, height: number) => `<!doctype html>
<html><head><meta charset="utf-8"><title>noVNC test</title></head>
<body style="margin:0;background:#000">
<div id="screen" style="width:${width}px;height:${height}px"></div>
<script type="module">
import RFB from "/novnc/core/rfb.js"
const params = new URLSearchParams(location.search)
const options = params.has("password") ? { credentials: { password: params.get("password") } } : {}
const rfb = new RFB(document.getElementById("screen"), "ws://" + location.host + "/websockify", options)
window.vnc = { RFB, rfb, connected: false, disconnected: false, clipboard: null, desktopName: null }
rfb.addEventListener("connect", () => { window.vnc.connected = true })
rfb.addEventListener("disconnect", (e) => { window.vnc.disconnected = true; window.vnc.clean = e.detail.clean })
rfb.addEventListener("securityfailure", (e) => { window.vnc.securityFailure = e.detail.reason ?? String(e.detail.status) })
rfb.addEventListener("clipboard", (e) => { window.vnc.clipboard = e.detail.text })
rfb.addEventListener("desktopname", (e) => { window.vnc.desktopName = e.detail.name })
</script>
</body></html>`

export interface Bridge {
  readonly url: string
  readonly close: () => Promise<void>
}

export const startBridge = async (target: { host: string; port: number; width: number; height: number }): Promise<Bridge> => {
  const sockets = new Set<net.Socket>()
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost")
    if (url.pathname === "/") {
      res.writeHead(200, { "content-type": "text/html" }).end(page(target.width, target.height))
      return
    }
    const file = path.normalize(path.join(novncRoot, url.pathname.replace(/^\/novnc\//, "")))
    if (!url.pathname.startsWith("/novnc/") || !file.startsWith(novncRoot + path.sep) || !file.endsWith(".js")) {
      res.writeHead(404).end()
      return
    }
    try {
      res.writeHead(200, { "content-type": "text/javascript", "cache-control": "max-age=3600" }).end(await readFile(file))
    } catch {
      res.writeHead(404).end()
    }
  })
  const wss = new WebSocketServer({ server, path: "/websockify" })
  wss.on("connection", (ws) => {
    const tcp = net.connect(target.port, target.host)
    sockets.add(tcp)
    tcp.on("data", (d) => ws.send(d))
    tcp.on("close", () => {
      sockets.delete(tcp)
      ws.close()
    })
    tcp.on("error", () => ws.close())
    ws.on("message", (d: Buffer) => tcp.write(d))
    ws.on("close", () => tcp.destroy())
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const { port } = server.address() as net.AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: async () => {
      for (const s of sockets) s.destroy()
      for (const c of wss.clients) c.terminate()
      await new Promise<void>((resolve) => wss.close(() => resolve()))
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
