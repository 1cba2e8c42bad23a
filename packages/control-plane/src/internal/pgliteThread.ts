// Starting the embedded PGlite in its own worker thread (internal/pgliteWorker.ts opens it with pglite.ts). Kept
// apart from pglite.ts so the control plane's main thread never loads PGlite's JavaScript, only the worker does.
import { Worker } from "node:worker_threads"

/** An embedded PGlite served by pglite-socket on `socketPath`, in its own worker thread. */
export interface PgliteThread {
  readonly socketPath: string
  /** Stops the server and closes PGlite (flushing DATA_DIR), then ends the thread. */
  readonly close: () => Promise<void>
}

/**
 * Opens PGlite (as pglite.ts's `openPglite` does) in a worker thread (internal/pgliteWorker.ts) and serves it on the unix
 * socket `socketPath`. Resolves once the socket accepts connections.
 */
export const startPgliteThread = (dataDir: string | undefined, socketPath: string): Promise<PgliteThread> =>
  new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url.endsWith(".ts") ? "./pgliteWorker.ts" : "./pgliteWorker.js", import.meta.url), { workerData: { dataDir, socketPath } })
    let started = false
    let onClosed: ((errors: ReadonlyArray<string>) => void) | undefined
    const fail = (e: Error) => {
      if (started) return
      started = true
      reject(e)
      void worker.terminate()
    }
    worker.on("message", (m: { readonly type: string; readonly message?: string; readonly errors?: ReadonlyArray<string> }) => {
      if (m.type === "ready" && !started) {
        started = true
        resolve({ socketPath, close })
      } else if (m.type === "error") fail(new Error(m.message))
      else if (m.type === "closed") onClosed?.(m.errors ?? [])
    })
    worker.on("error", (e: unknown) => fail(e instanceof Error ? e : new Error(String(e))))
    worker.on("exit", (code) => {
      fail(new Error(`the PGlite thread exited with code ${code} before it was ready`))
      onClosed?.([`the PGlite thread exited with code ${code} while closing`])
    })
    let closing: Promise<void> | undefined
    const close = () =>
      closing ??= new Promise<void>((done, failed) => {
        onClosed = (errors) => {
          onClosed = undefined
          void worker.terminate().finally(() => (errors.length === 0 ? done() : failed(new Error(errors.join("; ")))))
        }
        worker.postMessage({ type: "close" })
      })
  })
