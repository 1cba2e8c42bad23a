// CredentialStore: the file (mode 0600, atomic), the Kubernetes Secret (through kube-testserver), the
// choice between them, and the in-memory one.
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { readFileSync, statSync } from "node:fs"
import { AgentConfig } from "../src/AgentConfig.ts"
import { CredentialStore, SECRET_KEY } from "../src/CredentialStore.ts"
import { Kubernetes } from "../src/Kubernetes.ts"
import { AGENT_ID, fastKube, makeCluster, NAMESPACE } from "./support/cluster.ts"

const storeOf = <E>(layer: Layer.Layer<CredentialStore, E>) => Effect.map(Layer.build(layer), (ctx) => Context.get(ctx, CredentialStore))

describe("CredentialStore", () => {
  it.live("file: nothing at first, then the saved token, written with mode 0600", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const creds = yield* storeOf(CredentialStore.layerFile.pipe(Layer.provide(cluster.config())))
      assert.isTrue(Option.isNone(yield* creds.load))
      yield* creds.save(Redacted.make("per-agent-token-0123456789"))
      yield* creds.save(Redacted.make("rotated-token-0123456789"))
      assert.strictEqual(Redacted.value(Option.getOrThrow(yield* creds.load)), "rotated-token-0123456789")
      const file = cluster.env.AGENT_CREDENTIAL_FILE!
      assert.strictEqual(statSync(file).mode & 0o777, 0o600)
      assert.strictEqual(readFileSync(file, "utf8"), "rotated-token-0123456789")
    }))

  it.live("Kubernetes: a Secret in NAMESPACE, created then replaced", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const creds = yield* storeOf(
        CredentialStore.layerKubernetes.pipe(Layer.provide(Kubernetes.layerWith(fastKube)), Layer.provideMerge(cluster.config({ AGENT_CREDENTIAL_SECRET: "agent-cred" })))
      )
      assert.isTrue(Option.isNone(yield* creds.load))
      yield* creds.save(Redacted.make("per-agent-token-0123456789"))
      yield* creds.save(Redacted.make("rotated-token-0123456789"))
      assert.strictEqual(Redacted.value(Option.getOrThrow(yield* creds.load)), "rotated-token-0123456789")
      const secret = cluster.server.get("secrets", NAMESPACE, "agent-cred")!
      assert.strictEqual(Buffer.from(secret.data[SECRET_KEY], "base64").toString(), "rotated-token-0123456789")
      assert.strictEqual(secret.metadata.labels.agent, AGENT_ID)
    }))

  it.live("Kubernetes: saving into the Secret the chart created keeps Helm's labels and annotations", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const helm = {
        labels: { "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "edge" },
        annotations: { "meta.helm.sh/release-name": "edge", "meta.helm.sh/release-namespace": NAMESPACE }
      }
      cluster.server.put("secrets", { metadata: { name: "agent-cred", namespace: NAMESPACE, ...helm }, type: "Opaque" })
      const creds = yield* storeOf(
        CredentialStore.layerKubernetes.pipe(Layer.provide(Kubernetes.layerWith(fastKube)), Layer.provideMerge(cluster.config({ AGENT_CREDENTIAL_SECRET: "agent-cred" })))
      )
      yield* creds.save(Redacted.make("per-agent-token-0123456789"))
      const secret = cluster.server.get("secrets", NAMESPACE, "agent-cred")!
      assert.strictEqual(Buffer.from(secret.data[SECRET_KEY], "base64").toString(), "per-agent-token-0123456789")
      assert.deepInclude(secret.metadata.labels, { ...helm.labels, agent: AGENT_ID })
      assert.deepInclude(secret.metadata.annotations, helm.annotations)
    }))

  it.live("Kubernetes: API failures are Read/Write errors naming the Secret", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const creds = yield* storeOf(CredentialStore.layerKubernetes.pipe(Layer.provide(Kubernetes.layerWith(fastKube)), Layer.provideMerge(cluster.config())))
      cluster.server.addFault({ path: `/api/v1/namespaces/${NAMESPACE}/secrets`, status: 403, message: "no secrets for you" })
      const e = yield* Effect.flip(creds.load)
      assert.strictEqual(e.reason, "Read")
      assert.include(e.message, "streamspace-agent-credential")
      assert.include(e.message, "no secrets for you")
      const w = yield* Effect.flip(creds.save(Redacted.make("per-agent-token-0123456789")))
      assert.strictEqual(w.reason, "Write")
    }))

  it.live("layer: a file outside a cluster (KUBECONFIG set); in one (unset) the Kubernetes side, which needs the pod's environment", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster()
      const outside = yield* storeOf(CredentialStore.layer.pipe(Layer.provide(cluster.config())))
      yield* outside.save(Redacted.make("per-agent-token-0123456789"))
      assert.strictEqual(readFileSync(cluster.env.AGENT_CREDENTIAL_FILE!, "utf8"), "per-agent-token-0123456789")
      // In-cluster without a pod's environment: the Secret store cannot reach the API, and says why at start.
      // (The real-cluster suite runs the in-cluster agent and finds its credential in the Secret.)
      const e = yield* Effect.flip(storeOf(CredentialStore.layer.pipe(Layer.provide(AgentConfig.layerFromRecord({ ...cluster.env, KUBECONFIG: "" })))))
      assert.include(e.message, "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
    }), 20_000)

  it.effect("memory: for tests", () =>
    Effect.gen(function*() {
      const creds = yield* storeOf(CredentialStore.layerMemory("initial-token-0123456789"))
      assert.strictEqual(Redacted.value(Option.getOrThrow(yield* creds.load)), "initial-token-0123456789")
      yield* creds.save(Redacted.make("next"))
      assert.strictEqual(Redacted.value(Option.getOrThrow(yield* creds.load)), "next")
    }))
})
