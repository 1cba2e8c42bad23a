// Per-key lines: work on one key runs one at a time, in the order it joined the line (not the order its
// fibers happen to start). Joining is synchronous, so the caller's arrival order is the line's order.
import { Deferred, Effect } from "effect"

export interface Turn {
  /** Waits until everything ahead in the line has left. */
  readonly ready: Effect.Effect<void>
  /** Leaves the line (after everything ahead, even when this turn never ran): the next one may go. */
  readonly leave: Effect.Effect<void>
}

export class KeyedLine<K> {
  /** The last turn of each key's line. */
  private readonly tails = new Map<K, Deferred.Deferred<void>>()

  /** Takes the next place in `key`'s line. */
  join(key: K): Turn {
    const previous = this.tails.get(key)
    const mine = Deferred.makeUnsafe<void>()
    this.tails.set(key, mine)
    const ready = previous === undefined ? Effect.void : Deferred.await(previous)
    const tails = this.tails
    return {
      ready,
      leave: Effect.gen(function*() {
        // The next turn waits for this one AND everything before it.
        yield* ready
        yield* Deferred.succeed(mine, undefined)
        if (tails.get(key) === mine) tails.delete(key)
      })
    }
  }
}
