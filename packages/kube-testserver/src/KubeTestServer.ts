// KubeTestServer: owns one in-process Kubernetes API server (real HTTP on 127.0.0.1) for the lifetime of
// a scope. The service value is the server handle: URL, kubeconfigs, and the controls tests use to
// shape cluster behaviour (kubelet knobs, RBAC, port-forward targets, faults, direct object access).
import { Context, Effect, Layer, Schema } from "effect"
import { type KubeTestServerHandle, type ServerOptions, start } from "./internal/server.ts"

export class KubeTestServerError extends Schema.TaggedError<KubeTestServerError>()("KubeTestServerError", {
  reason: Schema.Literals(["ListenFailed"]),
  message: Schema.String
}) {}

export class KubeTestServer extends Context.Service<KubeTestServer, KubeTestServerHandle>()("kube-testserver/KubeTestServer") {
  /** Starts a server (127.0.0.1, port 0 unless given) and closes it when the layer's scope ends. */
  static layer(options: ServerOptions = {}): Layer.Layer<KubeTestServer, KubeTestServerError> {
    return Layer.effect(KubeTestServer, KubeTestServer.make(options))
  }

  /** The scoped constructor behind `layer`. */
  static make(options: ServerOptions = {}) {
    return Effect.acquireRelease(
      Effect.tryPromise({
        try: () => start(options),
        catch: (e) => new KubeTestServerError({ reason: "ListenFailed", message: e instanceof Error ? e.message : String(e) })
      }),
      (handle) => Effect.promise(() => handle.close())
    ).pipe(Effect.map((handle) => KubeTestServer.of(handle)))
  }
}
