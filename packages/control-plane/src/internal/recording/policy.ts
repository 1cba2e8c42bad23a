// Whether a session is recorded: the template's policy (set by an admin: `off`, `optional`, `always`; no
// policy is `off`) and, when it is `optional`, the owner's choice for the session (default: not recorded).
// The repository is the Store's `recordingPolicies` table, or a map for tests that run without a database.
import { Effect } from "effect"
import type { RecordingPolicy } from "../store/recordingPolicies.ts"
import type { StoreError } from "../store/error.ts"

export type { RecordingPolicy } from "../store/recordingPolicies.ts"
export const RECORDING_POLICIES: ReadonlyArray<RecordingPolicy> = ["off", "optional", "always"]

export interface PolicyRepo {
  readonly templatePolicy: (template: string) => Effect.Effect<RecordingPolicy, StoreError>
  readonly setTemplatePolicy: (template: string, policy: RecordingPolicy) => Effect.Effect<void, StoreError>
  readonly sessionChoice: (sessionId: string) => Effect.Effect<boolean | undefined, StoreError>
  readonly setSessionChoice: (sessionId: string, enabled: boolean) => Effect.Effect<void, StoreError>
}

export const memoryPolicyRepo = (): PolicyRepo => {
  const templates = new Map<string, RecordingPolicy>()
  const choices = new Map<string, boolean>()
  return {
    templatePolicy: (t) => Effect.sync(() => templates.get(t) ?? "off"),
    setTemplatePolicy: (t, p) => Effect.sync(() => void templates.set(t, p)),
    sessionChoice: (id) => Effect.sync(() => choices.get(id)),
    setSessionChoice: (id, e) => Effect.sync(() => void choices.set(id, e))
  }
}

/** Whether a session with this template policy and owner choice is recorded. */
export const effective = (policy: RecordingPolicy, choice: boolean | undefined): boolean =>
  policy === "always" ? true : policy === "optional" ? choice === true : false
