// The embedded PGlite and its pglite-socket server, run in a worker thread (started by `startPgliteThread` in
// pgliteThread.ts). PGlite is PostgreSQL compiled to WebAssembly: every query runs synchronously on the thread that
// owns it. In a worker, that CPU time (and the database's file writes) no longer stops the control plane's
// event loop, which relays VNC bytes, answers the API and reads heartbeats; the two run on two cores.
//
// Messages: the parent receives {type: "ready"} once the socket accepts connections, or {type: "error"}; it
// sends {type: "close"} and receives {type: "closed"} after the server stopped and PGlite was closed (which
// flushes DATA_DIR).
import { PGLiteSocketServer } from "@electric-sql/pglite-socket"
import { parentPort, workerData } from "node:worker_threads"
import { openPglite } from "./pglite.ts"

interface Data {
  readonly dataDir: string | undefined
  readonly socketPath: string
}

const port = parentPort!
const { dataDir, socketPath } = workerData as Data
const message = (e: unknown) => (e instanceof Error ? `${e.message}` : String(e))

try {
  const db = await openPglite(dataDir)
  const server = new PGLiteSocketServer({ db, path: socketPath, maxConnections: 4 })
  try {
    await server.start()
  } catch (e) {
    await db.close().catch(() => undefined)
    throw e
  }
  port.on("message", (m: { readonly type?: string }) => {
    if (m?.type !== "close") return
    void (async () => {
      const errors: Array<string> = []
      await server.stop().catch((e: unknown) => errors.push(`socket server stop: ${message(e)}`))
      await db.close().catch((e: unknown) => errors.push(`PGlite close: ${message(e)}`))
      port.postMessage({ type: "closed", errors })
      port.close()
    })()
  })
  port.postMessage({ type: "ready" })
} catch (e) {
  port.postMessage({ type: "error", message: message(e) })
  port.close()
}
