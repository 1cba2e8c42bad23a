// The whole agent (Agent.layerKubernetes, and main.ts as a process) against kube-testserver through the
// real Kubernetes client, and the test control plane through a real WebSocket.
import { assert, describe, it } from "@effect/vitest"
import { Context, Deferred, Effect, Exit, Layer, Scope } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Agent } from "../src/Agent.ts"
import { Health } from "../src/Health.ts"
import { Kubernetes } from "../src/Kubernetes.ts"
import { fastKube, makeCluster, sessionSpec } from "./support/cluster.ts"
import type { Cluster } from "./support/cluster.ts"
import { configLayer, freePort, TOKEN } from "./support/harness.ts"
import * as TestControlPlane from "./support/TestControlPlane.ts"

const FAR = "2099-01-01T00:00:00.000Z"
const REPO = fileURLToPath(new URL("../../../", import.meta.url))

const startAgent = (cluster: Cluster, url: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const layer = Agent.layerKubernetes(Kubernetes.layerWith(fastKube)).pipe(
      Layer.provideMerge(configLayer({ ...cluster.env, CONTROL_PLANE_URL: url, AGENT_TOKEN: TOKEN, LOG_LEVEL: "error" }, { healthPort: 0, metricsPort: 0 }))
    )
    const ctx = yield* Layer.buildWithScope(layer, scope)
    return { scope, health: Context.get(ctx, Health) }
  })

describe("Agent on kube-testserver", () => {
  it.live("create, observe, list and delete a session; a restarted agent reports it in hello", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const cp = yield* TestControlPlane.make()
      const first = yield* startAgent(cluster, cp.url)
      const conn = yield* cp.nextConnection
      assert.deepStrictEqual((yield* conn.next("hello")).payload.sessions, [])

      yield* conn.send("command", { command_id: "c-create", action: "create_session", deadline: FAR, args: { session_id: "s-int", spec: sessionSpec() } } as never)
      yield* conn.next("command_ack")
      const created = yield* conn.next("command_completed")
      assert.strictEqual(created.payload.result.action, "create_session")
      while ((yield* conn.next("session_status")).payload.phase !== "running") {
        // creating / pending first
      }

      yield* conn.send("command", { command_id: "c-list", action: "list_sessions", deadline: FAR, args: {} } as never)
      const listed = yield* conn.next("command_completed")
      assert.deepStrictEqual((listed.payload.result as unknown as { sessions: Array<{ session_id: string }> }).sessions.map((s) => s.session_id), ["s-int"])

      // restart: the session keeps running in the cluster and shows up in the next hello
      yield* Scope.close(first.scope, Exit.void)
      yield* conn.next("goodbye")
      const second = yield* startAgent(cluster, cp.url)
      const conn2 = yield* cp.nextConnection
      const hello = yield* conn2.next("hello")
      assert.deepStrictEqual(hello.payload.sessions.map((s) => [s.session_id, s.phase]), [["s-int", "running"]])

      yield* conn2.send("command", { command_id: "c-delete", action: "delete_session", deadline: FAR, args: { session_id: "s-int" } } as never)
      const deleted = yield* conn2.next("command_completed")
      assert.deepStrictEqual(deleted.payload.result as unknown, { action: "delete_session", session_id: "s-int" })
      while ((yield* conn2.next("session_status")).payload.phase !== "terminated") {
        // terminating first
      }
      const hb = yield* conn2.next("heartbeat")
      assert.strictEqual(hb.payload.status, "online")
      yield* Scope.close(second.scope, Exit.void)
    }), 60_000)

  it.live("npm start: main.ts runs an agent from env vars, logs JSON with the agent id, and exits 0 on SIGTERM after goodbye", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const cp = yield* TestControlPlane.make()
      const healthPort = yield* freePort
      const exited = yield* Deferred.make<{ code: number | null; stdout: string; stderr: string }>()
      const child = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const c = spawn(`${REPO}node_modules/.bin/node`, [`${REPO}packages/agent/src/main.ts`], {
            cwd: REPO,
            env: {
              PATH: process.env.PATH ?? "",
              ...cluster.env,
              CONTROL_PLANE_URL: cp.url,
              AGENT_TOKEN: TOKEN,
              HEALTH_PORT: String(healthPort),
              METRICS_ENABLED: "false",
              LOG_FORMAT: "json"
            },
            stdio: ["ignore", "pipe", "pipe"]
          })
          let stdout = ""
          let stderr = ""
          c.stdout.on("data", (d) => (stdout += d))
          c.stderr.on("data", (d) => (stderr += d))
          c.on("exit", (code) => Deferred.doneUnsafe(exited, Exit.succeed({ code, stdout, stderr })))
          return c
        }),
        (c) => Effect.sync(() => c.kill("SIGKILL"))
      )
      const conn = yield* cp.nextConnection
      assert.strictEqual(conn.authorization, `Bearer ${TOKEN}`)
      yield* conn.next("hello")
      yield* conn.next("heartbeat")
      const ready = yield* Effect.promise(() => fetch(`http://127.0.0.1:${healthPort}/ready`).then((r) => r.json()))
      assert.strictEqual(ready.status, "ready")
      child.kill("SIGTERM")
      assert.strictEqual((yield* conn.next("goodbye")).payload.reason, "agent shutting down")
      assert.strictEqual((yield* Deferred.await(conn.closed)).code, 1001)
      const result = yield* Deferred.await(exited)
      assert.strictEqual(result.code, 0, result.stderr)
      const lines = result.stdout.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)
      assert.isAbove(lines.length, 0)
      assert.isTrue(lines.every((l) => l.agent_id === "agent-test"))
      assert.isTrue(lines.some((l) => String(l.msg).startsWith("connected to the control plane")))
      assert.notInclude(result.stdout, TOKEN)
    }), 90_000)
})
