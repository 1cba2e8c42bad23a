// The sessions book among several replicas (Replicas.clustered): every replica keeps the live sessions in
// memory (placement counts them, the API and the policy read them), so each write of a session is announced
// with a NOTIFY on `streamspace_session` and the other replicas take the stored record into their books (it
// enters, moves on, or leaves when ended). The record is re-read, not carried in the message, so an
// announcement that arrives late never puts an older state back; the read and the put run under the session's
// lock, as every local transition does.
import type { SessionId } from "@streamspace/protocol"
import { Effect } from "effect"
import type { ReplicasShape } from "../../Replicas.ts"
import { type Book, ended, put } from "./book.ts"
import type { SessionRepo } from "./repo.ts"

export const SESSION_CHANNEL = "streamspace_session"

/** The repository, with every session write announced to the other replicas. */
export const announcing = (repo: SessionRepo, replicas: ReplicasShape): SessionRepo => {
  const announce = (id: string) => replicas.notify(SESSION_CHANNEL, `${replicas.self.id}\t${id}`)
  return {
    ...repo,
    insertSession: (r, actor) => Effect.tap(repo.insertSession(r, actor), () => announce(r.id)),
    insertSessions: (records) => Effect.tap(repo.insertSessions(records), () => Effect.forEach(records, ({ record }) => announce(record.id), { discard: true })),
    updateSession: (r, from, actor) => Effect.tap(repo.updateSession(r, from, actor), () => announce(r.id))
  }
}

/** Another replica wrote this session: the book takes the stored record. */
const reload = (book: Book, id: SessionId) =>
  book.sessionLock(id)(Effect.gen(function*() {
    const stored = yield* book.repo.getSession(id)
    if (stored === undefined) return
    const current = book.sessions.get(id)
    if (current === undefined && ended(stored.state)) return
    // A newer record of the same state is kept (a same-state report changes only the book: reason and message
    // are not stored). A different state is the store's word: every local state change is stored before the
    // book takes it, so a book showing another state is behind, however recent its clock says it is (the
    // create's outcome, applied here after the holder stored `running`, left this book at `creating`).
    if (current !== undefined && current.state === stored.state && current.updatedAt.getTime() > stored.updatedAt.getTime()) return
    // Command ids live with the commands, not in the session row: the ones this replica knows are kept.
    put(book, {
      ...stored,
      createCommandId: stored.createCommandId ?? current?.createCommandId,
      deleteCommandId: stored.deleteCommandId ?? current?.deleteCommandId,
      hibernateCommandId: stored.hibernateCommandId ?? current?.hibernateCommandId
    })
  })).pipe(Effect.catch((e) => Effect.logWarning(`session ${id}: could not take another replica's change: ${e.message}`)))

/** Takes the other replicas' session writes into the book for as long as the scope lives. */
export const followOtherReplicas = (book: Book, replicas: ReplicasShape) =>
  replicas.listen(SESSION_CHANNEL, (payload) => {
    const [from, id] = payload.split("\t")
    return from === replicas.self.id || id === undefined ? Effect.void : reload(book, id as SessionId)
  })

export const ACTIVITY_CHANNEL = "streamspace_session_activity"
/** A viewer's input is shared at most this often per session (the idle limits are minutes, not milliseconds). */
const INPUT_SHARE_MS = 1000

export type ActivityKind = "input" | "keepalive"

/**
 * User activity (viewer input through this replica's proxy, keep-alives through its API) shared with the
 * other replicas, so that whichever leads the policy pass sees it; input at most once a second per session.
 */
export const makeActivitySharing = (replicas: ReplicasShape, apply: (kind: ActivityKind, id: SessionId, by: string) => Effect.Effect<void>) => {
  const lastShared = new Map<SessionId, number>()
  const share = (kind: ActivityKind, id: SessionId, by: string, now: number) => {
    if (!replicas.clustered) return Effect.void
    if (kind === "input") {
      if (now - (lastShared.get(id) ?? 0) < INPUT_SHARE_MS) return Effect.void
      lastShared.set(id, now)
      if (lastShared.size > 10_000) lastShared.clear()
    }
    return replicas.notify(ACTIVITY_CHANNEL, [replicas.self.id, kind, id, by].join("\t"))
  }
  const listen = replicas.clustered
    ? replicas.listen(ACTIVITY_CHANNEL, (payload) => {
      const [from, kind, id, by] = payload.split("\t")
      if (from === replicas.self.id || id === undefined || by === undefined || (kind !== "input" && kind !== "keepalive")) return Effect.void
      return apply(kind, id as SessionId, by)
    })
    : Effect.void
  return { share, listen }
}

/**
 * Whether this replica acts on the policy's deadlines: the leader of `session-policy` (every replica computes
 * the warnings the API shows; one hibernates or deletes). With one process, always.
 */
export const policyLeadership = (replicas: ReplicasShape) =>
  Effect.gen(function*() {
    if (!replicas.clustered) return () => true
    let leading = false
    yield* replicas.asLeader(
      "session-policy",
      Effect.scoped(Effect.andThen(
        Effect.acquireRelease(Effect.sync(() => {
          leading = true
        }), () =>
          Effect.sync(() => {
            leading = false
          })),
        Effect.never
      ))
    )
    return () => leading
  })
