// RBAC: the agent runs as a ServiceAccount bound to the Helm chart's Role (files/role-rules.yaml) through an
// auditing proxy. Every call it makes must be allowed, every permission in the file must be used by some
// call, and a missing permission fails the feature that needs it.
import { assert, describe, it } from "@effect/vitest"
import { RfbClient, VncTestServer } from "@streamspace/vnc-testserver"
import { Context, Effect, Layer, Option, Redacted } from "effect"
import { readFileSync } from "node:fs"
import { parse, stringify } from "yaml"
import { CredentialStore } from "../src/CredentialStore.ts"
import { SessionStore } from "../src/SessionStore.ts"
import { TunnelPool } from "../src/TunnelPool.ts"
import { type Cluster, CREDENTIAL_SECRET_PLACEHOLDER, fastKube, makeCluster, NAMESPACE, ROLE_RULES_PATH, sessionSpec, sid } from "./support/cluster.ts"
import { Kubernetes } from "../src/Kubernetes.ts"
import { waitFor } from "@streamspace/testbed"
import { makeFakeLink, viewer } from "./support/clusterConnection.ts"
import type { TunnelId, UserId } from "@streamspace/protocol"

interface Rule {
  readonly apiGroups: Array<string>
  readonly resources: Array<string>
  readonly verbs: Array<string>
  readonly resourceNames?: Array<string>
}
const rules = (): Array<Rule> => parse(readFileSync(ROLE_RULES_PATH, "utf8")) as Array<Rule>

const agent = (cluster: Cluster) =>
  Effect.gen(function*() {
    const vnc = Context.get(yield* Layer.build(VncTestServer.layer({ width: 320, height: 240 })), VncTestServer)
    cluster.server.setDefaultPortForward(() => ({ host: vnc.host, port: vnc.port }))
    const { layer, link } = makeFakeLink()
    const ctx = yield* Layer.build(
      Layer.mergeAll(TunnelPool.layer, CredentialStore.layerKubernetes).pipe(Layer.provideMerge(cluster.store()), Layer.provideMerge(layer))
    )
    return { store: Context.get(ctx, SessionStore), pool: Context.get(ctx, TunnelPool), creds: Context.get(ctx, CredentialStore), link }
  })

const running = (store: SessionStore["Service"], id: string) =>
  waitFor(`${id} running`, Effect.map(store.get(sid(id)), (s) => Option.isSome(s) && s.value.phase === "running"))

