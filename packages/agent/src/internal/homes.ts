// Pure readers for home volumes (the per-user PVCs): which ones this agent manages, who owns them, their size,
// and whether a pod mounts them. `list_homes` and `delete_home` are built on these.
import type { HomeVolume, UserId } from "@streamspace/protocol"
import { LABEL_AGENT, LABEL_HOME, LABEL_MANAGED_BY, LABEL_USER, MANAGED_BY, type ObjectMeta } from "./kubeObjects.ts"

/** The label selector of this agent's home PVCs. */
export const homeSelector = (agentId: string): string => `${LABEL_AGENT}=${agentId},${LABEL_HOME}=true,${LABEL_MANAGED_BY}=${MANAGED_BY}`

/** The parts of a PVC read here. */
export interface ClaimView {
  readonly metadata?: ObjectMeta & { readonly creationTimestamp?: Date | string }
  readonly spec?: { readonly resources?: { readonly requests?: Readonly<Record<string, string>> } }
  readonly status?: { readonly capacity?: Readonly<Record<string, string>> }
}

/** The parts of a Pod read here: the claims its volumes name. */
export interface PodVolumesView {
  readonly spec?: { readonly volumes?: ReadonlyArray<{ readonly persistentVolumeClaim?: { readonly claimName?: string } }> }
}

/** Names of the claims any of `pods` mounts (a terminating pod still holds its volumes). */
export const mountedClaims = (pods: ReadonlyArray<PodVolumesView>): ReadonlySet<string> => {
  const names = new Set<string>()
  for (const p of pods) for (const v of p.spec?.volumes ?? []) if (v.persistentVolumeClaim?.claimName) names.add(v.persistentVolumeClaim.claimName)
  return names
}

const iso = (v: Date | string | undefined): string => (v === undefined ? new Date(0).toISOString() : new Date(v).toISOString())

/** The home a claim is, or undefined when it is not a StreamSpace home with an owner, or is being deleted. */
export const homeOfClaim = (claim: ClaimView, mounted: ReadonlySet<string>): HomeVolume | undefined => {
  const name = claim.metadata?.name
  const user = claim.metadata?.labels?.[LABEL_USER]
  if (name === undefined || user === undefined || claim.metadata?.labels?.[LABEL_HOME] !== "true") return undefined
  if (claim.metadata?.deletionTimestamp != null) return undefined
  const size = claim.status?.capacity?.storage ?? claim.spec?.resources?.requests?.storage
  return {
    name,
    user_id: user as UserId,
    ...(size !== undefined ? { size } : {}),
    created_at: iso(claim.metadata?.creationTimestamp),
    in_use: mounted.has(name)
  }
}
