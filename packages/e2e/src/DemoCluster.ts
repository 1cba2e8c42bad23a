// DemoCluster: the simulated cluster of the quick start. A kube-testserver whose session pods serve a
// vnc-testserver desktop (one per session pod, named after the session, started when the pod appears and
// closed when it goes), and whose objects (pods, services, PVCs, secrets) are kept in a JSON snapshot under
// the data directory, so that sessions survive a restart of the quick start and the agent adopts them.
import { KubeTestServer, type KubeTestServerHandle, type KubeObject } from "@streamspace/kube-testserver"
import { VncTestServer } from "@streamspace/vnc-testserver"
import { Context, Duration, Effect, FiberMap, Layer, Queue, Schema } from "effect"
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import * as path from "node:path"

export class DemoClusterError extends Schema.TaggedError<DemoClusterError>()("DemoClusterError", {
  reason: Schema.Literals(["StartFailed"]),
  message: Schema.String
}) {}

export interface DemoClusterShape {
  readonly kube: KubeTestServerHandle
  /** A kubeconfig file for the cluster (admin, namespace `streamspace`). */
  readonly kubeconfigPath: string
  /** Session pods restored from the snapshot at start. */
  readonly restoredSessions: number
}

export interface DemoClusterOptions {
  /** Where the kubeconfig and the snapshot live. */
  readonly dir: string
  /** Pod creation to Running, long enough to see a session move through its states. */
  readonly startDelayMs: number
}

/** The kinds the snapshot keeps: what the agent creates for a session (and its credential Secret). */
export const PERSISTED = ["pods", "services", "persistentvolumeclaims", "secrets"] as const
const NAMESPACE = "streamspace"
const LABEL_SESSION = "streamspace.io/session-id"
const ANNOTATION_VNC_PORT = "streamspace.io/vnc-port"
/** Changes arriving within this window are written in one snapshot. */
const SNAPSHOT_DEBOUNCE = Duration.millis(200)

const Snapshot = Schema.Struct({
  version: Schema.Literal(1),
  objects: Schema.Record(Schema.String, Schema.Array(Schema.Record(Schema.String, Schema.Unknown)))
})
const decodeSnapshot = Schema.decodeUnknownEffect(Schema.fromJsonString(Snapshot))

type Change = { readonly type: string; readonly resource: string; readonly obj: KubeObject }

/** The session pod's VNC port: the agent's annotation, else the container port named vnc, else 5900. */
const vncPortOf = (pod: KubeObject): number => {
  const annotated = Number(pod.metadata?.annotations?.[ANNOTATION_VNC_PORT])
  if (Number.isInteger(annotated) && annotated > 0) return annotated
  for (const c of pod.spec?.containers ?? []) {
    for (const p of c.ports ?? []) if (p.name === "vnc" && Number.isInteger(p.containerPort)) return p.containerPort
  }
  return 5900
}

/** The objects to put back: without resource versions, and not those that were being deleted. */
const restorable = (obj: Record<string, unknown>): KubeObject | undefined => {
  const meta = obj["metadata"] as KubeObject | undefined
  if (meta === undefined || meta["deletionTimestamp"] !== undefined) return undefined
  const { resourceVersion: _rv, ...metadata } = meta
  return { ...obj, metadata }
}

