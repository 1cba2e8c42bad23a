// Viewer limits: how many viewers one session and one user may have connected through this replica at once
// (MAX_VIEWERS_PER_SESSION, MAX_VIEWERS_PER_USER; 0 = no limit). Three hundred viewers on one session once
// used up an agent's tunnels, so another user's viewer failed. Admins are not limited (nor counted). Checked when a ticket
// is issued (a clear 429) and again, atomically with taking the slot, when the viewer connects.
import type { User } from "../../Auth.ts"
import type { UserLimits } from "../../ControlPlaneConfig.ts"

export const makeViewerLimits = (limits: Pick<UserLimits, "viewersPerSession" | "viewersPerUser">) => {
  const bySession = new Map<string, number>()
  const byUser = new Map<string, number>()
  const bump = (m: Map<string, number>, k: string, d: number) => {
    const n = (m.get(k) ?? 0) + d
    if (n <= 0) m.delete(k)
    else m.set(k, n)
  }
  /** Why one more viewer of `sessionId` by `user` is refused (naming the limit), or undefined. */
  const refusal = (user: User, sessionId: string): string | undefined => {
    if (user.role === "admin") return undefined
    const onSession = bySession.get(sessionId) ?? 0
    if (limits.viewersPerSession > 0 && onSession >= limits.viewersPerSession) {
      return `too many viewers: this session has ${onSession}, the most allowed (MAX_VIEWERS_PER_SESSION=${limits.viewersPerSession})`
    }
    const ofUser = byUser.get(user.id) ?? 0
    if (limits.viewersPerUser > 0 && ofUser >= limits.viewersPerUser) {
      return `too many viewers: you have ${ofUser} open, the most one user may have (MAX_VIEWERS_PER_USER=${limits.viewersPerUser})`
    }
    return undefined
  }
  return {
    refusal,
    /** Takes a slot unless refused; the release to call when the viewer leaves, or the refusal. */
    acquire: (user: User, sessionId: string): { readonly release: () => void } | { readonly refused: string } => {
      if (user.role === "admin") return { release: () => {} }
      const refused = refusal(user, sessionId)
      if (refused !== undefined) return { refused }
      bump(bySession, sessionId, 1)
      bump(byUser, user.id, 1)
      let released = false
      return {
        release: () => {
          if (released) return
          released = true
          bump(bySession, sessionId, -1)
          bump(byUser, user.id, -1)
        }
      }
    }
  }
}
