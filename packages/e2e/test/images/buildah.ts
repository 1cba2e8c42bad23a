// The built images, run the way a container runtime runs them but without one: a working container on the image
// (`buildah from`) and processes in it (`buildah run`, chroot isolation: the image's root filesystem, user and
// environment; this machine's network and PID namespace, so servers on 127.0.0.1 are reachable both ways and
// the command's pid is a pid here). Each run gets its own root directory; every process under it is killed and
// the container removed when the test's scope closes, since a process may outlive `buildah run` or leave its
// process tree (a daemon such as dbus).
import { BUILD_KEY_LABEL, buildah, buildKey, type ImageSpec, inspectImage, waitFor } from "@streamspace/testbed"
import { Deferred, Effect, type Scope } from "effect"
import { spawn } from "node:child_process"
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import * as net from "node:net"

/** What a container runtime reads from an image (Docker's image config). */
export interface ImageConfig {
  readonly Entrypoint: ReadonlyArray<string>
  readonly Env: ReadonlyArray<string>
  readonly User: string
  readonly Healthcheck?: { readonly Test: ReadonlyArray<string> }
  readonly StopSignal?: string
}

/** The image's config; fails, saying how to build it, when the image is missing or older than its sources. */
export const requireImage = (spec: ImageSpec): Effect.Effect<ImageConfig> =>
  Effect.promise(async () => {
    const image = await inspectImage(spec.ref)
    if (image === undefined) {
      throw new Error(`image ${spec.ref} is missing: run \`npm run images:build\` (as root; npm test's prepare step builds it)`)
    }
    if (image.OCIv1?.config?.Labels?.[BUILD_KEY_LABEL] !== (await buildKey(spec))) {
      throw new Error(`image ${spec.ref} was built from other sources than the checkout's: run \`npm run images:build\``)
    }
    return image.Docker.config as ImageConfig
  })

export interface Container {
  readonly name: string
  readonly image: ImageSpec
}

/** A working container on the image, removed with the scope. */
export const container = (image: ImageSpec): Effect.Effect<Container, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => ({ name: (await buildah(["from", "--quiet", "--pull=never", image.ref])).trim(), image })),
    (c) => Effect.promise(() => buildah(["rm", c.name]).catch(() => ""))
  )

/** Copies a file of this machine into the container. */
export const copyInto = (c: Container, file: string, dest: string, chown?: string) =>
  Effect.promise(() => buildah(["copy", ...(chown === undefined ? [] : ["--chown", chown]), c.name, file, dest]))

export interface RunOptions {
  /** uid:gid (default: the image's USER). */
  readonly user?: string
  readonly env?: Record<string, string>
  /** host-path:container-path bind mounts. */
  readonly volumes?: ReadonlyArray<string>
}

export interface Proc {
  /** stdout and stderr so far. */
  readonly output: () => string
  /** `buildah run`'s exit code: the command's, or 1 when a signal ended it. */
  readonly exited: Effect.Effect<number>
  /** The command's pid on this machine (the process the image's ENTRYPOINT started). */
  readonly pid: Effect.Effect<number, Error>
  /** Pids of every process still running under this run's root. */
  readonly processes: () => Array<number>
}

interface ProcInfo {
  readonly pid: number
  readonly ppid: number
  readonly root: string | undefined
}

const processTable = (): Array<ProcInfo> =>
  readdirSync("/proc").filter((p) => /^\d+$/.test(p)).flatMap((p) => {
    try {
      // The command name may hold spaces and parentheses: the fields after the last ")" are fixed.
      const stat = readFileSync(`/proc/${p}/stat`, "utf8")
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
      let root: string | undefined
      try {
        root = readlinkSync(`/proc/${p}/root`)
      } catch {
        root = undefined
      }
      return [{ pid: Number(p), ppid, root }]
    } catch {
      return [] // exited meanwhile
    }
  })

/**
 * Runs `argv` in the container with `buildah run`. The scope's end kills every process under the run's root and
 * waits for `buildah run` to exit.
 */
