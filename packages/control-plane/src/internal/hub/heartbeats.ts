// Heartbeats. A heartbeat counts for liveness when it is read, not when the hub gets round to it: with a
// thousand agents the hub lock and the database lag, and judging by the applied time declared live agents
// offline. The read loop only notes the beat; a background applier per socket puts the latest beat into the
// record under the hub lock, and a writer per socket saves it after that, outside the lock. A slow store
// delays neither. The row only needs what changed, plus a fresh last_heartbeat now and then.
import type { PayloadOf } from "@streamspace/protocol"
import { Clock, Duration, Effect, FiberSet } from "effect"
import type { Entry, HubState, Live } from "./state.ts"

/** Notes a heartbeat read off `live`. */
export const onHeartbeat = (state: HubState, entry: Entry, live: Live, hb: PayloadOf<"heartbeat">) =>
  Effect.gen(function*() {
    if (live.ended) return
    const atMs = yield* Clock.currentTimeMillis
    live.lastBeatMs = atMs
    live.pendingBeat = { hb, atMs }
    if (live.applyingBeats) return
    live.applyingBeats = true
    yield* FiberSet.run(state.background, applyBeats(state, entry, live).pipe(Effect.ensuring(Effect.sync(() => void (live.applyingBeats = false)))))
  })

/** An unchanged heartbeat still refreshes the row's last_heartbeat this often. */
const refreshMs = (state: HubState) => Math.max(6 * Duration.toMillis(state.config.heartbeatInterval), 60_000)

const applyBeats = (state: HubState, entry: Entry, live: Live) =>
  Effect.gen(function*() {
    while (true) {
      const next = live.pendingBeat
      if (next === undefined || live.ended) {
        live.applyingBeats = false // at once, so a beat read from now on starts a new applier
        return
      }
      live.pendingBeat = undefined
      const { atMs, hb } = next
      yield* state.locked(Effect.gen(function*() {
        if (live.ended || entry.live !== live) return
        yield* state.tracked(entry, Effect.sync(() => {
          entry.record = {
            ...entry.record,
            status: hb.status === "offline" ? "online" : hb.status,
            capacity: hb.capacity,
            activeSessions: hb.active_sessions,
            lastHeartbeat: new Date(atMs)
          }
          entry.activeTunnels = hb.active_tunnels
        }))
        const key = JSON.stringify([entry.record.status, hb.capacity, hb.active_sessions])
        if (live.saved === undefined || live.saved.key !== key || atMs - live.saved.atMs >= refreshMs(state)) {
          live.saved = { key, atMs }
          live.unsaved = { status: entry.record.status, activeSessions: hb.active_sessions, capacity: hb.capacity }
          if (!live.writing) {
            live.writing = true
            yield* FiberSet.run(state.background, saveBeats(state, entry, live).pipe(Effect.ensuring(Effect.sync(() => void (live.writing = false)))))
          }
        }
      }))
    }
  })

const saveBeats = (state: HubState, entry: Entry, live: Live) =>
  Effect.gen(function*() {
    while (true) {
      const beat = live.unsaved
      if (beat === undefined || live.ended) {
        live.writing = false
        return
      }
      live.unsaved = undefined
      const id = entry.record.id
      // Skipped once the socket ended: the offline status written then must stay the last word.
      yield* state.persist(id, Effect.suspend(() => (live.ended ? Effect.void : state.store.agents.heartbeat(id, beat))))
    }
  })
