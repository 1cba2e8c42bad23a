// Token files: a kubeconfig user with `tokenFile:` (which @kubernetes/client-node ignores on its own) is
// authenticated with the file's token, read again when the file changes, against kube-testserver. The
// in-cluster service-account token is the same mechanism; the real-cluster suite rotates and revokes it.
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { kubeconfigTokenFiles, tokenFileAuthenticator, tokenFileProvider } from "../src/internal/kubeAuth.ts"
import { Kubernetes } from "../src/Kubernetes.ts"
import { fastKube, makeCluster, NAMESPACE } from "./support/cluster.ts"

describe("token files", () => {
  it.live("a kubeconfig user's tokenFile authenticates, and a replaced file is used from the next call", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const tokenFile = join(cluster.dir, "token")
      writeFileSync(tokenFile, `${cluster.server.adminToken}\n`)
      const kubeconfig = join(cluster.dir, "kubeconfig-tokenfile")
      writeFileSync(kubeconfig, JSON.stringify({
        apiVersion: "v1",
        kind: "Config",
        clusters: [{ name: "c", cluster: { server: cluster.server.url, "insecure-skip-tls-verify": true } }],
        // relative to the kubeconfig's folder, as kubectl reads it
        users: [{ name: "u", user: { tokenFile: "token" } }],
        contexts: [{ name: "x", context: { cluster: "c", user: "u", namespace: NAMESPACE } }],
        "current-context": "x"
      }))
      const kube = yield* Layer.build(Kubernetes.layerWith({ ...fastKube, retryTimes: 0 }).pipe(Layer.provide(cluster.config({ KUBECONFIG: kubeconfig })))).pipe(
        Effect.map((ctx) => ctx.mapUnsafe.get(Kubernetes.key) as Kubernetes["Service"])
      )
      assert.deepStrictEqual((yield* kube.listSessionPods).items, [])

      writeFileSync(tokenFile, "revoked-token")
      const e = yield* Effect.flip(kube.listSessionPods)
      assert.strictEqual(e.reason, "Unauthorized")

      writeFileSync(tokenFile, cluster.server.adminToken)
      assert.deepStrictEqual((yield* kube.listSessionPods).items, [])
    }))

  it("finds tokenFile users and resolves their paths against the kubeconfig's folder", () => {
    const files = kubeconfigTokenFiles({
      users: [
        { name: "a", user: { tokenFile: "tokens/a" } },
        { name: "b", user: { tokenFile: "/abs/b" } },
        { name: "c", user: { token: "inline" } },
        { name: "d" }
      ]
    }, "/etc/kube/config")
    assert.deepStrictEqual([...files], [["a", "/etc/kube/tokens/a"], ["b", "/abs/b"]])
  })

  it("the authenticator reads the file again when it changed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kubeauth-"))
    const file = join(dir, "token")
    writeFileSync(file, "one\n")
    const auth = tokenFileAuthenticator()
    const user = { name: "u", authProvider: tokenFileProvider(file) }
    assert.isTrue(auth.isAuthProvider(user))
    assert.isFalse(auth.isAuthProvider({ name: "v" }))
    const header = async () => {
      const opts: { headers?: Record<string, string> } = {}
      await auth.applyAuthentication(user, opts)
      return opts.headers?.Authorization
    }
    assert.strictEqual(await header(), "Bearer one")
    writeFileSync(file, "two-longer")
    assert.strictEqual(await header(), "Bearer two-longer")
  })
})
