// The heartbeat interval the control plane announces in `welcome`: an agent configured with a longer
// HEARTBEAT_INTERVAL than the control plane expects beats at the announced interval, so it is not declared
// offline after HEARTBEAT_MISSED_LIMIT of the control plane's intervals.
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as S from "../support/stack.ts"

describe("heartbeat interval announced in welcome", () => {
  it.live("an agent with HEARTBEAT_INTERVAL=1m stays online under a control plane expecting a beat every 1s (offline after 3)", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane({ HEARTBEAT_INTERVAL: "1s", HEARTBEAT_MISSED_LIMIT: "3" })
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-slow", { HEARTBEAT_INTERVAL: "1m" }))
      const first = yield* S.agentView(cp, "agent-slow")
      const seen = cp.events().length // enrolment reconnects once with its new credential: what came before is not judged
      // Three of the control plane's intervals and more: still online, and its last heartbeat is recent.
      yield* Effect.sleep("6 seconds")
      const later = yield* S.agentView(cp, "agent-slow")
      assert.strictEqual(later.status, "online")
      assert.isTrue(later.connected)
      assert.isAbove(Date.parse(later.last_heartbeat), Date.parse(first.last_heartbeat))
      assert.isFalse(cp.events().slice(seen).some((e: any) => e.agentId === "agent-slow" && (e._tag === "Disconnected" || e.status === "offline")), JSON.stringify(cp.events()))
    }), { timeout: 90_000 })
})
