// The control plane as one process, composed from the package's services, for benchmarks run before the
// package has its own main.ts. bench/run.ts prefers packages/control-plane/src/main.ts when it exists.
// Prints "control plane listening on PORT" once serving.
import { NodeHttpServer, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { HttpRouter } from "effect/http"
import { createServer, type Server } from "node:http"
import type { AddressInfo } from "node:net"
import { AgentHub } from "../../packages/control-plane/src/AgentHub.ts"
import * as Api from "../../packages/control-plane/src/Api.ts"
import { Auth } from "../../packages/control-plane/src/Auth.ts"
import { CommandDispatcher } from "../../packages/control-plane/src/CommandDispatcher.ts"
import { ControlPlaneConfig } from "../../packages/control-plane/src/ControlPlaneConfig.ts"
import * as Observability from "../../packages/control-plane/src/Observability.ts"
import { Sessions } from "../../packages/control-plane/src/Sessions.ts"
import { Store } from "../../packages/control-plane/src/Store.ts"
import { VncProxy } from "../../packages/control-plane/src/VncProxy.ts"

const server: Server = createServer()
const port = Number(process.env.PORT ?? "0")

const app = Api.layer.pipe(
  Layer.provideMerge(VncProxy.layer),
  Layer.provideMerge(Sessions.layer),
  Layer.provideMerge(CommandDispatcher.layer),
  Layer.provideMerge(AgentHub.layer),
  Layer.provideMerge(Auth.layer),
  Layer.provideMerge(Store.layer)
)

const main = HttpRouter.serve(app, { disableLogger: true, disableListenLog: true }).pipe(
  Layer.provide(NodeHttpServer.layer(() => server, { port, host: "127.0.0.1" })),
  Layer.provide(Observability.layer),
  Layer.provideMerge(ControlPlaneConfig.layerFromEnv)
)

const announce = Layer.effectDiscard(Effect.sync(() => {
  process.stdout.write(`control plane listening on ${(server.address() as AddressInfo).port}\n`)
}))

NodeRuntime.runMain(Layer.launch(announce.pipe(Layer.provideMerge(main))))
