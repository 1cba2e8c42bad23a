// ControlPlane: the whole control plane as one layer — config, logging and OTLP, the Store, AgentHub,
// CommandDispatcher, Sessions, VncProxy, Auth, the HTTP API and the HTTP(S) server — so `main.ts`, the quick
// start and end-to-end tests embed the same thing. The `ControlPlane` service it outputs says where it
// listens and carries the DEV_MODE admin token.
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type { AgentId } from "@streamspace/protocol"
import { Context, Duration, Effect, Layer, Option } from "effect"
import { HttpRouter, UrlParams } from "effect/http"
import { readFileSync } from "node:fs"
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { Socket } from "node:net"
import { createServer as createTlsServer } from "node:https"
import type { AddressInfo } from "node:net"
import { AgentHub } from "./AgentHub.ts"
import { Audit } from "./Audit.ts"
import * as Api from "./Api.ts"
import { Auth } from "./Auth.ts"
import { CommandDispatcher } from "./CommandDispatcher.ts"
import * as Drain from "./Drain.ts"
import { ControlPlaneConfig } from "./ControlPlaneConfig.ts"
import { Homes } from "./Homes.ts"
import * as Observability from "./Observability.ts"
import { Sessions } from "./Sessions.ts"
import { Sharing } from "./Sharing.ts"
import * as SharingRoutes from "./internal/sharing/routes.ts"
import * as Database from "./Database.ts"
import { Replicas } from "./Replicas.ts"
import { AgentLocator } from "./internal/peer/locator.ts"
import { Store } from "./Store.ts"
import * as TeamsApi from "./internal/teams/routes.ts"
import { Teams } from "./Teams.ts"
import { Recordings } from "./Recordings.ts"
import { Users } from "./Users.ts"
import * as UsersApi from "./UsersApi.ts"
import { VncProxy } from "./VncProxy.ts"
import * as WebUi from "./WebUi.ts"

export interface ControlPlaneShape {
  /** Base URL of the API and web UI (PUBLIC_URL when set). */
  readonly url: string
  /** The port actually bound (PORT=0 picks one). */
  readonly port: number
  /** The admin token minted in DEV_MODE, else undefined. */
  readonly devToken: string | undefined
}

/** The Store on the database the config names (DATABASE_URL, DATA_DIR, DATABASE_IN_MEMORY). */
const storeLayer = Layer.unwrap(Effect.map(ControlPlaneConfig, (c) => Store.layerNoDeps.pipe(Layer.provideMerge(Database.layer(c.database)))))

/** The Node HTTP or HTTPS server (TLS_CERT_FILE/TLS_KEY_FILE), created here so its bound address is known. */
const serverLayer = (server: Server) =>
  closeLeftovers(server).pipe(Layer.provideMerge(Layer.unwrap(Effect.map(ControlPlaneConfig, (c) => NodeHttpServer.layer(() => server, {
    port: c.port,
    host: c.host,
    // Close agent and viewer sockets (the hub's and proxy's finalizers, with 1001) before the server stops
    // listening, instead of the server first waiting its whole grace period on those open upgrades.
    disablePreemptiveShutdown: true
  })))))

/** How long connections still open at shutdown get to close by themselves before they are destroyed. */
const LEFTOVER_GRACE = Duration.seconds(2)

/**
 * Runs on shutdown after the hub and the proxy have closed their sockets (the routes are built after this):
 * stops accepting, gives what is still open LEFTOVER_GRACE to finish, then destroys it. Without it, an agent
 * that redialled while the control plane was stopping held an upgrade open that nothing would ever answer,
 * and the process did not exit (500 agents: killed after 15 s).
 */
const closeLeftovers = (server: Server) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const open = new Set<Socket>()
    server.on("connection", (socket: Socket) => {
      open.add(socket)
      socket.once("close", () => open.delete(socket))
    })
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (server.listening) server.close()
        server.closeIdleConnections()
        const drained = yield* Effect.callback<void>((resume) => {
          const check = () => {
            if (open.size === 0) resume(Effect.void)
          }
          for (const socket of open) socket.once("close", check)
          check()
        }).pipe(Effect.timeoutOption(LEFTOVER_GRACE))
        if (drained._tag === "None") {
          yield* Effect.logWarning(`${open.size} connection(s) still open ${Duration.format(LEFTOVER_GRACE)} into shutdown: closing them`)
          for (const socket of open) socket.destroy()
        }
      })
    )
  }))

/**
 * The server binds its port before the routes exist (they are built under it, and the database can take
 * seconds). A request arriving in between would be emitted to no handler and never answered, so until
 * `release` is called such requests are held, then handed to the real handler in order.
 */
const holdEarlyRequests = (server: Server) => {
  const early: Array<[IncomingMessage, ServerResponse]> = []
  const hold = (req: IncomingMessage, res: ServerResponse) => {
    if (server.listenerCount("request") === 1) early.push([req, res])
  }
  server.on("request", hold)
  return () => {
    server.off("request", hold)
    for (const [req, res] of early.splice(0)) server.emit("request", req, res)
  }
}

