import { assert, describe, it } from "@effect/vitest"
import * as k8s from "@kubernetes/client-node"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { existsSync, readFileSync } from "node:fs"
import { connect } from "node:net"
import { RfbClient, TestCluster } from "../src/index.ts"

describe("TestCluster", () => {
  it.live("a Kubernetes API server, a desktop behind every pod's port-forward, and a kubeconfig file, for one scope", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(TestCluster.layer({ namespace: "harness" }), scope)
      const cluster = Context.get(ctx, TestCluster)
      // The kubeconfig file works with the real client and defaults to the namespace asked for.
      const kc = new k8s.KubeConfig()
      kc.loadFromString(readFileSync(cluster.kubeconfigPath, "utf8"))
      assert.strictEqual(kc.getContextObject(kc.getCurrentContext())?.namespace, "harness")
      const pods = yield* Effect.promise(() => kc.makeApiClient(k8s.CoreV1Api).listNamespacedPod({ namespace: "harness" }))
      assert.deepStrictEqual(pods.items, [])
      // The desktop (every pod's port-forward reaches it: examples/harness reads its banner through the agent).
      const client = yield* Effect.promise(() => RfbClient.connect(connect(cluster.vnc.port, cluster.vnc.host), { timeout: 5_000 }))
      assert.strictEqual(client.name, "testkit desktop")
      client.close()
      yield* Scope.close(scope, Exit.void)
      assert.isFalse(existsSync(cluster.kubeconfigPath), "the kubeconfig is removed with the scope")
    }))
})
