// An in-memory CommandDispatcher for unit tests: records every command, lets the test (or an automatic
// responder playing the agent) complete or fail it, and lets callers await outcomes.
import type { AgentId, Command, CommandError, CommandId, CommandResult } from "@streamspace/protocol"
import { Deferred, Effect, Layer } from "effect"
import {
  CommandDispatcher,
  CommandDispatcherError,
  type CommandDispatcherShape,
  type CommandOutcome,
  type CommandRecord,
  type CommandRequest
} from "../../src/CommandDispatcher.ts"

export interface Dispatched {
  readonly record: CommandRecord
  readonly agentId: AgentId
  readonly request: CommandRequest
}

export type Answer = { readonly result: CommandResult } | { readonly error: CommandError }

export interface FakeDispatcher extends CommandDispatcherShape {
  readonly commands: Array<Dispatched>
  readonly complete: (id: CommandId, result: CommandResult) => Effect.Effect<void>
  readonly fail: (id: CommandId, error: CommandError) => Effect.Effect<void>
  /** Answers commands as they are dispatched, like an agent would; undefined leaves them to the test. */
  responder: (d: Dispatched) => Answer | undefined
  /** Makes dispatch fail (e.g. the store is down). */
  failDispatch: boolean
  /** Runs before dispatch returns (e.g. an agent report overtaking the dispatch). */
  beforeReturn: (d: Dispatched) => Effect.Effect<void>
}

export const makeFakeDispatcher = Effect.gen(function*() {
  const records = new Map<string, CommandRecord>()
  const outcomes = new Map<string, Deferred.Deferred<CommandOutcome>>()
  const commands: Array<Dispatched> = []
  let n = 0
  const settle = (id: CommandId, answer: Answer) =>
    Effect.suspend(() => {
      const r = records.get(id)
      const d = outcomes.get(id)
      if (r === undefined || d === undefined) return Effect.die(new Error(`no command ${id}`))
      const at = new Date(0)
      if ("result" in answer) {
        const record: CommandRecord = { ...r, state: "completed", result: answer.result, completedAt: at }
        records.set(id, record)
        return Deferred.succeed(d, { _tag: "Completed", record, result: answer.result }).pipe(Effect.asVoid)
      }
      const record: CommandRecord = { ...r, state: "failed", error: answer.error, failedAt: at }
      records.set(id, record)
      return Deferred.succeed(d, { _tag: "Failed", record, error: answer.error }).pipe(Effect.asVoid)
    })
  const fake: FakeDispatcher = {
    commands,
    responder: () => undefined,
    failDispatch: false,
    beforeReturn: () => Effect.void,
    complete: (id, result) => settle(id, { result }),
    fail: (id, error) => settle(id, { error }),
    dispatch: (agentId, request, options) =>
      Effect.gen(function*() {
        if (fake.failDispatch) return yield* new CommandDispatcherError({ reason: "Store", message: "store is down" })
        const id = `c-${++n}` as CommandId
        const deadline = new Date(300_000)
        const record: CommandRecord = {
          id,
          agentId,
          sessionId: options?.sessionId,
          command: { command_id: id, deadline: deadline.toISOString(), ...request } as Command,
          action: request.action,
          state: "sent",
          result: undefined,
          error: undefined,
          attempts: 1,
          deadline,
          createdAt: new Date(0),
          sentAt: new Date(0),
          ackedAt: undefined,
          completedAt: undefined,
          failedAt: undefined
        }
        records.set(id, record)
        outcomes.set(id, yield* Deferred.make<CommandOutcome>())
        const d: Dispatched = { record, agentId, request }
        commands.push(d)
        const answer = fake.responder(d)
        if (answer !== undefined) yield* settle(id, answer)
        yield* fake.beforeReturn(d)
        return record
      }),
    await: (id) =>
      Effect.suspend(() => {
        const d = outcomes.get(id)
        return d === undefined
          ? Effect.fail(new CommandDispatcherError({ reason: "NotFound", message: `no command ${id}` }))
          : Deferred.await(d)
      }),
    get: (id) =>
      Effect.suspend(() => {
        const r = records.get(id)
        return r === undefined ? Effect.fail(new CommandDispatcherError({ reason: "NotFound", message: `no command ${id}` })) : Effect.succeed(r)
      })
  }
  return fake
})

export const fakeDispatcherLayer = (d: FakeDispatcher) => Layer.succeed(CommandDispatcher, d)
