// Warm pools, pure parts: the pods a template's pool keeps (labelled as pool pods, no session, no user, never
// a home), the hash that says which session specs a warm pod can serve, and how a pod is claimed (its labels
// become a session's). A pool pod is started from the pool's spec before anyone asks; a create whose spec has
// the same hash takes one by relabelling it, so it is running at once.
import type { SessionId, SessionSpec, UserId, WarmPool } from "@streamspace/protocol"
import { createHash, randomBytes } from "node:crypto"
import {
  buildPod,
  type Json,
  LABEL_AGENT,
  LABEL_APP,
  LABEL_MANAGED_BY,
  LABEL_SESSION,
  LABEL_TEMPLATE,
  LABEL_USER,
  MANAGED_BY,
  type PodView,
  type SessionDefaults,
  sessionLabels
} from "./kubeObjects.ts"

export const LABEL_POOL = "streamspace.io/warm-pool"
export const LABEL_POOL_SPEC = "streamspace.io/warm-pool-spec"

/** What a warm pod is made from, as a hash: equal for a pool and every session spec it can serve. */
export const poolHash = (p: Pick<WarmPool, "template" | "image" | "resources" | "env" | "vnc_port">): string => {
  const env = Object.entries(p.env ?? {}).sort(([a], [b]) => (a < b ? -1 : 1))
  const canonical = JSON.stringify([p.template, p.image, p.resources?.cpu ?? null, p.resources?.memory ?? null, env, p.vnc_port])
  return createHash("sha256").update(canonical).digest("hex").slice(0, 32)
}

/** The hash of the warm pods that may serve `spec`; undefined when none may (a persistent home is never in a warm pod). */
export const claimableHash = (spec: SessionSpec): string | undefined => (spec.persistent_home ? undefined : poolHash(spec))

export const poolSelector = (agentId: string, template?: string): string =>
  `${LABEL_AGENT}=${agentId},${LABEL_MANAGED_BY}=${MANAGED_BY},${LABEL_POOL}${template === undefined ? "" : `=${template}`}`

export const isPoolPod = (pod: PodView): boolean => pod.metadata?.labels?.[LABEL_POOL] !== undefined

/** A new warm pod of `pool`: a session pod without a session or a user, labelled as the pool's. */
export const buildWarmPod = (defaults: SessionDefaults, pool: WarmPool, template: Json | undefined): Json => {
  const name = `warm-${pool.template}-${randomBytes(4).toString("hex")}`.slice(0, 63)
  const spec: SessionSpec = {
    user_id: "" as UserId,
    template: pool.template,
    image: pool.image,
    ...(pool.resources !== undefined ? { resources: pool.resources } : {}),
    ...(pool.env !== undefined ? { env: pool.env } : {}),
    persistent_home: false,
    vnc_port: pool.vnc_port
  }
  const pod = buildPod({ id: name as SessionId, spec, defaults, template })
  const meta = pod.metadata as Json
  const labels = { ...(meta.labels as Record<string, string>) }
  delete labels[LABEL_SESSION]
  delete labels[LABEL_USER]
  delete labels[LABEL_APP]
  return {
    ...pod,
    metadata: {
      ...meta,
      labels: { ...labels, [LABEL_TEMPLATE]: pool.template, [LABEL_POOL]: pool.template, [LABEL_POOL_SPEC]: poolHash(pool) }
    }
  }
}

/** Ready to serve: running, every container ready, not being deleted. */
export const isWarmReady = (pod: PodView): boolean =>
  pod.metadata?.deletionTimestamp == null && pod.status?.phase === "Running" &&
  (pod.status.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True")

/** The labels a claimed warm pod gets: a session's, and no pool labels any more. */
export const claimedLabels = (pod: PodView, agentId: string, id: SessionId, spec: SessionSpec): Record<string, string> => {
  const labels: Record<string, string> = { ...pod.metadata?.labels }
  delete labels[LABEL_POOL]
  delete labels[LABEL_POOL_SPEC]
  return { ...labels, ...sessionLabels(agentId, id, spec) }
}
