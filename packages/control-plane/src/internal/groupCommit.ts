// Group commit: calls that arrive while a batch is being written wait and are written together, as one statement,
// in the order they arrived. A lone call is written at once (a batch of one), so nothing waits for a timer; under
// a burst (1,000 creates at once) the database commits a few multi-row statements instead of one per call, which
// is what the single embedded database thread (and a PostgreSQL round trip per statement) cannot keep up with.
//
// Each caller gets its own outcome: when a batch fails (one row's missing reference, say), its calls are written
// one at a time, so only the call at fault fails. A call returns once its row is committed, never before.
import { Array as Arr, Deferred, Effect, Exit, Queue, type Scope } from "effect"
import type { NonEmptyReadonlyArray } from "effect/Array"

export interface GroupCommitOptions<I, O, E> {
  /** Writes one call (a lone call, and each call of a failed batch). */
  readonly one: (item: I) => Effect.Effect<O, E>
  /** Writes several calls in one statement; the outcomes in the order of `items`. */
  readonly many: (items: NonEmptyReadonlyArray<I>) => Effect.Effect<ReadonlyArray<O>, E>
  /** Calls per batch at most (the statement's parameters grow with it). */
  readonly max: number
}

/** Calls per batch at most: a few hundred rows keep a statement's parameters far below PostgreSQL's 65,535. */
export const GROUP_COMMIT_MAX = 200

interface Call<I, O, E> {
  readonly item: I
  readonly done: Deferred.Deferred<O, E>
}

/** Makes the writer; its fiber lives as long as the scope. */
export const makeGroupCommit = <I, O, E>(options: GroupCommitOptions<I, O, E>): Effect.Effect<(item: I) => Effect.Effect<O, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const calls = yield* Queue.unbounded<Call<I, O, E>>()
    const settle = (call: Call<I, O, E>, exit: Exit.Exit<O, E>) => Deferred.done(call.done, exit)
    const writeEach = (batch: ReadonlyArray<Call<I, O, E>>) =>
      Effect.forEach(batch, (call) => Effect.flatMap(Effect.exit(options.one(call.item)), (exit) => settle(call, exit)), { discard: true })
    let inFlight: ReadonlyArray<Call<I, O, E>> = []
    const write = (batch: NonEmptyReadonlyArray<Call<I, O, E>>) =>
      Effect.sync(() => (inFlight = batch)).pipe(Effect.andThen(writeBatch(batch)), Effect.ensuring(Effect.sync(() => (inFlight = []))))
    const writeBatch = (batch: NonEmptyReadonlyArray<Call<I, O, E>>) =>
      batch.length === 1
        ? writeEach(batch)
        : Effect.flatMap(Effect.exit(options.many(Arr.map(batch, (c) => c.item))), (exit) =>
          Exit.isSuccess(exit)
            ? Effect.forEach(batch, (call, i) => settle(call, Exit.succeed(exit.value[i]!)), { discard: true })
            : writeEach(batch))
    // When the scope closes, the calls not written (in flight or queued) are interrupted, and so are later ones:
    // none waits for a writer that is gone.
    const stop = Effect.gen(function*() {
      const left = [...inFlight, ...(yield* Queue.clear(calls))]
      yield* Queue.shutdown(calls)
      yield* Effect.forEach(left, (call) => Deferred.interrupt(call.done), { discard: true })
    })
    yield* Effect.forkScoped(
      Effect.forever(Effect.flatMap(Queue.takeBetween(calls, 1, options.max), (batch) => Arr.isReadonlyArrayNonEmpty(batch) ? write(batch) : Effect.void)).pipe(
        Effect.ensuring(stop)
      )
    )
    return (item: I) =>
      Effect.flatMap(Deferred.make<O, E>(), (done) => Queue.offerUnsafe(calls, { item, done }) ? Deferred.await(done) : Effect.interrupt)
  })
