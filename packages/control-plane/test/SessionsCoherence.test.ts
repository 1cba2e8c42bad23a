// The sessions book of one replica following another replica's writes (internal/sessions/coherence.ts). The race
// found with three processes (e2e ha/threeReplicas): the session is created through B, its agent is on A; A stores
// `running` from the agent's report, then B applies the create command's outcome (the pod as it was, `creating`,
// ContainerCreating), a same-state change that only B's book takes, with B's later clock; A's announcement is
// handled after it. B's book must take the stored `running`, not keep `creating` because its clock is later.
import { assert, describe, it } from "@effect/vitest"
import type { AgentId, SessionId, SessionSpec, TemplateName, UserId } from "@streamspace/protocol"
import { Effect } from "effect"
import { makeBook, put } from "../src/internal/sessions/book.ts"
import { followOtherReplicas, SESSION_CHANNEL } from "../src/internal/sessions/coherence.ts"
import { Replicas } from "../src/Replicas.ts"
import { makeMemoryRepo, type SessionRecord } from "../src/Sessions.ts"
import { makeFakeDispatcher } from "./support/fakeDispatcher.ts"

const at = (ms: number) => new Date(Date.UTC(2026, 0, 1) + ms)
const record = (state: SessionRecord["state"], reason: string | undefined, updatedMs: number): SessionRecord => ({
  id: "s-0123456789ab" as SessionId,
  userId: "ann" as UserId,
  template: "demo" as TemplateName,
  agentId: "agent-a" as AgentId,
  region: undefined,
  state,
  reason,
  message: undefined,
  spec: { user_id: "ann", template: "demo", image: "img:1", persistent_home: false, vnc_port: 5900 } as SessionSpec,
  createCommandId: undefined,
  deleteCommandId: undefined,
  createdAt: at(0),
  updatedAt: at(updatedMs)
})

/**
 * Replica B's book over the shared store, following announcements; `announce` is another replica's NOTIFY (the
 * single-process Replicas hands it to the listener at once, so it has been handled when `announce` returns).
 */
const setup = (stored: SessionRecord, inBook: SessionRecord) =>
  Effect.gen(function*() {
    const repo = makeMemoryRepo()
    repo.sessions.set(stored.id, stored)
    const book = yield* makeBook(repo, yield* makeFakeDispatcher)
    put(book, inBook)
    const replicas = yield* Replicas
    yield* followOtherReplicas(book, replicas)
    const announce = replicas.notify(SESSION_CHANNEL, `another-replica\t${stored.id}`)
    return { book, announce }
  }).pipe(Effect.provide(Replicas.layerSingle))

describe("sessions coherence between replicas", () => {
  it.effect("a stored state other than the book's is taken, though the book's record is more recent by its clock", () =>
    Effect.scoped(Effect.gen(function*() {
      const { book, announce } = yield* setup(record("running", undefined, 404), record("creating", "ContainerCreating", 416))
      yield* announce
      const now = book.sessions.get("s-0123456789ab")
      assert.strictEqual(now?.state, "running")
      assert.strictEqual(now?.updatedAt.getTime(), at(404).getTime())
    })))

  it.effect("a more recent record of the same state keeps what only the book has (its reason)", () =>
    Effect.scoped(Effect.gen(function*() {
      const { book, announce } = yield* setup(record("creating", undefined, 100), record("creating", "ContainerCreating", 200))
      yield* announce
      const s = book.sessions.get("s-0123456789ab")
      assert.strictEqual(s?.reason, "ContainerCreating")
      assert.strictEqual(s?.updatedAt.getTime(), at(200).getTime())
    })))
})
