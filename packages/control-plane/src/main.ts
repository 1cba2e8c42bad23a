// The control plane process: the whole ControlPlane layer on Node, settings from the environment. A bad
// setting stops it at once with a message naming the variable; in DEV_MODE it prints a local admin token.
import process from "node:process"
import { relaunchWithRuntimeFlags } from "./relaunch.ts"

// Node flags and the allocator setting (relaunch.ts): the process replaces itself before anything else loads.
relaunchWithRuntimeFlags()

const NodeRuntime = await import("@effect/platform-node/NodeRuntime")
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
