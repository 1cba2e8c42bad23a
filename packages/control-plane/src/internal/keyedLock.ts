// One lock per key (an agent, a session): work under the same key runs one at a time, in the order it asked;
// different keys run concurrently. A key's semaphore exists only while someone holds or waits for it.
import { Effect, Semaphore } from "effect"

export type KeyedLock<K> = (key: K) => <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>

export const makeKeyedLock = <K>(): KeyedLock<K> => {
  const locks = new Map<K, { readonly semaphore: Semaphore.Semaphore; users: number }>()
  return (key) => (effect) =>
    Effect.suspend(() => {
      let entry = locks.get(key)
      if (entry === undefined) {
        entry = { semaphore: Semaphore.makeUnsafe(1), users: 0 }
        locks.set(key, entry)
      }
      const held = entry
      held.users++
      return held.semaphore.withPermits(1)(effect).pipe(
        Effect.ensuring(Effect.sync(() => {
          if (--held.users === 0) locks.delete(key)
        }))
      )
    })
}
