// Recording policy: per template (the admin's `off | optional | always`; no row is `off`) and the owner's
// choice per session (used when the template's policy is `optional`). The recordings themselves and their
// index are not here: they live in RecordingStorage, next to the data.
import { Effect } from "effect"
import type { Db, Row } from "./db.ts"

export type RecordingPolicy = "off" | "optional" | "always"

export const makeRecordingPolicies = ({ now, q, sql }: Db) => ({
  templatePolicy: Effect.fn("Store.recordingPolicies.templatePolicy")(function*(template: string) {
    const rows = yield* q("template", template, sql<Row>`SELECT policy FROM recording_template_policies WHERE template = ${template}`)
    return (rows[0]?.policy as RecordingPolicy | undefined) ?? "off"
  }),
  setTemplatePolicy: Effect.fn("Store.recordingPolicies.setTemplatePolicy")(function*(template: string, policy: RecordingPolicy) {
    const at = yield* now
    yield* q(
      "template",
      template,
      sql`INSERT INTO recording_template_policies ${sql.insert({ template, policy, updated_at: at })}
        ON CONFLICT (template) DO UPDATE SET policy = EXCLUDED.policy, updated_at = EXCLUDED.updated_at`
    )
  }),
  /** The owner's choice for a session; undefined when never made. */
  sessionChoice: Effect.fn("Store.recordingPolicies.sessionChoice")(function*(sessionId: string) {
    const rows = yield* q("session", sessionId, sql<Row>`SELECT enabled FROM recording_session_choices WHERE session_id = ${sessionId}`)
    return rows[0] === undefined ? undefined : Boolean(rows[0].enabled)
  }),
  setSessionChoice: Effect.fn("Store.recordingPolicies.setSessionChoice")(function*(sessionId: string, enabled: boolean) {
    const at = yield* now
    yield* q(
      "session",
      sessionId,
      sql`INSERT INTO recording_session_choices ${sql.insert({ session_id: sessionId, enabled, updated_at: at })}
        ON CONFLICT (session_id) DO UPDATE SET enabled = EXCLUDED.enabled, updated_at = EXCLUDED.updated_at`
    )
  })
})

export type RecordingPoliciesTable = ReturnType<typeof makeRecordingPolicies>
