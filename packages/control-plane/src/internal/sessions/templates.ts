// What a template change means for a session that already exists: it keeps the spec it was created with,
// except that a session whose pod is made again (a resume) gets the template's current image, so an image
// bump reaches it; when the template is gone, the session's own spec stands.
import type { SessionSpec } from "@streamspace/protocol"
import { Effect } from "effect"
import type { SessionRecord } from "../../Store.ts"
import type { SessionRepo } from "./repo.ts"

/** The spec to make a session's pod again with (resume). */
export const resumeSpec = (repo: SessionRepo, s: Pick<SessionRecord, "template" | "spec">): Effect.Effect<SessionSpec> =>
  repo.getTemplate(s.template).pipe(
    Effect.map((t) => (t === undefined || t.image === s.spec.image ? s.spec : { ...s.spec, image: t.image })),
    // A store that cannot answer must not stop a resume: the image the session was created with still works.
    Effect.orElseSucceed(() => s.spec)
  )
