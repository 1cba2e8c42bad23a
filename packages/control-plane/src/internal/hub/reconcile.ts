// Tunnel reconciliation. The control plane and an agent must agree on which tunnels are open: a viewer that
// went away without its `vnc_disconnect` reaching the agent (or an agent that lost a tunnel without its
// `vnc_closed` reaching us) would otherwise pin a port-forward and a window of bytes until VNC_TUNNEL_TIMEOUT.
// Every heartbeat carries the ids of the agent's open tunnels (`tunnel_ids`, sent at once after each
// handshake and then every HEARTBEAT_INTERVAL), and the read loop checks it here, in frame order:
//
// * an id the hub has no tunnel for is an orphan: `vnc_disconnect` it (idempotent on the agent). The hub
//   registers a tunnel before it sends `vnc_connect`, so no tunnel being opened is ever taken for one.
// * an open tunnel missing from two heartbeats in a row is gone on the agent: its viewer is closed (4410,
//   reason `error`, "the agent no longer has this tunnel"). One miss is not enough: a beat composed just before
//   the agent opened the tunnel can arrive after its `command_completed`.
import type { AgentId, TunnelId } from "@streamspace/protocol"
import { Effect, Metric } from "effect"
import { tunnelsReconciledTotal } from "../../Observability.ts"
import { type HubState, type Live, tunnelKey } from "./state.ts"
import { disconnect } from "./tunnels.ts"

/** Heartbeats in a row that must lack an open tunnel before its viewer is closed. */
export const MISSED_BEATS_TO_CLOSE = 2

const closedOnAgent = Metric.withAttributes(tunnelsReconciledTotal, { outcome: "closed_on_agent" })
const viewerClosed = Metric.withAttributes(tunnelsReconciledTotal, { outcome: "viewer_closed" })

/** Reconciles the hub's tunnels of `agentId` with the ids its heartbeat listed. */
export const reconcileTunnels = (state: HubState, agentId: AgentId, live: Live, ids: ReadonlyArray<TunnelId>) =>
  Effect.gen(function*() {
    if (!live.approved || live.ended) return
    const listed = new Set<number>(ids)
    for (const id of listed) {
      if (state.tunnels.has(tunnelKey(agentId, id))) continue
      yield* Effect.logInfo(`AgentHub: agent has tunnel ${id} that no viewer uses; closing it`).pipe(Effect.annotateLogs({ tunnel_id: id }))
      yield* Metric.update(closedOnAgent, 1)
      yield* disconnect(state, agentId, live, id as TunnelId)
    }
    for (const t of state.tunnels.values()) {
      if (t.agentId !== agentId || t.phase !== "open") continue
      if (listed.has(t.tunnelId)) {
        t.missedBeats = 0
        continue
      }
      t.missedBeats++
      if (t.missedBeats < MISSED_BEATS_TO_CLOSE) continue
      t.phase = "closed"
      yield* Effect.logWarning(`AgentHub: the agent no longer has tunnel ${t.tunnelId}; closing its viewer`).pipe(
        Effect.annotateLogs({ tunnel_id: t.tunnelId, session_id: t.sessionId })
      )
      yield* Metric.update(viewerClosed, 1)
      yield* t.sink.onClosed({ tunnel_id: t.tunnelId, session_id: t.sessionId, reason: "error", message: "the agent no longer has this tunnel" })
    }
  })
