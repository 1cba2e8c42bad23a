// Sharing: who besides the owner may watch or control a session, and who is doing so now. Owns named users'
// shares (`view` / `control`), share links (expiring, revocable secrets an anonymous holder exchanges for a
// single-use viewer ticket; stored as their SHA-256 only), each session's control mode (`exclusive` /
// `shared`) and the presence of the viewers connected to this control plane, with who holds control. The
// VNC proxy asks it who may open a viewer and whether each viewer may send input; the owner and admins manage
// shares and links and may end any viewer. Every share, link, grant and viewer end is recorded in the audit log.
//
// Modules (internal/sharing/): presence (viewers and control, in memory), routes (the HTTP API);
// internal/store/shares.ts (the tables); internal/vnc/inputFilter.ts (the view-only gate in the proxy).
import { Clock, Context, Duration, Effect, Layer, Schema } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { Audit } from "./Audit.ts"
import type { User } from "./Auth.ts"
import { mayControl, makePresence, type PresenceJson, type ViewerAccess, type ViewerEntry } from "./internal/sharing/presence.ts"
import { memoryShares } from "./internal/store/shares.ts"
import { ViewerClose } from "./internal/vnc/relay.ts"
import { Sessions } from "./Sessions.ts"
import { type ControlMode, type SessionRecord, type ShareAccess, type ShareLinkRecord, type ShareRecord, type SharesTable, Store } from "./Store.ts"

export type { PresenceJson, ViewerAccess } from "./internal/sharing/presence.ts"

export class SharingError extends Schema.TaggedError<SharingError>()("SharingError", {
  reason: Schema.Literals(["NotFound", "Forbidden", "InvalidRequest", "Gone", "Unavailable"]),
  message: Schema.String
}) {}

/** A session as one user may reach it, and the most that user may do in it. */
export interface SessionAccess {
  readonly session: SessionRecord
  readonly access: ViewerAccess
}

export interface NewLink {
  readonly access?: ShareAccess | undefined
  readonly ttlSeconds?: number | undefined
  readonly maxUses?: number | undefined
  readonly label?: string | undefined
}

export type ControlAction = "request" | "grant" | "take" | "release"

export interface SharingShape {
  /** The session and the caller's access: owner, admin, or a share; NotFound for anyone else (no existence leak). */
  readonly access: (user: User, sessionId: string) => Effect.Effect<SessionAccess, SharingError>
  /** Live (not ended) sessions shared with the user, newest first, with their access. */
  readonly sharedWith: (user: User) => Effect.Effect<ReadonlyArray<{ readonly session: SessionRecord; readonly share: ShareRecord }>, SharingError>
  readonly shares: (user: User, sessionId: string) => Effect.Effect<ReadonlyArray<ShareRecord>, SharingError>
  readonly share: (user: User, sessionId: string, target: string, access: ShareAccess) => Effect.Effect<ShareRecord, SharingError>
  /** Removes the share and ends the user's viewers of the session. */
  readonly unshare: (user: User, sessionId: string, target: string) => Effect.Effect<void, SharingError>
  /** A new link and its token (shown once). */
  readonly createLink: (user: User, sessionId: string, link: NewLink) => Effect.Effect<{ readonly link: ShareLinkRecord; readonly token: string }, SharingError>
  readonly links: (user: User, sessionId: string) => Effect.Effect<ReadonlyArray<ShareLinkRecord>, SharingError>
  /** Revokes the link and ends the viewers that came with it. */
  readonly revokeLink: (user: User, sessionId: string, linkId: string) => Effect.Effect<ShareLinkRecord, SharingError>
  /** Counts one use of the link whose token this is; Gone when it is unknown, revoked, expired or used up. */
  readonly redeemLink: (token: string) => Effect.Effect<ShareLinkRecord, SharingError>
  /** The access a link still gives to its session when its viewer connects (Gone when revoked or expired). */
  readonly linkAccess: (linkId: string, sessionId: string) => Effect.Effect<SessionAccess, SharingError>
  /** Registers a viewer for its lifetime (the scope); the proxy asks `mayInput(id)` for each input message. */
  readonly join: (entry: Omit<ViewerEntry, "control" | "requested">) => Effect.Effect<void, never, import("effect").Scope.Scope>
  readonly mayInput: (viewerId: string) => boolean
  readonly presence: (user: User, sessionId: string) => Effect.Effect<PresenceJson, SharingError>
  /** Waits (at most `timeout`) for the presence to move past `since`, then answers it. */
  readonly presenceAfter: (user: User, sessionId: string, since: number, timeout: Duration.Input) => Effect.Effect<PresenceJson, SharingError>
  readonly control: (user: User, sessionId: string, action: ControlAction, viewerId: string | undefined) => Effect.Effect<PresenceJson, SharingError>
  readonly setMode: (user: User, sessionId: string, mode: ControlMode) => Effect.Effect<PresenceJson, SharingError>
  /** Ends one viewer (owner and admins). */
  readonly endViewer: (user: User, sessionId: string, viewerId: string) => Effect.Effect<void, SharingError>
}

