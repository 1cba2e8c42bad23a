// Draining a replica's agents: each connected agent gets `goaway` (reconnect now, to another replica) and its
// socket is closed with CloseCode.reconnect right after (an agent that does not know `goaway` redials on the
// close). The link's own read loop sees the close and handles it as any disconnect.
import { CloseCode } from "@streamspace/protocol"
import { Effect } from "effect"
import { close } from "../ws.ts"
import type { HubState } from "./state.ts"

export const goAwayAll = (state: HubState, reason: string) =>
  Effect.gen(function*() {
    let n = 0
    for (const entry of state.agents.values()) {
      const live = entry.live
      if (live === undefined || live.ended) continue
      yield* state.sendText(live.out, "goaway", { reason })
      close(live.ws, CloseCode.reconnect, reason)
      n++
    }
    if (n > 0) yield* Effect.logInfo(`draining: told ${n} agent(s) to reconnect to another replica`)
  })
