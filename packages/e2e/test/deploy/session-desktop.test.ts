// The session-desktop image's entrypoint, run on the host: real Xvnc (TigerVNC) and a desktop command,
// a real RFB client reads the framebuffer the desktop painted. The image runs Xfce; here the desktop
// command is a light stand-in (xsetroot paints the root window, then a long-running process).
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { chown, mkdtemp, readFile, rm, stat } from "node:fs/promises"
import * as net from "node:net"
import { tmpdir } from "node:os"
import * as path from "node:path"
import { waitForPromise } from "@streamspace/testbed"
import { RfbClient } from "@streamspace/vnc-testserver"
import { afterEach, assert, describe, it } from "vitest"
import { repoRoot } from "./helm.ts"

const entrypoint = path.join(repoRoot, "docker/session-desktop/entrypoint.sh")
const PACKAGES = "tigervnc-standalone-server tigervnc-tools x11-xserver-utils"

const requireTools = () => {
  const missing = ["Xvnc", "vncpasswd", "xsetroot"].filter((tool) => {
    try {
      execFileSync("sh", ["-c", `command -v ${tool}`], { stdio: "ignore" })
      return false
    } catch {
      return true
    }
  })
  if (missing.length > 0) {
    throw new Error(`${missing.join(", ")} not installed: apt-get install -y --no-install-recommends ${PACKAGES} (.ci/run installs them)`)
  }
}

const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

let nextDisplay = 40 + (process.pid % 40)
const freeDisplay = () => {
  for (let i = 0; i < 100; i++) {
    const d = nextDisplay++
    if (!existsSync(`/tmp/.X11-unix/X${d}`) && !existsSync(`/tmp/.X${d}-lock`)) return d
  }
  throw new Error("no free X display number")
}


const connectTcp = (port: number) =>
  new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1")
    s.once("connect", () => resolve(s))
    s.once("error", reject)
  })

const rejects = async (p: Promise<unknown>, expected: RegExp) => {
  const outcome = await p.then(() => undefined, (err: unknown) => err)
  assert.instanceOf(outcome, Error, `expected a rejection matching ${expected}`)
  assert.match((outcome as Error).message, expected)
}

interface Desktop {
  readonly proc: ChildProcess
  readonly port: number
  readonly home: string
  readonly output: () => string
  readonly exited: Promise<number | null>
}

const running: Array<Desktop> = []

/** Starts entrypoint.sh; with `uid`, as that non-root uid/gid (via setpriv when the tests run as root). */
const startDesktop = async (env: Record<string, string>, uid?: number): Promise<Desktop> => {
  requireTools()
  const port = await freePort()
  const home = await mkdtemp(path.join(tmpdir(), "session-home-"))
  let out = ""
  const asUser = uid !== undefined && process.getuid?.() === 0
  if (asUser) await chown(home, uid, uid)
  const [file, args] = asUser
    ? ["setpriv", [`--reuid=${uid}`, `--regid=${uid}`, "--clear-groups", entrypoint]]
    : [entrypoint, []]
  const proc = spawn(file, args, {
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: home,
      VNC_PORT: String(port),
      VNC_DISPLAY: String(freeDisplay()),
      VNC_GEOMETRY: "320x200",
      DESKTOP_COMMAND: "env > \"$HOME/desktop-env\"; xsetroot -solid '#336699' && exec sleep 3600",
      ...env
    }
  })
  proc.stdout!.on("data", (b) => (out += b))
  proc.stderr!.on("data", (b) => (out += b))
  const exited = new Promise<number | null>((resolve) => proc.once("exit", (code) => resolve(code)))
  const d: Desktop = { proc, port, home, output: () => out, exited }
  running.push(d)
  return d
}

const connect = async (d: Desktop, password?: string) => {
  // The port refuses connections until Xvnc listens.
  const socket = await waitForPromise(`Xvnc on port ${d.port}\n${d.output()}`, () => connectTcp(d.port).catch(() => undefined), { timeout: 15_000 })
  return RfbClient.connect(socket, password === undefined ? {} : { password })
}

