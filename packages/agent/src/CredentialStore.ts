// CredentialStore: keeps the per-agent credential the control plane issues on approval, in a Kubernetes
// Secret in NAMESPACE (in a cluster) or a file (outside one), so restarts skip enrolment.
import type { Effect, Option, Redacted } from "effect"
import { Context, Schema } from "effect"

export class CredentialStoreError extends Schema.TaggedError<CredentialStoreError>()("CredentialStoreError", {
  reason: Schema.Literals(["Read", "Write"]),
  message: Schema.String
}) {}

export interface CredentialStoreShape {
  readonly load: Effect.Effect<Option.Option<Redacted.Redacted<string>>, CredentialStoreError>
  readonly save: (token: Redacted.Redacted<string>) => Effect.Effect<void, CredentialStoreError>
}

export class CredentialStore extends Context.Service<CredentialStore, CredentialStoreShape>()("agent/CredentialStore") {}
