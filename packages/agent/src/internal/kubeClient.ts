// The handle every Kubernetes operation works with (Kubernetes.ts builds it; internal/kubeSessions.ts and
// Kubernetes.ts use it): the client, this agent's namespace and labels, and the call policy.
import type * as k8s from "@kubernetes/client-node"
import type { SessionId } from "@streamspace/protocol"
import type { Duration } from "effect"
import type { ApiHealth } from "./apiHealth.ts"
import type { Call } from "./kubeCall.ts"
import type { Json, PodView, SessionDefaults } from "./kubeObjects.ts"

/** What every operation below works with: the client, this agent's namespace and labels, and the call policy. */
export interface Client {
  readonly kc: k8s.KubeConfig
  readonly core: k8s.CoreV1Api
  readonly watcher: k8s.Watch
  readonly agentId: string
  readonly namespace: string
  readonly defaults: SessionDefaults
  readonly template: Json | undefined
  readonly call: Call
  readonly apiHealth: ApiHealth
  readonly requestTimeout: Duration.Duration
  readonly portForwardHighWater: number
  /** Sessions whose pod is a claimed warm pod, by pod name (their pod is not named after them). */
  readonly podNames: Map<SessionId, string>
}

export interface PodList {
  readonly items: ReadonlyArray<PodView>
  readonly resourceVersion: string
}
