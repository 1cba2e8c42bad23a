// The CLI: starts a server from flags, serves viewers, stops on SIGTERM.
import { assert, describe, it } from "@effect/vitest"
import { spawn } from "node:child_process"
import * as net from "node:net"
import * as path from "node:path"
import { RfbClient } from "../src/index.ts"
import { waitForPromise } from "@streamspace/testbed"

const main = path.join(import.meta.dirname, "..", "src", "main.ts")

describe("main.ts", () => {
  it("serves the desktop named on the command line until SIGTERM", async () => {
    // process.execPath is the Node 24 that runs vitest
    const child = spawn(process.execPath, [main, "--port", "0", "--name", "cli desktop", "--width", "300", "--height", "120"], {
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (d) => (output += d))
    child.stderr.on("data", (d) => (output += d))
    const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
    try {
      const port = Number(await waitForPromise("the listening line", () => /listening on 127\.0\.0\.1:(\d+)/.exec(output)?.[1], { timeout: 15_000 }))
      const client = await RfbClient.connect(net.connect(port, "127.0.0.1"))
      assert.strictEqual(client.name, "cli desktop")
      assert.deepStrictEqual([client.width, client.height], [300, 120])
      client.close()
    } finally {
      child.kill("SIGTERM")
    }
    assert.isNotNull(await exited)
  }, 20_000)
})
