// The session-desktop image (docker/session-desktop), built by `npm run images:build`, run as a session pod runs
// it: uid 1000, its ENTRYPOINT (tini, then the entrypoint script starting Xvnc and Xfce), its home directory on a
// fresh volume that the kubelet handed to the pod's fsGroup. An RFB client reads the desktop Xfce painted from
// VNC on localhost; nothing answers on any other address of the (shared) network namespace, so a Service or a
// neighbour pod reaches nothing. Without fsGroup the root-owned volume is refused with a message saying so.
import { assert, describe, it } from "@effect/vitest"
import { images, waitFor } from "@streamspace/testbed"
import { RfbClient } from "@streamspace/vnc-testserver"
import { Effect } from "effect"
import { chmodSync, chownSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs"
import * as net from "node:net"
import { networkInterfaces, tmpdir } from "node:os"
import * as path from "node:path"
import * as S from "../support/stack.ts"
import * as B from "./buildah.ts"

/** The session pod's runAsUser/runAsGroup and fsGroup (the image's user). */
const USER = 1000
const FS_GROUP = 1000
const HOME = "/home/streamspace"

/**
 * A fresh volume as the kubelet prepares it for a pod with `fsGroup` (pkg/volume SetVolumeOwnership): created by
 * root, then group-owned by fsGroup, group read-write, and setgid so what the desktop creates stays in the group.
 * Without `fsGroup` it stays root's.
 */
const freshVolume = (fsGroup: number | undefined) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = mkdtempSync(path.join(tmpdir(), "image-session-home-"))
      chownSync(dir, 0, 0)
      chmodSync(dir, 0o755)
      if (fsGroup !== undefined) {
        chownSync(dir, -1, fsGroup)
        chmodSync(dir, (statSync(dir).mode & 0o7777) | 0o770 | 0o2000)
      }
      return dir
    }),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

/** An X display number no X server on this network namespace uses (Xvnc's abstract socket is shared here). */
const freeDisplay = () => {
  const sockets = readFileSync("/proc/net/unix", "utf8")
  for (let d = 100 + (process.pid % 100); d < 400; d++) {
    if (!sockets.includes(`/tmp/.X11-unix/X${d}\n`) && !existsSync(`/tmp/.X11-unix/X${d}`)) return d
  }
  throw new Error("no free X display number")
}

/** Every address of this machine that is not loopback, plus a loopback address Xvnc must not bind (127.0.0.2). */
const otherAddresses = (): Array<string> => [
  "127.0.0.2",
  ...Object.entries(networkInterfaces()).flatMap(([name, addrs]) =>
    (addrs ?? []).filter((a) => !a.internal).map((a) => (a.family === "IPv6" && a.address.startsWith("fe80:") ? `${a.address}%${name}` : a.address))
  )
]

const startDesktop = (home: string) =>
  Effect.gen(function*() {
    const config = yield* B.requireImage(images.sessionDesktop)
    const c = yield* B.container(images.sessionDesktop)
    const port = yield* S.freePort
    const proc = yield* B.run(c, config.Entrypoint, {
      user: `${USER}:${USER}`,
      env: { VNC_PORT: String(port), VNC_DISPLAY: String(freeDisplay()), VNC_GEOMETRY: "640x400" },
      volumes: [`${home}:${HOME}`]
    })
    return { config, proc, port }
  })

const distinctColours = (fb: Uint8Array) => {
  const seen = new Set<number>()
  for (let i = 0; i < fb.length; i += 4) seen.add((fb[i]! << 16) | (fb[i + 1]! << 8) | fb[i + 2]!)
  return seen.size
}

describe("session-desktop image", () => {
  it.live("starts Xfce on Xvnc, serves it over RFB on localhost only, and writes its home on an fsGroup volume", () =>
    Effect.gen(function*() {
      const home = yield* freshVolume(FS_GROUP)
      const { config, port, proc } = yield* startDesktop(home)
      assert.deepStrictEqual(config.Entrypoint, ["/usr/bin/tini", "--", "/usr/local/bin/streamspace-session"])
      assert.strictEqual(config.User, `${USER}:${USER}`)

      const banner = yield* waitFor(`VNC on 127.0.0.1:${port}`, Effect.map(B.greeting("127.0.0.1", port), (g) => "bytes" in g && g.bytes), {
        timeout: 60_000,
        interval: 200
      }).pipe(Effect.catch((e) => Effect.die(new Error(`${e.message}\n${proc.output()}`))))
      assert.strictEqual(banner, "RFB 003.008\n")

      // The desktop as a viewer sees it: Xfce's wallpaper, panel and icons, not Xvnc's empty black screen.
      const rfb = yield* Effect.acquireRelease(
        Effect.promise(() => RfbClient.connect(net.connect(port, "127.0.0.1"), { timeout: 10_000 })),
        (client) => Effect.sync(() => client.close())
      )
      assert.strictEqual(rfb.width, 640)
      assert.strictEqual(rfb.height, 400)
      assert.match(rfb.name, /StreamSpace/)
      yield* waitFor("Xfce to paint the desktop", Effect.promise(async () => {
        await rfb.update(false)
        return distinctColours(rfb.framebuffer) >= 16
      }), { timeout: 60_000, interval: 500 }).pipe(Effect.catch((e) => Effect.die(new Error(`${e.message}\n${proc.output()}`))))

      // Localhost only: IPv6 loopback too (the API server's port-forward may dial either), nothing anywhere else.
      const v6 = yield* B.greeting("::1", port)
      assert.deepStrictEqual(v6, { bytes: "RFB 003.008\n" })
      const others = otherAddresses()
      for (const address of others) {
        const answer = yield* B.greeting(address, port)
        assert.property(answer, "error", `nothing may answer on ${address}:${port}, got ${JSON.stringify(answer)}`)
      }

      // The home volume stays root's; what the desktop wrote there is uid 1000's and in the fsGroup.
      const homeStat = statSync(home)
      assert.strictEqual(homeStat.uid, 0)
      assert.strictEqual(homeStat.gid, FS_GROUP)
      for (const entry of [".vnc", ".config"]) {
        const st = statSync(path.join(home, entry))
        assert.strictEqual(st.uid, USER, entry)
        assert.strictEqual(st.gid, FS_GROUP, entry)
      }
      assert.isTrue(existsSync(path.join(home, ".config/xfce4")), "Xfce saved its settings in the home directory")

      // SIGTERM to the container's main process (tini): the entrypoint stops Xvnc and the desktop and exits 0.
      yield* B.stop(proc, config)
      assert.strictEqual(yield* proc.exited, 0, proc.output())
      assert.property(yield* B.greeting("127.0.0.1", port), "error", "VNC stopped")
    }), 120_000)

  it.live("without fsGroup a fresh root-owned home volume is refused with a message naming the fix", () =>
    Effect.gen(function*() {
      const home = yield* freshVolume(undefined)
      const { proc } = yield* startDesktop(home)
      assert.strictEqual(yield* proc.exited, 2, proc.output())
      assert.match(proc.output(), /HOME \/home\/streamspace is not writable by uid 1000 gid 1000 .*set the session pod's securityContext\.fsGroup to 1000/)
    }), 60_000)
})