const makeServer = (c: ControlPlaneConfig["Service"]): Server => {
  const timeouts = {
    headersTimeout: Duration.toMillis(c.httpHeadersTimeout),
    requestTimeout: Math.max(Duration.toMillis(c.httpRequestTimeout), Duration.toMillis(c.httpHeadersTimeout)),
    // How often Node checks those timeouts (its default, 30 s, would let a slow client linger that long).
    connectionsCheckingInterval: Math.max(100, Math.min(1000, Duration.toMillis(c.httpHeadersTimeout) / 4))
  }
  const server = c.tlsCertFile !== undefined && c.tlsKeyFile !== undefined
    ? createTlsServer({ cert: readFileSync(c.tlsCertFile), key: readFileSync(c.tlsKeyFile), ...timeouts }) as unknown as Server
    : createServer(timeouts)
  if (c.maxConnectionsPerAddress > 0) limitConnectionsPerAddress(server, c.maxConnectionsPerAddress)
  return server
}

/** One client address may hold at most `limit` open connections; more are closed as they arrive. */
const limitConnectionsPerAddress = (server: Server, limit: number) => {
  const open = new Map<string, number>()
  // TLS servers report the raw TCP socket on "connection" too, before the handshake.
  server.on("connection", (socket: Socket) => {
    const address = socket.remoteAddress ?? ""
    const n = (open.get(address) ?? 0) + 1
    if (n > limit) {
      socket.destroy()
      return
    }
    open.set(address, n)
    socket.once("close", () => {
      const left = (open.get(address) ?? 1) - 1
      if (left === 0) open.delete(address)
      else open.set(address, left)
    })
  })
}

/** VNC tickets travel in the query string: keep them out of span attributes (the request log drops queries). */
const redactTickets = Layer.succeed(UrlParams.CurrentRedactedNames, [
  "X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token", "AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature", "ticket"
])

/** The VNC proxy's AgentLocator from the replica registry: another live replica holding the agent, else none (here or nobody). */
const agentLocator = Layer.effect(AgentLocator, Effect.map(Replicas, (replicas) => ({
  holderOf: (agentId: AgentId) => Effect.map(replicas.holderOf(agentId), Option.filter((h) => h.replicaId !== replicas.self.id))
})))

/**
 * Everything the routes need, built once and shared by them (and exposed to embedders). Built once the server
 * listens: `boundPort` is the port it got (the replica's default peer address).
 */
const services = (boundPort: () => number) => Users.layer.pipe(
  Layer.provideMerge(Layer.merge(VncProxy.layer, Homes.layer)),
  Layer.provideMerge(agentLocator),
  Layer.provideMerge(Sharing.layer),
  Layer.provideMerge(Recordings.layer),
  Layer.provideMerge(Sessions.layer),
  Layer.provideMerge(Teams.layer),
  Layer.provideMerge(CommandDispatcher.layer),
  Layer.provideMerge(AgentHub.layer),
  Layer.provideMerge(Replicas.layer(boundPort)),
  Layer.provideMerge(Auth.layer),
  Layer.provideMerge(Audit.layer),
  Layer.provideMerge(storeLayer),
  Layer.provideMerge(Drain.layer)
)

export class ControlPlane extends Context.Service<ControlPlane, ControlPlaneShape>()("control-plane/ControlPlane") {
  /** The control plane on a provided ControlPlaneConfig (tests and embedders pick their own settings). */
  static readonly layerNoDeps = Layer.unwrap(Effect.gen(function*() {
    const config = yield* ControlPlaneConfig
    const server = makeServer(config)
    const release = holdEarlyRequests(server)
    const app = Layer.mergeAll(Api.layer, SharingRoutes.routes, TeamsApi.routes, UsersApi.layer, WebUi.layer).pipe(
      Layer.provideMerge(services(() => (server.address() as AddressInfo).port))
    )
    const served = HttpRouter.serve(app).pipe(Layer.provide(serverLayer(server)))
    const info = Layer.effect(ControlPlane, Effect.gen(function*() {
      const auth = yield* Auth
      const address = server.address() as AddressInfo
      const scheme = config.tlsCertFile === undefined ? "http" : "https"
      const host = config.host === "0.0.0.0" || config.host === "::" ? "localhost" : config.host
      const url = config.publicUrl ?? `${scheme}://${host.includes(":") ? `[${host}]` : host}:${address.port}`
      release() // the routes are served now (this layer is built after them)
      // Built last, so this finalizer runs first at shutdown: drain while everything still works.
      const drain = yield* Drain.Drain
      yield* Effect.addFinalizer(() => drain.start)
      yield* Effect.logInfo(`StreamSpace control plane listening on ${url}`)
      return ControlPlane.of({ url: url.replace(/\/+$/, ""), port: address.port, devToken: auth.devToken })
    }))
    return Layer.provideMerge(info, served)
  })).pipe(Layer.provide(Layer.mergeAll(Observability.layer, redactTickets)), Layer.provide(Observability.registryLayer))

  /** Everything, with settings from the environment (or the ConfigProvider in scope). */
  static readonly layer = ControlPlane.layerNoDeps.pipe(Layer.provideMerge(ControlPlaneConfig.layerFromEnv))
}
