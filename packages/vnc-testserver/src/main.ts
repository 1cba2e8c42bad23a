// CLI: node packages/vnc-testserver/src/main.ts --port 5900 --name demo --width 1024 --height 768
// Runs the test RFB server until SIGINT/SIGTERM.
import { NodeRuntime } from "@effect/platform-node"
import { Layer } from "effect"
import { parseArgs } from "node:util"
import { VncTestServer, type VncTestServerOptions } from "./VncTestServer.ts"

const usage = `usage: main.ts [--host 127.0.0.1] [--port 5900] [--width 1024] [--height 768]
               [--frame-rate 10] [--name NAME] [--password PW] [--bandwidth]`

const parse = (): VncTestServerOptions => {
  const { values } = parseArgs({
    options: {
      host: { type: "string" },
      port: { type: "string" },
      width: { type: "string" },
      height: { type: "string" },
      "frame-rate": { type: "string" },
      name: { type: "string" },
      password: { type: "string" },
      bandwidth: { type: "boolean" },
      help: { type: "boolean", short: "h" }
    }
  })
  if (values.help === true) {
    console.log(usage)
    process.exit(0)
  }
  const num = (flag: string, v: string | undefined): number | undefined => {
    if (v === undefined) return undefined
    const n = Number(v)
    if (!Number.isFinite(n)) throw new Error(`--${flag}: not a number: ${v}`)
    return n
  }
  const port = num("port", values.port)
  const width = num("width", values.width)
  const height = num("height", values.height)
  const frameRate = num("frame-rate", values["frame-rate"])
  return {
    ...(values.host !== undefined ? { host: values.host } : {}),
    ...(port !== undefined ? { port } : {}),
    ...(width !== undefined ? { width } : {}),
    ...(height !== undefined ? { height } : {}),
    ...(frameRate !== undefined ? { frameRate } : {}),
    ...(values.name !== undefined ? { name: values.name } : {}),
    ...(values.password !== undefined ? { password: values.password } : {}),
    ...(values.bandwidth === true ? { bandwidthMode: true } : {})
  }
}

let options: VncTestServerOptions
try {
  options = parse()
} catch (err) {
  console.error(`${err instanceof Error ? err.message : String(err)}\n${usage}`)
  process.exit(2)
}

NodeRuntime.runMain(Layer.launch(VncTestServer.layer(options)))