describe("RBAC: the chart's Role", () => {
  it.live("allows every call the agent makes, and every permission in it is used", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster({ rbac: true, audit: true })
      const { creds, link, pool, store } = yield* agent(cluster)
      // Sessions: create with a home, adopt on a repeated create, a second session reusing the home.
      yield* store.create(sid("s-1"), sessionSpec({ persistent_home: true }))
      yield* running(store, "s-1")
      yield* store.create(sid("s-1"), sessionSpec({ persistent_home: true }))
      yield* store.create(sid("s-2"), sessionSpec({ persistent_home: true }))
      // A tunnel carrying RFB.
      yield* pool.open(sid("s-1"), 1 as TunnelId, 1024 * 1024)
      const client = yield* Effect.promise(() => RfbClient.connect(viewer(pool, link, 1 as TunnelId, { window: 1024 * 1024 })))
      yield* Effect.promise(() => client.update(false))
      yield* pool.close(1 as TunnelId, "disconnect")
      // The credential Secret (the chart creates it empty): replace, replace again, read.
      yield* creds.save(Redacted.make("first-credential-token"))
      yield* creds.save(Redacted.make("second-credential-token"))
      assert.strictEqual(Redacted.value(Option.getOrThrow(yield* creds.load)), "second-credential-token")
      yield* store.capacity
      yield* store.delete(sid("s-1"))
      yield* waitFor("s-1 gone", Effect.map(store.get(sid("s-1")), Option.isNone))
      // A warm pool: its pod made, claimed for a session by relabelling it (update), then the pool removed.
      yield* store.setWarmPools([{ template: "firefox" as never, size: 1, image: "streamspace/firefox:1.0", vnc_port: 5900 }])
      yield* waitFor("a warm pod running", Effect.sync(() =>
        cluster.server.list("pods", "streamspace").some((p: any) => p.metadata.labels?.["streamspace.io/warm-pool"] === "firefox" && p.status?.phase === "Running")))
      assert.strictEqual((yield* store.create(sid("s-warm"), sessionSpec())).phase, "running")
      yield* store.setWarmPools([])
      // Homes: listed, then deleted once no session mounts them.
      assert.deepStrictEqual((yield* store.listHomes).map((h) => h.name), ["home-alice"])
      yield* store.delete(sid("s-2"))
      yield* waitFor("s-2 gone", Effect.map(store.get(sid("s-2")), Option.isNone))
      yield* store.deleteHome("home-alice", "alice" as UserId)

      const records = cluster.audit!.records
      const forbidden = records.filter((r) => r.status === 403)
      assert.deepStrictEqual(forbidden, [], "no call was refused by RBAC")
      const used = new Set(records.map((r) => `${r.verb} ${r.resource}`))
      const unused = rules().flatMap((r) => r.resources.flatMap((res) => r.verbs.map((v) => `${v} ${res}`))).filter((k) => !used.has(k))
      assert.deepStrictEqual(unused, [], "every permission in role-rules.yaml is used by some call")
      assert.isTrue(health(yield* store.health))
    }))

  it.live("a missing permission fails the feature that needs it, as Forbidden", () =>
    Effect.gen(function*() {
      const without = (resource: string, verb: string) =>
        stringify(rules().map((r) => r.resources.includes(resource) ? { ...r, verbs: r.verbs.filter((v) => v !== verb) } : r))
      // No port-forward create (the 1.35+ check): tunnels fail, sessions still work.
      const c1 = yield* makeCluster({ rbac: without("pods/portforward", "create") })
      const a1 = yield* agent(c1)
      yield* a1.store.create(sid("s-1"), sessionSpec())
      yield* running(a1.store, "s-1")
      const tunnel = yield* Effect.flip(a1.pool.open(sid("s-1"), 1 as TunnelId, 1024 * 1024))
      assert.strictEqual(tunnel.reason, "PortForwardFailed")
      assert.include(tunnel.message, "forbidden")
      // No service delete: deleting a session fails as Forbidden.
      const c2 = yield* makeCluster({ rbac: without("services", "delete") })
      const a2 = yield* agent(c2)
      yield* a2.store.create(sid("s-1"), sessionSpec())
      const del = yield* Effect.flip(a2.store.delete(sid("s-1")))
      assert.strictEqual(del.reason, "Forbidden")
      // No pod watch: the store cannot follow the cluster and its health says so.
      const c3 = yield* makeCluster({ rbac: without("pods", "watch") })
      const a3 = yield* agent(c3)
      const h = yield* waitFor("health degraded", Effect.map(a3.store.health, (x) => x.status !== "ok" ? x : undefined))
      assert.include(h.message, "Forbidden")
    }))
})

describe("RBAC: the credential Secret", () => {
  it.live("the agent reads and replaces its own credential Secret and no other Secret of its namespace", () =>
    Effect.gen(function*() {
      const cluster = yield* makeCluster({ rbac: true })
      // Another agent's credential in the same namespace.
      cluster.server.put("secrets", {
        metadata: { name: "other-agent-credential", namespace: NAMESPACE },
        type: "Opaque",
        data: { token: Buffer.from("other-agents-secret-token").toString("base64") }
      })
      const own = yield* credentialStore(cluster, {})
      yield* own.save(Redacted.make("own-credential-token"))
      assert.strictEqual(Redacted.value(Option.getOrThrow(yield* own.load)), "own-credential-token")
      const other = yield* credentialStore(cluster, { AGENT_CREDENTIAL_SECRET: "other-agent-credential" })
      const read = yield* Effect.flip(other.load)
      assert.strictEqual(read.reason, "Read")
      assert.include(read.message, "forbidden")
      const write = yield* Effect.flip(other.save(Redacted.make("overwritten")))
      assert.strictEqual(write.reason, "Write")
      const rule = rules().find((r) => r.resources.includes("secrets"))!
      assert.deepStrictEqual(rule.resourceNames, [CREDENTIAL_SECRET_PLACEHOLDER])
      assert.notInclude(rule.verbs, "list")
      assert.notInclude(rule.verbs, "create")
    }))
})

const credentialStore = (cluster: Cluster, extra: Record<string, string>) =>
  Effect.map(
    Layer.build(CredentialStore.layerKubernetes.pipe(Layer.provide(Kubernetes.layerWith(fastKube)), Layer.provide(cluster.config(extra)))),
    (ctx) => Context.get(ctx, CredentialStore)
  )

const health = (h: { readonly status: string }) => h.status === "ok" || h.status === "degraded"
