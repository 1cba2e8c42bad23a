// Who is watching each session on this control plane and who has control: the viewers the VNC proxy
// serves, each with the most it may do (`access`) and whether it holds control now. The proxy asks
// `mayInput` for every input message; the API changes control and reads snapshots; `changed` wakes long polls.
//
// Rules: in `exclusive` mode at most one person holds control, in every viewer they have open (a second tab of
// the controller, or its reconnect, can type too): the first viewer that may control gets it when nobody holds
// it; a grant moves it. In `shared` mode every viewer that may control holds it. Viewers with `view` access
// never hold control. Link guests count as one person per link (`link:<id>`). In memory on purpose: a viewer lives exactly as long as its socket here.
import type { ControlMode } from "../store/shares.ts"

/** The most a viewer may do: the owner's or an admin's viewer, a `control` or `view` share or link. */
export type ViewerAccess = "owner" | "admin" | "control" | "view"

export const mayControl = (a: ViewerAccess) => a !== "view"

export interface ViewerEntry {
  readonly id: string
  readonly sessionId: string
  /** The user's sub, or `link:<id>` for someone who came with a share link. */
  readonly userId: string
  access: ViewerAccess
  readonly linkId: string | undefined
  readonly since: Date
  control: boolean
  requested: boolean
  /** Ends the viewer's socket with a close code and reason. */
  readonly end: (code: number, reason: string) => void
}

interface SessionPresence {
  readonly viewers: Map<string, ViewerEntry>
  mode: ControlMode
  version: number
}

export interface PresenceJson {
  readonly session_id: string
  readonly mode: ControlMode
  readonly version: number
  readonly controllers: ReadonlyArray<string>
  readonly viewers: ReadonlyArray<{
    readonly id: string
    readonly user: string
    readonly access: ViewerAccess
    readonly link_id: string | null
    readonly control: boolean
    readonly requested: boolean
    readonly since: string
  }>
}

export const makePresence = () => {
  const sessions = new Map<string, SessionPresence>()
  const viewers = new Map<string, ViewerEntry>()
  const waiters = new Map<string, Set<() => void>>()
  /** Monotonic across sessions' lifetimes here, so a long poll never sees a version go back. */
  let clock = 0

  const bump = (sessionId: string) => {
    const p = sessions.get(sessionId)
    if (p !== undefined) p.version = ++clock
    const w = waiters.get(sessionId)
    if (w === undefined) return
    waiters.delete(sessionId)
    for (const wake of w) wake()
  }

  const controllers = (p: SessionPresence) => [...p.viewers.values()].filter((v) => v.control)

  const join = (entry: ViewerEntry, mode: ControlMode) => {
    let p = sessions.get(entry.sessionId)
    if (p === undefined) {
      p = { viewers: new Map(), mode, version: ++clock }
      sessions.set(entry.sessionId, p)
    }
    entry.control = mayControl(entry.access) && (p.mode === "shared" || controllers(p).every((h) => h.userId === entry.userId))
    p.viewers.set(entry.id, entry)
    viewers.set(entry.id, entry)
    bump(entry.sessionId)
  }

  const leave = (id: string) => {
    const v = viewers.get(id)
    if (v === undefined) return
    viewers.delete(id)
    const p = sessions.get(v.sessionId)
    p?.viewers.delete(id)
    if (p !== undefined && p.viewers.size === 0) sessions.delete(v.sessionId)
    bump(v.sessionId)
  }

  /** Gives control to `target` (which may control); in exclusive mode everyone but its person's viewers loses it. */
  const give = (target: ViewerEntry) => {
    const p = sessions.get(target.sessionId)!
    if (p.mode === "exclusive") for (const v of p.viewers.values()) v.control = v.userId === target.userId && mayControl(v.access)
    target.control = true
    target.requested = false
    bump(target.sessionId)
  }

  const setMode = (sessionId: string, mode: ControlMode) => {
    const p = sessions.get(sessionId)
    if (p === undefined) return
    p.mode = mode
    const capable = [...p.viewers.values()].filter((v) => mayControl(v.access))
    if (mode === "shared") for (const v of capable) (v.control = true, v.requested = false)
    else {
      // Keep one person in control: the owner if they hold it, else an admin, else whoever joined first.
      const holders = capable.filter((v) => v.control).sort((a, b) => rank(a) - rank(b) || a.since.getTime() - b.since.getTime())
      for (const v of holders) v.control = v.userId === holders[0]!.userId
    }
    bump(sessionId)
  }

  /** A user's share changed: their viewers (not link guests) get the new access; `view` loses control at once. */
  const setAccess = (sessionId: string, userId: string, access: ViewerAccess) => {
    const p = sessions.get(sessionId)
    if (p === undefined) return
    for (const v of p.viewers.values()) {
      if (v.userId !== userId || v.linkId !== undefined || v.access === "owner" || v.access === "admin") continue
      v.access = access
      if (access === "view") (v.control = false, v.requested = false)
      else if (p.mode === "shared") v.control = true
    }
    bump(sessionId)
  }

  const take = (sessionId: string) => {
    const p = sessions.get(sessionId)
    if (p === undefined) return
    for (const v of p.viewers.values()) v.control = false
    bump(sessionId)
  }

  const snapshot = (sessionId: string, mode: ControlMode): PresenceJson => {
    const p = sessions.get(sessionId)
    const list = p === undefined ? [] : [...p.viewers.values()]
    return {
      session_id: sessionId,
      mode: p?.mode ?? mode,
      version: p?.version ?? 0,
      controllers: list.filter((v) => v.control).map((v) => v.id),
      viewers: list.map((v) => ({
        id: v.id,
        user: v.userId,
        access: v.access,
        link_id: v.linkId ?? null,
        control: v.control,
        requested: v.requested,
        since: v.since.toISOString()
      }))
    }
  }

  /** Calls `wake` once at the session's next change; returns the unsubscribe. */
  const onChange = (sessionId: string, wake: () => void) => {
    let w = waiters.get(sessionId)
    if (w === undefined) waiters.set(sessionId, (w = new Set()))
    w.add(wake)
    return () => void waiters.get(sessionId)?.delete(wake)
  }

  return {
    join,
    leave,
    give,
    take,
    setAccess,
    setMode,
    snapshot,
    onChange,
    bump,
    viewer: (id: string) => viewers.get(id),
    viewersOf: (sessionId: string): ReadonlyArray<ViewerEntry> => [...(sessions.get(sessionId)?.viewers.values() ?? [])],
    mode: (sessionId: string) => sessions.get(sessionId)?.mode,
    mayInput: (id: string) => viewers.get(id)?.control === true
  }
}

export type Presence = ReturnType<typeof makePresence>

const rank = (v: ViewerEntry) => (v.access === "owner" ? 0 : v.access === "admin" ? 1 : 2)
