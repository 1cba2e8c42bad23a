// The node flags and allocator setting a long-running control-plane process runs with. They only work on the
// command line (or, for glibc's malloc, in the environment at exec), so a process started without them replaces
// itself (same pid, same stdio: process.execve) with one that has them, before anything else is loaded. The
// image (`node packages/control-plane/src/main.ts`), the Helm chart and the quick start therefore all run the same
// way without repeating them. Measured in bench/FINDINGS.md ("memory at idle" and the --liftoff-only note):
//
// --liftoff-only            the embedded database (PGlite) is a large WebAssembly module. V8 keeps re-compiling its
//                           hot functions with the optimising compiler on a background thread for many seconds
//                           after start, which held the exit 3-15 s after SIGTERM and doubled the memory at start;
//                           baseline (Liftoff) code is fast enough for the control plane's few queries.
// --max-semi-space-size=1   V8's young generation per isolate (the main thread and the PGlite worker thread), by
//                           default up to 16 MiB per semi-space, is kept when idle: capped, idle RSS fell ~55 MiB.
// MALLOC_ARENA_MAX=2        glibc's per-thread malloc arenas (V8's, libuv's and the worker's threads) keep freed
//                           memory; two arenas, as the agent's image sets: ~10 MiB less at idle.
// A flag or variable the caller already gave (e.g. NODE_OPTIONS, or another --max-semi-space-size) is kept.
import process from "node:process"

const FLAGS: ReadonlyArray<string> = ["--liftoff-only", "--max-semi-space-size=1"]
const ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: "2" }

const given = (flag: string): boolean => {
  const name = flag.split("=")[0]!
  const inArgs = (args: ReadonlyArray<string>) => args.some((a) => a === name || a.startsWith(`${name}=`))
  return inArgs(process.execArgv) || inArgs((process.env["NODE_OPTIONS"] ?? "").split(/\s+/))
}

/** Replaces this process with one started with FLAGS and ENV unless it has them (or execve is unavailable). */
export const relaunchWithRuntimeFlags = (): void => {
  const missing = FLAGS.filter((f) => !given(f))
  if (missing.length === 0 || typeof process.execve !== "function") return
  process.execve(process.execPath, [process.execPath, ...missing, ...process.execArgv, ...process.argv.slice(1)], { ...ENV, ...process.env })
}
