// The agent process: reads its configuration from the environment, runs Agent.layer until SIGTERM/SIGINT,
// then shuts down gracefully. Only this file chooses the platform runtime.
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Exit, Layer, Option, Runtime } from "effect"
import { Agent } from "./Agent.ts"

NodeRuntime.runMain(Layer.launch(Agent.layer), {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause)) return onExit(0)
    const error = Cause.findErrorOption(exit.cause)
    if (Option.isSome(error) && typeof error.value === "object" && error.value !== null && "message" in error.value) {
      const e = error.value as { readonly _tag?: string; readonly message: string }
      process.stderr.write(`streamspace-agent: ${e._tag === "SettingError" ? "configuration error: " : ""}${e.message}\n`)
    } else {
      process.stderr.write(`streamspace-agent: ${Cause.pretty(exit.cause)}\n`)
    }
    return Runtime.defaultTeardown(exit, (code) => onExit(code === 0 ? 1 : code))
  }
})
