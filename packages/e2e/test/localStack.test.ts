// The quick start's composition in this process (LocalStack: control plane, agent, demo cluster): each half
// keeps its own metric registry, so each /metrics shows only its own series, and the control plane's series
// exist from the start with zero values.
import { assert, describe, it } from "@effect/vitest"
import { LocalStack } from "@streamspace/e2e"
import { Context, Effect, Layer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const text = (url: string) => Effect.promise(() => fetch(url).then((r) => r.text()))

describe("LocalStack", () => {
  it.live("the control plane and the agent each serve only their own metrics, from the start", () =>
    Effect.gen(function*() {
      const dir = yield* Effect.acquireRelease(Effect.sync(() => mkdtempSync(join(tmpdir(), "localstack-"))), (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true })))
      const stack = LocalStack.layer({ port: 0, host: "127.0.0.1", dataDir: dir, kubeconfig: undefined, demoStartDelayMs: 10, env: { LOG_LEVEL: "error" } })
      const q = Context.get(yield* Layer.build(stack), LocalStack)
      assert.isTrue(q.agentOnline)

      const cp = yield* text(`${q.url}metrics`)
      assert.include(cp, "streamspace_control_plane_")
      assert.notInclude(cp, "streamspace_agent_")
      // Series with known labels are there before anything happened.
      assert.match(cp, /streamspace_control_plane_commands_total\{[^}]*action="create_session"[^}]*\} 0/)
      assert.match(cp, /streamspace_control_plane_command_duration_seconds_count\{[^}]*action="create_session"[^}]*\} 0/)
      assert.match(cp, /streamspace_control_plane_session_transitions_total\{[^}]*state="running"[^}]*\} 0/)

      const agent = yield* text(`${q.agentUrl}/metrics`)
      assert.include(agent, "streamspace_agent_")
      assert.notInclude(agent, "streamspace_control_plane_")

      // The agent's health and metrics port answers on loopback only (127.0.0.2 is this machine, not 127.0.0.1).
      const port = new URL(q.agentUrl).port
      const fromElsewhere = yield* Effect.promise(() => fetch(`http://127.0.0.2:${port}/health`).then(() => "answered", (e: Error) => String((e.cause as { code?: string } | undefined)?.code ?? e.message)))
      assert.strictEqual(fromElsewhere, "ECONNREFUSED")
    }), 180_000)
})
