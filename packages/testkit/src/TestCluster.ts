// TestCluster: a Kubernetes API server (kube-testserver) whose pods' port-forwards reach a VNC desktop
// (vnc-testserver), both on 127.0.0.1 for the life of a scope, and a kubeconfig file for it. What an
// integration harness that embeds the StreamSpace agent points the agent at: KUBECONFIG=<kubeconfigPath>.
import { KubeTestServer, type KubeTestServerError, type KubeTestServerHandle, type ServerOptions } from "@streamspace/kube-testserver"
import { VncTestServer, type VncTestServerError, type VncTestServerOptions } from "@streamspace/vnc-testserver"
import { Context, Effect, Layer, type Scope } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

export interface TestClusterOptions {
  /** Namespace the kubeconfig's context defaults to (the agent's NAMESPACE). Default "streamspace". */
  readonly namespace?: string
  /** kube-testserver options; the kubelet runs pods within ~10 ms unless told otherwise. */
  readonly kube?: ServerOptions
  /** The desktop every session pod's port-forward reaches. */
  readonly vnc?: VncTestServerOptions
}

export interface TestClusterShape {
  /** The API server: objects, faults, kubelet knobs (see @streamspace/kube-testserver). */
  readonly kube: KubeTestServerHandle
  /** The desktop behind every pod's port-forward. */
  readonly vnc: VncTestServer["Service"]
  readonly namespace: string
  /** A kubeconfig file (admin credentials, `namespace` as the default), removed when the scope ends. */
  readonly kubeconfigPath: string
}

export class TestCluster extends Context.Service<TestCluster, TestClusterShape>()("@streamspace/testkit/TestCluster") {
  /** The scoped constructor behind `layer`. */
  static make(options: TestClusterOptions = {}): Effect.Effect<TestClusterShape, KubeTestServerError | VncTestServerError, Scope.Scope> {
    return Effect.gen(function*() {
      const namespace = options.namespace ?? "streamspace"
      const kube = yield* KubeTestServer.make({ kubelet: { startDelayMs: 10, terminationDelayMs: 10, pvcBindDelayMs: 10 }, ...options.kube })
      const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 64, height: 48, name: "testkit desktop", ...options.vnc })), VncTestServer)
      kube.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => mkdtempSync(join(tmpdir(), "streamspace-testkit-"))),
        (d) => Effect.sync(() => rmSync(d, { recursive: true, force: true }))
      )
      const kubeconfigPath = join(dir, "kubeconfig")
      writeFileSync(kubeconfigPath, kube.kubeconfigFor(kube.adminToken, { namespace, user: "admin" }), { mode: 0o600 })
      return { kube, vnc, namespace, kubeconfigPath }
    })
  }

  /** A cluster and a desktop while the layer's scope is open. */
  static layer(options: TestClusterOptions = {}): Layer.Layer<TestCluster, KubeTestServerError | VncTestServerError> {
    return Layer.effect(TestCluster, TestCluster.make(options))
  }
}
