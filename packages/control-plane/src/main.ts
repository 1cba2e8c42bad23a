// The control plane process: the whole ControlPlane layer on Node, settings from the environment. A bad
// setting stops it at once with a message naming the variable; in DEV_MODE it prints a local admin token.
import process from "node:process"

// The embedded database (PGlite) is a large WebAssembly module. V8 keeps re-compiling its hot functions with
// the optimising compiler on a background thread for many seconds after start, and a Node process cannot
// exit while such a job runs: on SIGTERM everything was closed and flushed within ~0.3 s, yet the process
// lived on 3-15 s more (a V8Worker thread busy, the main thread waiting). Baseline (Liftoff) code is fast
// enough for the control plane's few queries, and the flag only works on the command line, so the process
// replaces itself (same pid, same stdio) with one that has it — before anything else is loaded.
if (!process.execArgv.includes("--liftoff-only") && typeof process.execve === "function") {
  process.execve(process.execPath, [process.execPath, "--liftoff-only", ...process.execArgv, ...process.argv.slice(1)], process.env)
}

const { NodeRuntime } = await import("@effect/platform-node")
const { Cause, Effect, Exit, Layer, Runtime } = await import("effect")
const { ControlPlane } = await import("./ControlPlane.ts")

const program = Effect.gen(function*() {
  const cp = yield* ControlPlane
  if (cp.devToken !== undefined) {
    yield* Effect.sync(() =>
      process.stdout.write(
        `\nDEV_MODE: admin token for this install (do not use DEV_MODE in production):\n\n  ${cp.devToken}\n\n` +
          `  curl -H "Authorization: Bearer ${cp.devToken}" ${cp.url}/api/v1/agents\n\n`
      )
    )
  }
  return yield* Effect.never
})

NodeRuntime.runMain(
  Layer.launch(Layer.effectDiscard(program).pipe(Layer.provide(ControlPlane.layer))).pipe(
    Effect.catchTag("SettingError", (e) =>
      Effect.sync(() => {
        process.stderr.write(`configuration error: ${e.message}\n`)
        process.exit(1)
      })
    )
  ),
  {
    // SIGTERM/SIGINT interrupt the program: that is a clean stop (exit 0), not a failure (Effect's 130).
    teardown: (exit, onExit) =>
      Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause) ? onExit(0) : Runtime.defaultTeardown(exit, onExit)
  }
)
