// The send side of the link socket. Text frames are written at once; binary frames wait in two FIFO
// lanes while the socket's send buffer is over its high-water mark or the link window (the bytes the
// control plane will take before it credits the link) is spent. Small frames (credit, keystrokes,
// pointer moves) take the express lane and overtake bulk ones; frames of one lane leave in order.
import { MAX_BINARY_PAYLOAD_BYTES, creditedBytes } from "@streamspace/protocol"
import { Deferred, Effect, Exit } from "effect"

/**
 * Binary frames queue while more than this many bytes sit in the socket's send buffer: one maximal frame.
 * Bytes beyond it would only wait in a FIFO that a later small frame cannot overtake.
 */
export const SEND_HIGH_WATER_MARK = MAX_BINARY_PAYLOAD_BYTES

/** Binary frames up to this size take the express lane: credit frames and interactive bytes. */
export const EXPRESS_FRAME_BYTES = 4096

/** What the lanes need of a socket. */
export interface LaneSocket {
  readonly isOpen: () => boolean
  /** Bytes written and not yet handed to the kernel. */
  readonly bufferedAmount: () => number
  /** Writes one frame; `written` runs once it left the send buffer without error. */
  readonly write: (data: string | Uint8Array, written: () => void) => void
}

interface Pending {
  readonly frame: Uint8Array
  /** Bytes it spends of the link window. */
  readonly cost: number
  /** True once written, false when the link closed first. */
  readonly sent: Deferred.Deferred<boolean>
}

export class SendLanes {
  readonly socket: LaneSocket
  private readonly express: Array<Pending> = []
  private readonly bulk: Array<Pending> = []
  /** Data bytes the control plane will still take before it credits the link; undefined: no link window. */
  private credit: number | undefined
  private window: number | undefined

  constructor(socket: LaneSocket) {
    this.socket = socket
  }

  /** From now on, data bytes in flight stay within `window` (announced in `welcome`). */
  setWindow(window: number): void {
    this.window = window
    this.credit = window
  }

  /** The control plane credited the link; never more than the window (a confused peer must not unbound our sends). */
  addCredit(credit: number): void {
    if (this.credit === undefined || this.window === undefined) return
    this.credit = Math.min(this.credit + credit, this.window)
    this.flush()
  }

  sendText(text: string): void {
    this.write(text)
  }

  /** Writes now when nothing waits ahead and there is room, else queues. Succeeds with false when the link closed first. */
  sendBinary(frame: Uint8Array): Effect.Effect<boolean> {
    return Effect.suspend(() => {
      const cost = creditedBytes(frame)
      const express = frame.length <= EXPRESS_FRAME_BYTES
      const lane = express ? this.express : this.bulk
      // Only overtake what waits in a slower lane: frames of one lane leave in order.
      if (lane.length === 0 && (express || this.express.length === 0) && this.fits(cost)) {
        this.writeBinary(frame, cost)
        return Effect.succeed(true)
      }
      const pending: Pending = { frame, cost, sent: Deferred.makeUnsafe<boolean>() }
      lane.push(pending)
      return Deferred.await(pending.sent).pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            const i = lane.indexOf(pending)
            if (i >= 0) lane.splice(i, 1)
          })
        )
      )
    })
  }

  /** The link closed: every waiting frame resolves as not sent. */
  close(): void {
    for (const p of this.express.splice(0)) Deferred.doneUnsafe(p.sent, Exit.succeed(false))
    for (const p of this.bulk.splice(0)) Deferred.doneUnsafe(p.sent, Exit.succeed(false))
  }

  private fits(cost: number): boolean {
    return this.socket.bufferedAmount() <= SEND_HIGH_WATER_MARK && (this.credit === undefined || cost <= this.credit)
  }

  private write(data: string | Uint8Array): void {
    this.socket.write(data, () => this.flush())
  }

  private writeBinary(frame: Uint8Array, cost: number): void {
    if (this.credit !== undefined) this.credit -= cost
    this.write(frame)
  }

  /** Writes waiting frames while the send buffer and the link window have room: the express lane first. */
  private flush(): void {
    while (this.socket.isOpen()) {
      const lane = this.express.length > 0 ? this.express : this.bulk
      const next = lane[0]
      if (next === undefined || !this.fits(next.cost)) return
      lane.shift()
      this.writeBinary(next.frame, next.cost)
      Deferred.doneUnsafe(next.sent, Exit.succeed(true))
    }
  }
}