/** Requests full updates until the framebuffer shows the colour the desktop command painted. */
const waitForPaint = (client: RfbClient) =>
  waitForPromise("the painted root window", async () => {
    await client.update(false)
    const [r, g, b] = client.pixel(client.width / 2, client.height / 2)
    return r === 0x33 && g === 0x66 && b === 0x99
  }, { timeout: 10_000 })

afterEach(async () => {
  for (const d of running.splice(0)) {
    if (d.proc.exitCode === null && d.proc.signalCode === null) {
      try {
        process.kill(-d.proc.pid!, "SIGKILL")
      } catch {
        // already gone
      }
      await d.exited
    }
    await rm(d.home, { recursive: true, force: true })
  }
})

describe("docker/session-desktop/entrypoint.sh", () => {
  it("serves the desktop over RFB with no VNC password: a real framebuffer at the requested geometry", async () => {
    const d = await startDesktop({})
    const client = await connect(d)
    try {
      assert.strictEqual(client.width, 320)
      assert.strictEqual(client.height, 200)
      assert.match(client.name, /StreamSpace/)
      await waitForPaint(client)
      // Every pixel of the root window carries the desktop's colour.
      const fb = client.framebuffer
      for (let i = 0; i < fb.length; i += 4) {
        if (fb[i] !== 0x33 || fb[i + 1] !== 0x66 || fb[i + 2] !== 0x99) assert.fail(`pixel ${i / 4} is ${fb[i]},${fb[i + 1]},${fb[i + 2]}`)
      }
    } finally {
      client.close()
    }
    // The desktop ran with HOME on the given directory and on the Xvnc display.
    const env = await readFile(path.join(d.home, "desktop-env"), "utf8")
    assert.match(env, new RegExp(`^HOME=${d.home}$`, "m"))
    assert.match(env, /^DISPLAY=:\d+$/m)
  })

  it("runs as an arbitrary non-root uid, writing only to its HOME and /tmp", async () => {
    const d = await startDesktop({ VNC_PASSWORD: "pw" }, 10001)
    const client = await connect(d, "pw")
    try {
      await waitForPaint(client)
    } finally {
      client.close()
    }
    const env = await readFile(path.join(d.home, "desktop-env"), "utf8")
    if (process.getuid?.() === 0) {
      assert.strictEqual((await stat(path.join(d.home, "desktop-env"))).uid, 10001)
      assert.strictEqual((await stat(path.join(d.home, ".vnc"))).uid, 10001)
    }
    assert.match(env, new RegExp(`^HOME=${d.home}$`, "m"))
  })

  it("requires the VNC password from VNC_PASSWORD and keeps it out of the desktop's environment", async () => {
    const d = await startDesktop({ VNC_PASSWORD: "s3cret!!" })
    await rejects(connect(d), /requires VNC Authentication/)
    await rejects(connect(d, "wrong-pw"), /security handshake failed/)
    const client = await connect(d, "s3cret!!")
    try {
      await waitForPaint(client)
    } finally {
      client.close()
    }
    const env = await readFile(path.join(d.home, "desktop-env"), "utf8")
    assert.notMatch(env, /VNC_PASSWORD|s3cret/)
  })

  it("stops Xvnc and the desktop on SIGTERM and exits 0", async () => {
    const d = await startDesktop({})
    ;(await connect(d)).close()
    d.proc.kill("SIGTERM")
    assert.strictEqual(await d.exited, 0)
    await waitForPromise("the VNC port to close", () => connectTcp(d.port).then((s) => (s.destroy(), false), () => true), { timeout: 5_000 })
  })

  it("ends the session when the desktop exits", async () => {
    const d = await startDesktop({ DESKTOP_COMMAND: "xsetroot -solid '#336699'" })
    assert.strictEqual(await d.exited, 0)
    assert.match(d.output(), /desktop exited/)
  })

  it("refuses a bad setting with a message naming it, before starting Xvnc", async () => {
    const d = await startDesktop({ VNC_PORT: "59o0" })
    assert.strictEqual(await d.exited, 2)
    assert.match(d.output(), /VNC_PORT must be a port number, got '59o0'/)
    const g = await startDesktop({ VNC_GEOMETRY: "big" })
    assert.strictEqual(await g.exited, 2)
    assert.match(g.output(), /VNC_GEOMETRY must be WIDTHxHEIGHT, got 'big'/)
  })
})
