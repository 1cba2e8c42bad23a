// The agent image (docker/agent), built by `npm run images:build`, run as the chart runs it: without AGENT_ID it
// stops with the message naming it; with a kubeconfig copied in and a control plane, kube-testserver and
// vnc-testserver in this process, it enrols, comes online, runs a session and tunnels VNC; the image's
// HEALTHCHECK command passes while it runs; SIGTERM (the image's STOPSIGNAL) stops it gracefully.
import { assert, describe, it } from "@effect/vitest"
import { images, within } from "@streamspace/testbed"
import { Effect } from "effect"
import * as S from "../support/stack.ts"
import { CHART_USER, enrol, sessionFrame, startAgentContainer } from "./agentContainer.ts"
import * as B from "./buildah.ts"

/** Runs the image's HEALTHCHECK command in the container, as the runtime would; returns its exit code. */
const healthcheck = (c: B.Container, config: B.ImageConfig, env: Record<string, string>) =>
  Effect.gen(function*() {
    const [kind, ...argv] = config.Healthcheck!.Test
    assert.strictEqual(kind, "CMD", "exec-form HEALTHCHECK")
    const check = yield* B.run(c, argv, { user: CHART_USER, env })
    return yield* check.exited
  }).pipe(Effect.scoped)

describe("agent image", () => {
  it.live("without AGENT_ID it exits non-zero with a message naming the variable", () =>
    Effect.gen(function*() {
      const config = yield* B.requireImage(images.agent)
      const c = yield* B.container(images.agent)
      const proc = yield* B.run(c, config.Entrypoint, { user: CHART_USER })
      assert.notStrictEqual(yield* proc.exited, 0)
      assert.match(proc.output(), /streamspace-agent: configuration error: AGENT_ID is required/)
    }), 60_000)

  it.live("enrols at a control plane, comes online, runs a session and tunnels VNC; healthy; SIGTERM stops it gracefully", () =>
    Effect.gen(function*() {
      const cluster = yield* S.makeCluster()
      const cp = yield* S.startControlPlane(S.SYSTEM_ENV)
      const agent = yield* startAgentContainer(cluster, cp.wsUrl, "image-agent")
      assert.deepStrictEqual(agent.config.Entrypoint, ["node", "--max-semi-space-size=1", "packages/agent/dist/main.mjs"])
      assert.strictEqual(agent.config.User, CHART_USER)

      yield* enrol(cp, agent, "image-agent")
      const { rfb, session } = yield* sessionFrame(cp, "alice")
      assert.strictEqual(rfb.name, "system desktop")
      assert.strictEqual(rfb.framebuffer.length, 64 * 48 * 4)
      assert.isTrue(rfb.framebuffer.some((b) => b !== 0), "the desktop's frame came through the tunnel")
      rfb.type("from the image")
      yield* S.waitFor("typed text at the VNC server", Effect.map(cluster.vnc.state, (st) => st.typedText.includes("from the image")))

      // The HEALTHCHECK the image declares, run inside it the way a container runtime runs it.
      assert.strictEqual(yield* healthcheck(agent.container, agent.config, agent.env), 0, agent.proc.output())
      const metrics = yield* Effect.promise(() => fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`).then((r) => r.text()))
      assert.match(metrics, /^streamspace_agent_vnc_tunnels_active(\{[^}]*\})? 1$/m)

      // SIGTERM to the entrypoint's process: the agent says goodbye, closes the tunnel and exits 0; the session
      // keeps running in the cluster.
      assert.strictEqual(agent.config.StopSignal, "SIGTERM")
      yield* B.stop(agent.proc, agent.config)
      assert.strictEqual(yield* agent.proc.exited, 0, agent.proc.output())
      assert.match(agent.proc.output(), /shutting down/)
      yield* within(10_000, "the viewer to be closed", Effect.promise(() => rfb.closed))
      yield* S.waitForAgent(cp, "image-agent", "disconnected", (a) => !a.connected)
      assert.include(S.sessionIdsIn(cluster), session.id)
      assert.deepStrictEqual(agent.proc.processes(), [], "nothing left running in the container")
      assert.notStrictEqual(yield* healthcheck(agent.container, agent.config, agent.env), 0, "the HEALTHCHECK fails once the agent is gone")
    }), 120_000)
})
