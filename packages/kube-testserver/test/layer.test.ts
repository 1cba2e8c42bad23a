import { assert, describe, it } from "@effect/vitest"
import * as k8s from "@kubernetes/client-node"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { KubeTestServer } from "../src/index.ts"

describe("KubeTestServer layer", () => {
  it.live("provides a running server for the scope and closes it afterwards", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const ctx = yield* Layer.buildWithScope(KubeTestServer.layer({ kubelet: { startDelayMs: 0 } }), scope)
      const kube = Context.get(ctx, KubeTestServer)
      assert.match(kube.url, /^http:\/\/127\.0\.0\.1:\d+$/)
      const kc = new k8s.KubeConfig()
      kc.loadFromString(kube.kubeconfig)
      const api = kc.makeApiClient(k8s.CoreV1Api)
      const ns = yield* Effect.promise(() => api.listNamespace())
      assert.deepStrictEqual(ns.items.map((n) => n.metadata?.name), ["default", "streamspace"])
      yield* Scope.close(scope, Exit.void)
      const after = yield* Effect.promise(() => api.listNamespace().then(() => "ok", (e) => String(e?.cause?.code)))
      assert.strictEqual(after, "ECONNREFUSED")
    }))

  it.live("the service is usable from Effect code", () =>
    Effect.gen(function*() {
      const kube = yield* KubeTestServer
      kube.put("configmaps", { metadata: { name: "direct", namespace: "streamspace" }, data: { a: "1" } })
      assert.strictEqual(kube.get("configmaps", "streamspace", "direct")?.data.a, "1")
      assert.strictEqual(kube.list("ConfigMap", "streamspace").length, 1)
    }).pipe(Effect.provide(KubeTestServer.layer())))
})
