// Shared test helpers: connecting RFB clients, reading raw bytes, and capturing server log lines.
import { waitForPromise } from "@streamspace/testbed"
import * as net from "node:net"
import { defaultPixelFormat, writePixelFormat } from "../src/internal/PixelFormat.ts"
import { RfbClient, type RfbClientOptions, type RunningVncTestServer, start, type StartOptions } from "../src/index.ts"

export interface LogLine {
  readonly level: string
  readonly message: string
}

/** Starts a server on a free port whose log lines are collected into `logs`. */
export const startServer = async (options: StartOptions = {}): Promise<RunningVncTestServer & { logs: Array<LogLine> }> => {
  const logs: Array<LogLine> = []
  const server = await start({ width: 320, height: 200, frameRate: 50, ...options, log: (level, message) => logs.push({ level, message }) })
  return Object.assign(server, { logs })
}

export const connect = (server: { host: string; port: number }, options: RfbClientOptions = {}): Promise<RfbClient> =>
  RfbClient.connect(net.connect(server.port, server.host), options)

/** A raw TCP connection with helpers to read exact byte counts and to see the close. */
export const rawConnect = async (server: { host: string; port: number }) => {
  const socket = net.connect(server.port, server.host)
  await new Promise<void>((resolve, reject) => socket.once("connect", resolve).once("error", reject))
  let data = Buffer.alloc(0)
  let closed = false
  socket.on("data", (c: Buffer) => {
    data = Buffer.concat([data, c])
  })
  socket.on("error", () => {})
  socket.on("close", () => {
    closed = true
  })
  return {
    socket,
    /** Waits until at least n bytes have arrived since the last take, returns them. */
    take: async (n: number): Promise<Buffer> => {
      await waitForPromise(`${n} bytes`, () => data.length >= n || (closed ? Promise.reject(new Error("closed")) : false))
      const out = data.subarray(0, n)
      data = data.subarray(n)
      return out
    },
    waitClosed: () => waitForPromise("the server to close the connection", () => closed),
    get closed() {
      return closed
    }
  }
}

/** Requests incremental updates until `check` passes on the client's framebuffer. */
export const updateUntil = (client: RfbClient, what: string, check: () => boolean): Promise<true> =>
  waitForPromise(what, async () => check() || (await client.update(true), false), { interval: 0 })

/** A one-connection server that runs `script` with a function reading exact byte counts. */
export const scripted = async (script: (socket: net.Socket, read: (n: number) => Promise<Buffer>) => Promise<void>) => {
  const server = net.createServer((socket) => {
    let buf = Buffer.alloc(0)
    let wake = () => {}
    socket.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      wake()
    })
    socket.on("error", () => {})
    const read = async (n: number) => {
      while (buf.length < n) await new Promise<void>((r) => (wake = r))
      const out = buf.subarray(0, n)
      buf = buf.subarray(n)
      return out
    }
    void script(socket, read)
  })
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  const { port } = server.address() as net.AddressInfo
  return { port, close: () => new Promise<void>((r) => server.close(() => r())) }
}

/** ServerInit in the default 32 bpp format. */
export const serverInit = (w: number, h: number, name: string) => {
  const msg = Buffer.alloc(24 + name.length)
  msg.writeUInt16BE(w, 0)
  msg.writeUInt16BE(h, 2)
  writePixelFormat(msg, 4, defaultPixelFormat)
  msg.writeUInt32BE(name.length, 20)
  msg.write(name, 24, "latin1")
  return msg
}
