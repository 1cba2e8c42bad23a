// RfbClient against scripted servers: decoding paths the test server never produces (CopyRect) and
// handshake outcomes it never sends (a refused connection).
import { assert, describe, it } from "@effect/vitest"
import * as net from "node:net"
import { ENCODING_COPYRECT, RfbClient } from "../src/index.ts"
import { scripted, serverInit } from "./helpers.ts"

const rect = (x: number, y: number, w: number, h: number, enc: number) => {
  const b = Buffer.alloc(12)
  b.writeUInt16BE(x, 0)
  b.writeUInt16BE(y, 2)
  b.writeUInt16BE(w, 4)
  b.writeUInt16BE(h, 6)
  b.writeInt32BE(enc, 8)
  return b
}

describe("RfbClient", () => {
  it("decodes CopyRect, including overlapping source and destination", async () => {
    const server = await scripted(async (socket, read) => {
      socket.write("RFB 003.008\n")
      await read(12)
      socket.write(Buffer.from([1, 1]))
      await read(1)
      socket.write(Buffer.alloc(4))
      await read(1)
      socket.write(serverInit(4, 1, "copy"))
      await read(10) // the client's FramebufferUpdateRequest
      // Raw 4x1: pixels 0x000001 .. 0x000004 (blue 1..4), then copy x=0..2 to x=1..3
      const raw = Buffer.alloc(16)
      for (let i = 0; i < 4; i++) raw.writeUInt32LE(i + 1, i * 4)
      const src = Buffer.alloc(4)
      src.writeUInt16BE(0, 0)
      src.writeUInt16BE(0, 2)
      socket.write(Buffer.concat([Buffer.from([0, 0, 0, 2]), rect(0, 0, 4, 1, 0), raw, rect(1, 0, 3, 1, ENCODING_COPYRECT), src]))
    })
    const client = await RfbClient.connect(net.connect(server.port, "127.0.0.1"))
    const u = await client.update(false)
    assert.deepStrictEqual(u.rects.map((r) => r.encoding), [0, ENCODING_COPYRECT])
    assert.deepStrictEqual([0, 1, 2, 3].map((x) => client.pixel(x, 0)[2]), [1, 1, 2, 3])
    client.close()
    await server.close()
  })

  it("reports the reason when a 3.8 server refuses the connection", async () => {
    const server = await scripted(async (socket, read) => {
      socket.write("RFB 003.008\n")
      await read(12)
      const reason = "too many viewers"
      const msg = Buffer.alloc(5 + reason.length)
      msg.writeUInt32BE(reason.length, 1)
      msg.write(reason, 5, "latin1")
      socket.end(msg)
    })
    const err = await RfbClient.connect(net.connect(server.port, "127.0.0.1")).then(() => undefined, (e: Error) => e)
    assert.match(String(err), /connection refused: too many viewers/)
    await server.close()
  })

  it("gives up on a server that never answers, within its timeout", async () => {
    const server = await scripted(async () => {})
    const err = await RfbClient.connect(net.connect(server.port, "127.0.0.1"), { timeout: 200 }).then(() => undefined, (e: Error) => e)
    assert.match(String(err), /timed out after 200 ms waiting for the RFB handshake/)
    await server.close()
  })
})
