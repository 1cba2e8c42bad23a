// Exact-length reads from a Node duplex stream, for the RFB client.
import type { Duplex } from "node:stream"

export class ByteReader {
  private chunks: Array<Buffer> = []
  private buffered = 0
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | undefined
  private ended: Error | undefined

  constructor(stream: Duplex) {
    stream.on("data", (chunk: Buffer) => {
      this.chunks.push(chunk)
      this.buffered += chunk.length
      this.wake()
    })
    const end = (err?: Error) => {
      this.ended ??= err ?? new Error("stream closed")
      this.wake()
    }
    stream.on("end", () => end())
    stream.on("close", () => end())
    stream.on("error", (err) => end(err))
  }

  /** Resolves with exactly n bytes, or rejects once the stream ends first. */
  read(n: number): Promise<Buffer> {
    if (this.waiter !== undefined) return Promise.reject(new Error("concurrent read"))
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject }
      this.wake()
    })
  }

  private wake(): void {
    const w = this.waiter
    if (w === undefined) return
    if (this.buffered >= w.n) {
      this.waiter = undefined
      w.resolve(this.take(w.n))
    } else if (this.ended !== undefined) {
      this.waiter = undefined
      w.reject(this.ended)
    }
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]
    if (first !== undefined && first.length >= n) {
      if (first.length === n) this.chunks.shift()
      else this.chunks[0] = first.subarray(n)
      this.buffered -= n
      return first.subarray(0, n)
    }
    const out = Buffer.allocUnsafe(n)
    let pos = 0
    while (pos < n) {
      const c = this.chunks[0]!
      const k = Math.min(c.length, n - pos)
      c.copy(out, pos, 0, k)
      pos += k
      if (k === c.length) this.chunks.shift()
      else this.chunks[0] = c.subarray(k)
    }
    this.buffered -= n
    return out
  }
}