export const make = Effect.fnUntraced(function*(options: DemoClusterOptions) {
  // Acquired first, so it closes last: after the final snapshot and the desktops.
  const kube = yield* KubeTestServer.make({ kubelet: { startDelayMs: options.startDelayMs } }).pipe(
    Effect.mapError((e) => new DemoClusterError({ reason: "StartFailed", message: `the demo cluster could not start: ${e.message}` }))
  )
  mkdirSync(options.dir, { recursive: true })
  const snapshotPath = path.join(options.dir, "objects.json")
  const kubeconfigPath = path.join(options.dir, "kubeconfig")
  writeFileSync(kubeconfigPath, kube.kubeconfigFor(kube.adminToken, { namespace: NAMESPACE, user: "admin" }), { mode: 0o600 })

  const writeSnapshot = Effect.sync(() => {
    const objects = Object.fromEntries(PERSISTED.map((r) => [r, kube.list(r)]))
    const tmp = `${snapshotPath}.tmp`
    writeFileSync(tmp, JSON.stringify({ version: 1, objects }), { mode: 0o600 })
    renameSync(tmp, snapshotPath)
  }).pipe(Effect.catchCause((cause) => Effect.logWarning("demo cluster: could not write its snapshot", cause)))

  /** One session desktop: listens and serves the pod's port-forward until its fiber is interrupted. */
  const desktop = (namespace: string, pod: string, session: string, port: number) =>
    Effect.gen(function*() {
      const vnc = yield* VncTestServer
      kube.registerPortForward(namespace, pod, port, { host: vnc.host, port: vnc.port })
      yield* Effect.addFinalizer(() => Effect.sync(() => kube.unregisterPortForward(namespace, pod, port)))
      return yield* Effect.never
    }).pipe(
      Effect.scoped,
      Effect.provide(VncTestServer.layer({ name: session })),
      Effect.catchCause((cause) => Effect.logWarning(`demo cluster: no desktop for session ${session}`, cause)),
      Effect.annotateLogs({ session_id: session })
    )

  const fibers = yield* FiberMap.make<string>()
  const changes = yield* Queue.unbounded<Change>()
  const handle = Effect.fnUntraced(function*(change: Change) {
    if (!(PERSISTED as ReadonlyArray<string>).includes(change.resource)) return
    yield* FiberMap.run(fibers, "snapshot", Effect.andThen(Effect.sleep(SNAPSHOT_DEBOUNCE), writeSnapshot), { onlyIfMissing: true })
    const session = change.obj.metadata?.labels?.[LABEL_SESSION] as string | undefined
    if (change.resource !== "pods" || session === undefined) return
    const { namespace, name } = change.obj.metadata as { namespace: string; name: string }
    const key = `pod/${namespace}/${name}`
    if (change.type === "DELETED") return yield* FiberMap.remove(fibers, key)
    yield* FiberMap.run(fibers, key, desktop(namespace, name, session, vncPortOf(change.obj)), { onlyIfMissing: true })
  })
  yield* Effect.forkScoped(Effect.forever(Effect.flatMap(Queue.take(changes), handle)))
  const unsubscribe = kube.onChange((type, resource, obj) => {
    Queue.offerUnsafe(changes, { type, resource, obj })
  })
  // Runs before the desktops close (finalizers run in reverse), so the last state is on disk.
  yield* Effect.addFinalizer(() => Effect.andThen(Effect.sync(unsubscribe), writeSnapshot))

  let restoredSessions = 0
  const text = yield* Effect.sync(() => {
    try {
      return readFileSync(snapshotPath, "utf8")
    } catch {
      return undefined
    }
  })
  if (text !== undefined) {
    const snapshot = yield* decodeSnapshot(text).pipe(
      Effect.tapError((e) => Effect.logWarning(`demo cluster: ignoring an unreadable snapshot ${snapshotPath}: ${e.message}`)),
      Effect.orElseSucceed(() => undefined)
    )
    // Claims and services first, so a restored pod finds what it refers to.
    for (const resource of ["secrets", "persistentvolumeclaims", "services", "pods"]) {
      for (const obj of snapshot?.objects[resource] ?? []) {
        const o = restorable(obj)
        if (o === undefined) continue
        kube.put(resource, o)
        if (resource === "pods" && o.metadata?.labels?.[LABEL_SESSION] !== undefined) restoredSessions++
      }
    }
  }
  return { kube, kubeconfigPath, restoredSessions } satisfies DemoClusterShape
})

export class DemoCluster extends Context.Service<DemoCluster, DemoClusterShape>()("e2e/DemoCluster") {
  static readonly layer = (options: DemoClusterOptions): Layer.Layer<DemoCluster, DemoClusterError> =>
    Layer.effect(DemoCluster, Effect.map(make(options), DemoCluster.of))
}