export const run = (c: Container, argv: ReadonlyArray<string>, options: RunOptions = {}): Effect.Effect<Proc, never, Scope.Scope> =>
  Effect.gen(function*() {
    // A bind mount on a path the image declares as a VOLUME replaces it, as a pod's volume replaces the image's
    // anonymous one (buildah would otherwise mount either, in no fixed order).
    for (const v of options.volumes ?? []) yield* Effect.promise(() => buildah(["config", "--volume", `${v.split(":")[1]}-`, c.name]).catch(() => ""))
    const args = ["run", "--isolation", "chroot"]
    if (options.user !== undefined) args.push("--user", options.user)
    for (const [k, v] of Object.entries(options.env ?? {})) args.push("--env", `${k}=${v}`)
    for (const v of options.volumes ?? []) args.push("--volume", v)

    const exitCode = yield* Deferred.make<number>()
    let root: string | undefined
    let pid: number | undefined
    const under = () => (root === undefined ? [] : processTable().filter((p) => p.root === root))
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn("buildah", [...args, c.name, "--", ...argv], { stdio: ["ignore", "pipe", "pipe"] })),
      (child) =>
        Effect.gen(function*() {
          for (const p of under()) kill(p.pid, "SIGKILL")
          yield* Effect.ignore(waitFor("the killed processes to go", Effect.sync(() => under().length === 0), { timeout: 10_000 }))
          const gone = yield* Effect.timeoutOption(Deferred.await(exitCode), "10 seconds")
          if (gone._tag === "None") kill(child.pid!, "SIGKILL")
        })
    )
    let out = ""
    child.stdout!.on("data", (b: Buffer) => (out += b.toString("utf8")))
    child.stderr!.on("data", (b: Buffer) => (out += b.toString("utf8")))
    child.once("close", (code) => Deferred.doneUnsafe(exitCode, Effect.succeed(code ?? 1)))

    // buildah run -> (its re-executions while it sets up) -> buildah-chroot-exec, the first process in the run's
    // root -> the command. Found now, so the scope's end finds what the command left even after it exited.
    yield* waitFor(`\`buildah run\` to start \`${argv.join(" ")}\` in ${c.name}`, Effect.sync(() => {
      if (child.exitCode !== null || child.signalCode !== null) return true
      const table = descendants(processTable(), child.pid!)
      const command = table.find((p) => p.root !== undefined && p.root !== "/" && table.some((q) => q.pid === p.ppid && q.root === p.root))
      root = command?.root
      pid = command?.pid
      return command !== undefined
    }), { timeout: 30_000, interval: 20 }).pipe(Effect.orDie)
    return {
      output: () => out,
      exited: Deferred.await(exitCode),
      pid: pid === undefined ? Effect.fail(new Error(`\`${argv.join(" ")}\` had exited:\n${out}`)) : Effect.succeed(pid),
      processes: () => under().map((p) => p.pid)
    } satisfies Proc
  })

const descendants = (table: Array<ProcInfo>, pid: number): Array<ProcInfo> => {
  const out: Array<ProcInfo> = []
  const queue = [pid]
  while (queue.length > 0) {
    const parent = queue.shift()!
    for (const p of table) {
      if (p.ppid === parent) {
        out.push(p)
        queue.push(p.pid)
      }
    }
  }
  return out
}

const kill = (pid: number, signal: NodeJS.Signals) => {
  try {
    process.kill(pid, signal)
  } catch {
    // already gone
  }
}

/** Sends `signal` to the command a run started (as a container runtime signals the container's main process). */
const signal = (proc: Proc, sig: NodeJS.Signals) => Effect.map(proc.pid, (pid) => kill(pid, sig))

/** Stops the command as a container runtime stops the container: the image's STOPSIGNAL (default SIGTERM). */
export const stop = (proc: Proc, config: ImageConfig) => signal(proc, (config.StopSignal ?? "SIGTERM") as NodeJS.Signals)

/** The environment an image sets, as a record. */
export const imageEnv = (config: ImageConfig): Record<string, string> =>
  Object.fromEntries(config.Env.map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)]))

/** The first bytes a TCP server sends on `host:port`, or the error that connecting ended with. */
export const greeting = (host: string, port: number, timeoutMs = 3_000) =>
  Effect.callback<{ readonly bytes: string } | { readonly error: string }>((resume) => {
    const socket = net.connect({ host, port })
    const done = (r: { readonly bytes: string } | { readonly error: string }) => {
      socket.destroy()
      resume(Effect.succeed(r))
    }
    socket.setTimeout(timeoutMs, () => done({ error: `no answer within ${timeoutMs} ms` }))
    socket.once("data", (b: Buffer) => done({ bytes: b.toString("latin1") }))
    socket.once("error", (e: NodeJS.ErrnoException) => done({ error: e.code ?? e.message }))
    return Effect.sync(() => socket.destroy())
  })
