// The control-plane image (docker/control-plane), built by `npm run images:build`, run as its chart runs it
// (uid 10001, its ENTRYPOINT and ENV) with a fresh volume as DATA_DIR: it serves /api/v1/health, the web UI and
// /metrics, keeps its embedded database on the volume, and the agent image enrols at it and tunnels a session's
// VNC through it. It listens on 127.0.0.1 here (HOST), since the container shares this machine's network.
import { assert, describe, it } from "@effect/vitest"
import { images, waitFor } from "@streamspace/testbed"
import { Effect } from "effect"
import { chownSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import * as path from "node:path"
import * as S from "../support/stack.ts"
import { CHART_USER, enrol, sessionFrame, startAgentContainer } from "./agentContainer.ts"
import * as B from "./buildah.ts"

/** A fresh volume for DATA_DIR, owned by the chart's user as its fsGroup makes it. */
const dataVolume = Effect.acquireRelease(
  Effect.sync(() => {
    const dir = mkdtempSync(path.join(tmpdir(), "control-plane-data-"))
    chownSync(dir, 10001, 10001)
    return dir
  }),
  (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
)

const get = (url: string) =>
  Effect.promise(async () => {
    const res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
    return { status: res.status, type: res.headers.get("content-type") ?? "", text: await res.text() }
  })

describe("control-plane image", () => {
  it.live("serves health, the web UI and metrics from a fresh DATA_DIR; the agent image connects to it and tunnels VNC", () =>
    Effect.gen(function*() {
      const config = yield* B.requireImage(images.controlPlane)
      assert.deepStrictEqual(config.Entrypoint, ["node", "packages/control-plane/src/main.ts"])
      assert.strictEqual(B.imageEnv(config)["DATA_DIR"], "/data")
      const data = yield* dataVolume
      const c = yield* B.container(images.controlPlane)
      const port = yield* S.freePort
      const proc = yield* B.run(c, config.Entrypoint, {
        user: CHART_USER,
        env: {
          HOST: "127.0.0.1",
          PORT: String(port),
          JWT_SECRET: S.JWT_SECRET,
          AGENT_BOOTSTRAP_TOKEN: S.BOOTSTRAP_TOKEN,
          HEARTBEAT_INTERVAL: "1s",
          LOG_LEVEL: "info"
        },
        volumes: [`${data}:/data`]
      })
      const url = `http://127.0.0.1:${port}`

      const health = yield* waitFor(
        "the control plane's /api/v1/health",
        Effect.promise(() => fetch(`${url}/api/v1/health`).then((r) => (r.ok ? r.json() : undefined), () => undefined)),
        { timeout: 90_000, interval: 250 }
      ).pipe(Effect.catch((e) => Effect.die(new Error(`${e.message}\n${proc.output()}`))))
      assert.strictEqual(health.status, "ok")
      const ui = yield* get(`${url}/`)
      assert.strictEqual(ui.status, 200)
      assert.include(ui.type, "text/html")
      for (const file of ["/ui/app.js", "/vendor/novnc/core/rfb.js"]) assert.strictEqual((yield* get(`${url}${file}`)).status, 200, file)
      const metrics = yield* get(`${url}/metrics`)
      assert.strictEqual(metrics.status, 200)
      assert.match(metrics.text, /^streamspace_control_plane_\w+/m)
      assert.isAbove(readdirSync(data).length, 0, "the embedded database lives in DATA_DIR, on the volume")

      // The agent image against the control-plane image: enrolment, approval, a session, VNC through both.
      const cluster = yield* S.makeCluster()
      const cp = { url, wsUrl: `ws://127.0.0.1:${port}`, admin: S.api(url, S.adminToken()) }
      const agent = yield* startAgentContainer(cluster, cp.wsUrl, "image-agent-cp")
      yield* enrol(cp, agent, "image-agent-cp")
      const { rfb } = yield* sessionFrame(cp, "bob")
      assert.strictEqual(rfb.width, 64)
      assert.isTrue(rfb.framebuffer.some((b) => b !== 0), "the desktop's frame came through both images")

      // The images' STOPSIGNAL (SIGTERM) to the containers' main processes: both stop cleanly.
      yield* B.stop(agent.proc, agent.config)
      assert.strictEqual(yield* agent.proc.exited, 0, agent.proc.output())
      yield* B.stop(proc, config)
      assert.strictEqual(yield* proc.exited, 0, proc.output())
    }), 180_000)
})
