// Each image's entry command run the way its Dockerfile runs it: the ENTRYPOINT with the final stage's ENV
// (ports and paths that only exist in the image replaced by free ones here), plus the variables an operator
// sets. The control plane's runs from the repository root (its image is the repository's production tree); the
// agent's runs in a directory that holds nothing but its bundle at the image's path, built here the way the
// image's build stage builds it (rolldown with packages/agent/rolldown.config.ts), so the bundle is shown to
// need no node_modules. The control plane must answer GET /api/v1/health and serve the web UI, the
// agent (on a kube-testserver KUBECONFIG, enrolling at that control plane) GET /health on HEALTH_PORT, and
// both must stop on SIGTERM, the image's STOPSIGNAL, by handling it (the agent with exit code 0).
import { start as startKube, type KubeTestServerHandle } from "@streamspace/kube-testserver"
import { waitForPromise } from "@streamspace/testbed"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, assert, beforeAll, describe, it } from "vitest"
import { type ShippedImage, shippedImage } from "../../src/dockerfile.ts"
import { NODE, REPO } from "../support/quickstartProcess.ts"

const readImage = (name: string): ShippedImage => shippedImage(path.join(REPO, "docker", name, "Dockerfile"))

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

interface Running {
  readonly child: ChildProcess
  readonly output: () => string
  readonly exited: Promise<number | null>
}

/** Runs the image's entrypoint as the image would (node is the repository's Node 24, not the PATH one). */
const run = (image: ShippedImage, env: Record<string, string>, cwd = REPO): Running => {
  const [program, ...args] = image.entrypoint
  assert.strictEqual(program, "node", "the entrypoint runs node directly")
  const child = spawn(NODE, args, {
    cwd,
    env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", HOME: tmpdir(), ...image.env, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let out = ""
  child.stdout!.on("data", (c: Buffer) => (out += c.toString("utf8")))
  child.stderr!.on("data", (c: Buffer) => (out += c.toString("utf8")))
  return { child, output: () => out, exited: new Promise((r) => child.once("exit", (code) => r(code))) }
}

/** Polls a URL until it answers 200 with JSON; fails with the process output after `ms`. */
const healthy = (url: string, process: Running, ms = 60_000): Promise<Record<string, unknown>> => {
  let last = "no answer"
  return waitForPromise(`${url} to answer 200`, async () => {
    if (process.child.exitCode !== null) throw new Error(`exited with ${process.child.exitCode} before ${url} answered:\n${process.output()}`)
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) })
      if (res.status === 200) return (await res.json()) as Record<string, unknown>
      last = `HTTP ${res.status}`
    } catch (e) {
      last = (e as Error).message
    }
    return undefined
  }, { timeout: ms, interval: 200 }).catch((e: Error) => {
    throw new Error(`${url} did not answer 200 within ${ms} ms (${last}): ${e.message}\n${process.output()}`)
  })
}

describe("image entry commands", () => {
  const cpImage = readImage("control-plane")
  const agentImage = readImage("agent")
  let dir: string
  /** The agent image's /app: only the bundle, at the path the ENTRYPOINT names. */
  let agentApp: string
  let kube: KubeTestServerHandle
  const running: Array<Running> = []

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "streamspace-entrypoints-"))
    agentApp = path.join(dir, "agent-app")
    const bundle = path.join(agentApp, agentImage.entrypoint.at(-1)!)
    await promisify(execFile)(NODE, [
      path.join(REPO, "node_modules/rolldown/bin/cli.mjs"),
      "--config",
      path.join(REPO, "packages/agent/rolldown.config.ts"),
      "--file",
      bundle
    ], { cwd: path.join(REPO, "packages/agent") })
    kube = await startKube({ kubelet: { startDelayMs: 20 } })
  }, 120_000)

  afterAll(async () => {
    for (const r of running) r.child.kill("SIGKILL")
    await kube?.close()
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
  })

  it("the images declare node entrypoints, production mode and their ports", () => {
    assert.deepStrictEqual(cpImage.entrypoint, ["node", "packages/control-plane/src/main.ts"])
    assert.deepStrictEqual(agentImage.entrypoint, ["node", "--max-semi-space-size=1", "packages/agent/dist/main.mjs"])
    assert.strictEqual(cpImage.env["NODE_ENV"], "production")
    assert.strictEqual(agentImage.env["NODE_ENV"], "production")
    assert.strictEqual(cpImage.stopSignal, "SIGTERM")
    assert.strictEqual(agentImage.stopSignal, "SIGTERM")
  })

  it("the control plane and the agent start, answer their health endpoints and stop on SIGTERM", async () => {
    const bootstrap = "entrypoints-bootstrap-token-0123456789abcdef"
    const cpPort = await freePort()
    const cp = run(cpImage, {
      PORT: String(cpPort),
      DATA_DIR: path.join(dir, "data"),
      JWT_SECRET: "entrypoints-jwt-secret-0123456789abcdef0123456789",
      AGENT_BOOTSTRAP_TOKEN: bootstrap
    })
    running.push(cp)
    const cpHealth = await healthy(`http://127.0.0.1:${cpPort}/api/v1/health`, cp)
    assert.strictEqual(cpHealth["status"], "ok")
    // The web UI and noVNC come from the control plane package and its dependencies (what the image copies).
    for (const file of ["/", "/ui/app.js", "/vendor/novnc/core/rfb.js"]) {
      assert.strictEqual((await fetch(`http://127.0.0.1:${cpPort}${file}`)).status, 200, file)
    }

    const kubeconfig = path.join(dir, "kubeconfig")
    writeFileSync(kubeconfig, kube.kubeconfigFor(kube.adminToken, { namespace: "streamspace", user: "admin" }))
    const healthPort = await freePort()
    const metricsPort = await freePort()
    const agent = run(agentImage, {
      HEALTH_PORT: String(healthPort),
      METRICS_PORT: String(metricsPort),
      AGENT_ID: "entrypoints",
      CONTROL_PLANE_URL: `ws://127.0.0.1:${cpPort}`,
      AGENT_TOKEN: bootstrap,
      KUBECONFIG: kubeconfig,
      AGENT_CREDENTIAL_FILE: path.join(dir, "agent-credential")
    }, agentApp)
    running.push(agent)
    const agentHealth = await healthy(`http://127.0.0.1:${healthPort}/health`, agent)
    assert.strictEqual(agentHealth["status"], "healthy")
    assert.strictEqual(agentHealth["agent_id"], "entrypoints")
    const metrics = await fetch(`http://127.0.0.1:${metricsPort}/metrics`).then((r) => r.text())
    assert.include(metrics, "streamspace_agent_uptime_seconds")

    agent.child.kill(agentImage.stopSignal as NodeJS.Signals)
    assert.strictEqual(await agent.exited, 0, agent.output())
    cp.child.kill(cpImage.stopSignal as NodeJS.Signals)
    // It handles the signal itself: a clean stop exits 0 (not death by signal, not Effect's 130 for an interrupt).
    assert.strictEqual(await cp.exited, 0, cp.output())
    assert.notMatch(cp.output(), /"level":"(error|fatal)"/)
  }, 120_000)
})
