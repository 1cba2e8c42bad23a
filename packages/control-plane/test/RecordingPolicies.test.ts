// The Store's recording policy table on the embedded database: a template without a row is `off`, the
// admin's policy and the owner's choice are upserted, and the CHECK constraint keeps other policies out.
import { assert, layer } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as Database from "../src/Database.ts"
import { Store } from "../src/Store.ts"

layer(Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerMemory)), { timeout: "240 seconds", excludeTestServices: true })("recording policies in the Store", (it) => {
  it.effect("template policy (default off) and session choice, set and replaced", () =>
    Effect.gen(function*() {
      const { recordingPolicies: t } = yield* Store
      assert.strictEqual(yield* t.templatePolicy("demo"), "off")
      yield* t.setTemplatePolicy("demo", "optional")
      assert.strictEqual(yield* t.templatePolicy("demo"), "optional")
      yield* t.setTemplatePolicy("demo", "always")
      assert.strictEqual(yield* t.templatePolicy("demo"), "always")
      assert.isUndefined(yield* t.sessionChoice("s-1"))
      yield* t.setSessionChoice("s-1", true)
      assert.isTrue(yield* t.sessionChoice("s-1"))
      yield* t.setSessionChoice("s-1", false)
      assert.isFalse(yield* t.sessionChoice("s-1"))
      const sql = yield* SqlClient
      const refused = yield* Effect.result(sql`INSERT INTO recording_template_policies (template, policy, updated_at) VALUES ('x', 'sometimes', now())`)
      assert.strictEqual(refused._tag, "Failure")
    }))
})