/** Share links live at most this long (7 days); default 1 hour. */
export const MAX_LINK_TTL_SECONDS = 604800
export const DEFAULT_LINK_TTL_SECONDS = 3600

const hashToken = (token: string) => createHash("sha256").update(token).digest("hex")
const notFound = (id: string) => new SharingError({ reason: "NotFound", message: `no session "${id.slice(0, 80)}"` })
const unavailable = (e: { readonly message: string }) => new SharingError({ reason: "Unavailable", message: `sharing data cannot be read or written: ${e.message}` })
/** Reads a record whatever its owner (the sharing rules decide who sees it). */
const ANY: User = { id: "system" as User["id"], role: "admin", groups: [] }

export const make = (table: SharesTable) =>
  Effect.gen(function*() {
    const sessions = yield* Sessions
    const audit = yield* Audit
    const presence = makePresence()
    const db = <A, E extends { readonly message: string }>(e: Effect.Effect<A, E>) => Effect.mapError(e, unavailable)
    const now = Effect.map(Clock.currentTimeMillis, (ms) => new Date(ms))

    const access = Effect.fn("Sharing.access")(function*(user: User, sessionId: string) {
      const session = yield* sessions.get(ANY, sessionId).pipe(Effect.mapError(() => notFound(sessionId)))
      if (session.userId === user.id) return { session, access: "owner" as const }
      if (user.role === "admin") return { session, access: "admin" as const }
      const share = yield* db(table.get(session.id, user.id))
      if (share === undefined) return yield* notFound(sessionId)
      return { session, access: share.access }
    })

    /** The owner or an admin: anyone else who can see the session is Forbidden, the rest get NotFound. */
    const manager = Effect.fnUntraced(function*(user: User, sessionId: string) {
      const a = yield* access(user, sessionId)
      if (a.access !== "owner" && a.access !== "admin") {
        return yield* new SharingError({ reason: "Forbidden", message: "only the session's owner or an admin may do this" })
      }
      return a.session
    })

    const endViewers = (sessionId: string, which: (v: ViewerEntry) => boolean, reason: string) =>
      Effect.sync(() => {
        for (const v of presence.viewersOf(sessionId)) if (which(v)) v.end(ViewerClose.ended, reason)
      })

    const shareOp = Effect.fn("Sharing.share")(function*(user: User, sessionId: string, target: string, level: ShareAccess) {
      const session = yield* manager(user, sessionId)
      if (target === session.userId) return yield* new SharingError({ reason: "InvalidRequest", message: `user: "${target}" owns this session` })
      const before = yield* db(table.get(session.id, target))
      const share = yield* db(table.put({ sessionId: session.id, userId: target, access: level, createdBy: user.id, createdAt: yield* now }))
      yield* audit.record(user, before === undefined ? "share.create" : "share.update", { type: "session", id: session.id }, { user: target, access: level, owner: session.userId })
      // The user's open viewers get the new access (fewer rights: control goes at once).
      presence.setAccess(session.id, target, level)
      return share
    })

    const unshare = Effect.fn("Sharing.unshare")(function*(user: User, sessionId: string, target: string) {
      const session = yield* manager(user, sessionId)
      if (!(yield* db(table.remove(session.id, target)))) {
        return yield* new SharingError({ reason: "NotFound", message: `session "${session.id}" is not shared with "${target.slice(0, 80)}"` })
      }
      yield* audit.record(user, "share.delete", { type: "session", id: session.id }, { user: target, owner: session.userId })
      yield* endViewers(session.id, (v) => v.userId === target && v.linkId === undefined, "the session is no longer shared with you")
    })

    const createLink = Effect.fn("Sharing.createLink")(function*(user: User, sessionId: string, request: NewLink) {
      const session = yield* manager(user, sessionId)
      const created = yield* now
      const token = randomBytes(32).toString("base64url")
      const link = yield* db(table.putLink({
        id: `l-${randomBytes(8).toString("hex")}`,
        sessionId: session.id,
        tokenHash: hashToken(token),
        access: request.access ?? "view",
        label: request.label,
        createdBy: user.id,
        createdAt: created,
        expiresAt: new Date(created.getTime() + 1000 * (request.ttlSeconds ?? DEFAULT_LINK_TTL_SECONDS)),
        maxUses: request.maxUses,
        uses: 0,
        revokedAt: undefined
      }))
      yield* audit.record(user, "share_link.create", { type: "session", id: session.id }, {
        link_id: link.id,
        access: link.access,
        expires_at: link.expiresAt.toISOString(),
        max_uses: link.maxUses ?? null
      })
      return { link, token }
    })

    const revokeLink = Effect.fn("Sharing.revokeLink")(function*(user: User, sessionId: string, linkId: string) {
      const session = yield* manager(user, sessionId)
      const existing = yield* db(table.getLink(linkId))
      if (existing === undefined || existing.sessionId !== session.id) {
        return yield* new SharingError({ reason: "NotFound", message: `no share link "${linkId.slice(0, 80)}" for this session` })
      }
      const link = (yield* db(table.revokeLink(linkId, yield* now)))!
      yield* audit.record(user, "share_link.revoke", { type: "session", id: session.id }, { link_id: link.id })
      yield* endViewers(session.id, (v) => v.linkId === link.id, "the share link was revoked")
      return link
    })

    const gone = new SharingError({ reason: "Gone", message: "this share link is unknown, revoked, expired or used up" })

    const redeemLink = Effect.fn("Sharing.redeemLink")(function*(token: string) {
      const found = yield* db(table.linkByTokenHash(hashToken(token)))
      if (found === undefined) return yield* gone
      const used = yield* db(table.useLink(found.id, yield* now))
      if (used === undefined) return yield* gone
      yield* audit.record("system", "share_link.redeem", { type: "session", id: used.sessionId }, { link_id: used.id, uses: used.uses })
      return used
    })

    const linkAccess = Effect.fn("Sharing.linkAccess")(function*(linkId: string, sessionId: string) {
      const link = yield* db(table.getLink(linkId))
      if (link === undefined || link.sessionId !== sessionId || link.revokedAt !== undefined || link.expiresAt <= (yield* now)) return yield* gone
      const session = yield* sessions.get(ANY, sessionId).pipe(Effect.mapError(() => notFound(sessionId)))
      return { session, access: link.access }
    })

    const join = (entry: Omit<ViewerEntry, "control" | "requested">) =>
      Effect.gen(function*() {
        const mode = presence.mode(entry.sessionId) ?? (yield* table.controlMode(entry.sessionId).pipe(Effect.orElseSucceed(() => "exclusive" as const)))
        yield* Effect.acquireRelease(
          Effect.sync(() => presence.join({ ...entry, control: false, requested: false }, mode)),
          () => Effect.sync(() => presence.leave(entry.id))
        )
      })

    const snapshot = (sessionId: string) => Effect.map(db(table.controlMode(sessionId)), (mode) => presence.snapshot(sessionId, mode))

    const presenceAfter = Effect.fn("Sharing.presenceAfter")(function*(user: User, sessionId: string, since: number, timeout: Duration.Input) {
      const { session } = yield* access(user, sessionId)
      if (presence.snapshot(session.id, "exclusive").version <= since) {
        yield* Effect.callback<void>((resume) => {
          const off = presence.onChange(session.id, () => resume(Effect.void))
          return Effect.sync(off)
        }).pipe(Effect.timeoutOption(timeout))
      }
      return yield* snapshot(session.id)
    })

    const viewerOf = (sessionId: string, viewerId: string | undefined) => {
      const v = viewerId === undefined ? undefined : presence.viewer(viewerId)
      return v === undefined || v.sessionId !== sessionId
        ? Effect.fail(new SharingError({ reason: "NotFound", message: `no viewer "${(viewerId ?? "").slice(0, 80)}" of this session` }))
        : Effect.succeed(v)
    }
    const forbidden = (message: string) => Effect.fail(new SharingError({ reason: "Forbidden", message }))

    const control = Effect.fn("Sharing.control")(function*(user: User, sessionId: string, action: ControlAction, viewerId: string | undefined) {
      const a = yield* access(user, sessionId)
      const id = a.session.id
      const managing = a.access === "owner" || a.access === "admin"
      const target = action === "take" && viewerId === undefined ? undefined : yield* viewerOf(id, viewerId)
      const own = target !== undefined && target.userId === user.id && target.linkId === undefined
      switch (action) {
        case "request":
          if (!own) return yield* forbidden("you can only request control for your own viewer")
          if (!mayControl(target!.access)) return yield* forbidden("your access to this session is view-only")
          target!.requested = true
          presence.bump(id)
          break
        case "release":
          if (!own && !managing) return yield* forbidden("only the owner or an admin may take control from another viewer")
          target!.control = false
          target!.requested = false
          presence.bump(id)
          if (!own) yield* audit.record(user, "control.take", { type: "session", id }, { from_viewer: target!.id, from_user: target!.userId })
          break
        case "grant": {
          const controlling = presence.viewersOf(id).some((v) => v.control && v.userId === user.id && v.linkId === undefined)
          if (!managing && !controlling) return yield* forbidden("only the owner, an admin or the viewer in control may grant control")
          if (!mayControl(target!.access)) return yield* forbidden(`viewer "${target!.id}" has view-only access`)
          presence.give(target!)
          yield* audit.record(user, "control.grant", { type: "session", id }, { viewer: target!.id, to_user: target!.userId })
          break
        }
        case "take":
          if (!managing) return yield* forbidden("only the owner or an admin may take control")
          if (target !== undefined && !own) return yield* forbidden("control can be taken for your own viewer only")
          if (target === undefined) presence.take(id)
          else presence.give(target)
          yield* audit.record(user, "control.take", { type: "session", id }, { viewer: target?.id ?? null })
          break
      }
      return yield* snapshot(id)
    })

    const setMode = Effect.fn("Sharing.setMode")(function*(user: User, sessionId: string, mode: ControlMode) {
      const session = yield* manager(user, sessionId)
      yield* db(table.setControlMode(session.id, mode, yield* now))
      presence.setMode(session.id, mode)
      yield* audit.record(user, "control.mode", { type: "session", id: session.id }, { mode })
      return yield* snapshot(session.id)
    })

    const endViewer = Effect.fn("Sharing.endViewer")(function*(user: User, sessionId: string, viewerId: string) {
      const session = yield* manager(user, sessionId)
      const v = yield* viewerOf(session.id, viewerId)
      v.end(ViewerClose.ended, `ended by ${user.id}`)
      yield* audit.record(user, "viewer.end", { type: "session", id: session.id }, { viewer: v.id, user: v.userId })
    })

    return Sharing.of({
      access,
      sharedWith: Effect.fn("Sharing.sharedWith")(function*(user: User) {
        const out: Array<{ session: SessionRecord; share: ShareRecord }> = []
        for (const share of yield* db(table.list({ userId: user.id }))) {
          const s = yield* sessions.get(ANY, share.sessionId).pipe(Effect.option)
          if (s._tag === "Some" && s.value.state !== "terminated" && s.value.state !== "failed") out.push({ session: s.value, share })
        }
        return out.sort((a, b) => b.session.createdAt.getTime() - a.session.createdAt.getTime())
      }),
      shares: Effect.fn("Sharing.shares")(function*(user: User, sessionId: string) {
        const session = yield* manager(user, sessionId)
        return yield* db(table.list({ sessionId: session.id }))
      }),
      share: shareOp,
      unshare,
      createLink,
      links: Effect.fn("Sharing.links")(function*(user: User, sessionId: string) {
        const session = yield* manager(user, sessionId)
        return yield* db(table.links(session.id))
      }),
      revokeLink,
      redeemLink,
      linkAccess,
      join,
      mayInput: presence.mayInput,
      presence: Effect.fn("Sharing.presence")(function*(user: User, sessionId: string) {
        return yield* snapshot((yield* access(user, sessionId)).session.id)
      }),
      presenceAfter,
      control,
      setMode,
      endViewer
    })
  })

export class Sharing extends Context.Service<Sharing, SharingShape>()("control-plane/Sharing") {
  /** On the Store's sharing tables; needs Sessions and Audit. */
  static readonly layer = Layer.effect(Sharing, Effect.flatMap(Store, (store) => make(store.shares)))
  /** In memory: for tests. */
  static readonly layerMemory = Layer.effect(Sharing, Effect.suspend(() => make(memoryShares())))
}
