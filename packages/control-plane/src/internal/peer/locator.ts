// AgentLocator: which live replica holds an agent's socket, as the VNC proxy needs to know it. A port: the
// replica registry (agent presence in PostgreSQL) provides it; the default says "always here" (Option.none),
// which is right for a control plane that runs as one replica. None also stands for "this replica" and for
// "nobody" (the local path then answers the viewer that the agent is not connected).
import type { AgentId } from "@streamspace/protocol"
import { Context, Effect, Option } from "effect"

export interface ReplicaAddress {
  readonly replicaId: string
  /** Base URL other replicas reach this one at (PEER_URL), e.g. http://10.0.3.7:8000. */
  readonly peerUrl: string
}

export interface AgentLocatorShape {
  readonly holderOf: (agentId: AgentId) => Effect.Effect<Option.Option<ReplicaAddress>>
}

export const AgentLocator = Context.Reference<AgentLocatorShape>("control-plane/AgentLocator", {
  defaultValue: () => ({ holderOf: () => Effect.succeed(Option.none()) })
})
