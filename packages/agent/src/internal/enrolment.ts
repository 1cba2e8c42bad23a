// Which credential the agent dials with, and keeping the one the control plane issues. On approval (and
// on rotation) the control plane sends a per-agent credential over the socket; it is saved for restarts
// and used for every later dial, even when saving failed. Before one exists: the saved one, else AGENT_TOKEN.
import { Effect, Option, Redacted } from "effect"
import type { CredentialStoreShape } from "../CredentialStore.ts"

export interface Enrolment {
  /** The token for the next dial: an issued credential, else the saved one, else AGENT_TOKEN. */
  readonly token: Effect.Effect<Option.Option<Redacted.Redacted<string>>>
  /** Keeps a credential issued over the socket. */
  readonly accept: (token: string) => Effect.Effect<void>
}

export const makeEnrolment = (agentToken: Option.Option<Redacted.Redacted<string>>, credentials: CredentialStoreShape): Enrolment => {
  let issued: Option.Option<Redacted.Redacted<string>> = Option.none()
  return {
    token: Effect.gen(function*() {
      if (Option.isSome(issued)) return issued
      const saved = yield* credentials.load.pipe(
        Effect.catch((e) => Effect.logWarning(`could not read the saved agent credential, using AGENT_TOKEN: ${e.message}`).pipe(Effect.as(Option.none())))
      )
      return Option.isSome(saved) ? saved : agentToken
    }),
    accept: (token) =>
      Effect.gen(function*() {
        const secret = Redacted.make(token, { label: "credential" })
        issued = Option.some(secret)
        yield* credentials.save(secret).pipe(
          Effect.tap(() => Effect.logInfo("saved the per-agent credential issued by the control plane")),
          Effect.catch((e) => Effect.logError(`could not save the issued credential (using it in memory until restart): ${e.message}`))
        )
      })
  }
}
