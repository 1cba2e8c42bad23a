// Keeps kube-testserver honest: the same sequence of calls, made with @kubernetes/client-node as the agent
// makes them, against kube-testserver and against the real API server, must give the same transcript of
// statuses and shapes for what the agent relies on (create, get, list with selectors, watch events, 404,
// 409, 422, 400, delete, port-forward). Where the two are configured differently on purpose (the default
// StorageClass's name, the node a pod lands on) the transcript records only that a value is there.
import * as k8s from "@kubernetes/client-node"
import { start as startKubeTestServer } from "@streamspace/kube-testserver"
import { startClusterDesktops, waitForPromise } from "@streamspace/testbed"
import { start as startVnc } from "@streamspace/vnc-testserver"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import * as R from "./support.ts"

interface Target {
  readonly kc: k8s.KubeConfig
  readonly namespace: string
  /** Makes the pod's port 5900 reach a desktop (registered by the harness of each side). */
  readonly desktopFor: (pod: string) => Promise<void>
}

type Entry = Record<string, unknown>

/** What an API error says, as the agent reads it (toKubernetesError). */
const failure = (e: unknown): Entry => {
  if (!(e instanceof k8s.ApiException)) throw e
  const body = (typeof e.body === "string" ? JSON.parse(e.body) : e.body) as { reason?: string; details?: { name?: string; kind?: string; causes?: Array<{ field?: string }> } }
  return {
    code: e.code,
    reason: body.reason,
    ...(body.details?.name !== undefined ? { name: body.details.name } : {}),
    ...(body.details?.kind !== undefined ? { kind: body.details.kind } : {}),
    ...(body.details?.causes !== undefined ? { fields: body.details.causes.map((c) => c.field).sort() } : {})
  }
}

const attempt = async (f: () => Promise<Entry>): Promise<Entry> => {
  try {
    return await f()
  } catch (e) {
    return failure(e)
  }
}

const podBody = (name: string, labels: Record<string, string>, image = "streamspace/desktop:1"): k8s.V1Pod => ({
  metadata: { name, labels },
  spec: {
    securityContext: { runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } },
    containers: [{
      name: "session",
      image,
      ports: [{ containerPort: 5900 }],
      securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ["ALL"] } }
    }]
  }
})

/** The parts of a Pod the agent reads, and the defaults a real API server fills in. */
const podShape = (p: k8s.V1Pod): Entry => ({
  kind: p.kind,
  apiVersion: p.apiVersion,
  name: p.metadata?.name,
  hasUid: typeof p.metadata?.uid === "string",
  hasResourceVersion: typeof p.metadata?.resourceVersion === "string",
  labels: p.metadata?.labels,
  restartPolicy: p.spec?.restartPolicy,
  dnsPolicy: p.spec?.dnsPolicy,
  schedulerName: p.spec?.schedulerName,
  terminationGracePeriodSeconds: p.spec?.terminationGracePeriodSeconds,
  imagePullPolicy: p.spec?.containers[0]?.imagePullPolicy,
  terminationMessagePolicy: p.spec?.containers[0]?.terminationMessagePolicy,
  portProtocol: p.spec?.containers[0]?.ports?.[0]?.protocol,
  phase: p.status?.phase
})

/** First and last event type each pod got on a watch, until `until` holds. */
const watchTranscript = async (t: Target, resourceVersion: string, act: () => Promise<void>, until: (seen: Map<string, Array<string>>) => boolean) => {
  const seen = new Map<string, Array<string>>()
  const controller = await new k8s.Watch(t.kc).watch(
    `/api/v1/namespaces/${t.namespace}/pods`,
    { labelSelector: "app=session", resourceVersion, allowWatchBookmarks: false },
    (type, obj: k8s.V1Pod) => {
      const name = obj.metadata?.name ?? "?"
      seen.set(name, [...(seen.get(name) ?? []), type])
    },
    () => {}
  )
  try {
    await act()
    await waitForPromise("the watch events", () => until(seen), { timeout: 60_000 })
  } finally {
    controller.abort()
  }
  return Object.fromEntries([...seen].map(([name, types]) => [name, { first: types[0], last: types.at(-1) }]).sort())
}

/** The first bytes a pod's port 5900 sends through the API server's port-forward (v4.channel.k8s.io). */
const portForwardBanner = async (t: Target, pod: string): Promise<Entry> => {
  const server = t.kc.getCurrentCluster()!.server.replace(/^http/, "ws")
  const options: Record<string, unknown> = {}
  await t.kc.applyToHTTPSOptions(options)
  const ws = new WebSocket(`${server}/api/v1/namespaces/${t.namespace}/pods/${pod}/portforward?ports=5900`, ["v4.channel.k8s.io"], options)
  return new Promise<Entry>((resolve) => {
    let data = Buffer.alloc(0)
    const preambles = new Set<number>()
    ws.on("unexpected-response", (_req, res) => resolve({ code: res.statusCode }))
    ws.on("error", (e) => resolve({ error: e.message }))
    ws.on("message", (raw: Buffer) => {
      const channel = raw[0]!
      if (!preambles.has(channel)) {
        preambles.add(channel) // the first frame on each channel is the 2-byte port
        return
      }
      if (channel === 0) data = Buffer.concat([data, raw.subarray(1)])
      if (data.length >= 12) {
        ws.close()
        resolve({ protocol: ws.protocol, banner: data.subarray(0, 12).toString("latin1") })
      }
    })
  })
}

const scenario = async (t: Target): Promise<Array<[string, Entry]>> => {
  const core = t.kc.makeApiClient(k8s.CoreV1Api)
  const namespace = t.namespace
  const out: Array<[string, Entry]> = []
  const step = async (name: string, f: () => Promise<Entry>) => out.push([name, await attempt(f)])

  await step("create pod", async () => podShape(await core.createNamespacedPod({ namespace, body: podBody("p1", { app: "session", tier: "a" }) })))
  await step("create pod again", async () => podShape(await core.createNamespacedPod({ namespace, body: podBody("p1", { app: "session" }) })))
  await step("create pod with a bad name", async () => podShape(await core.createNamespacedPod({ namespace, body: podBody("Bad_Name", {}) })))
  await step("create pod without an image", async () => podShape(await core.createNamespacedPod({ namespace, body: podBody("p-noimage", {}, "") })))
  await step("get pod", async () => {
    const p = await core.readNamespacedPod({ name: "p1", namespace })
    return { kind: p.kind, name: p.metadata?.name }
  })
  await step("get missing pod", async () => podShape(await core.readNamespacedPod({ name: "nope", namespace })))
  await core.createNamespacedPod({ namespace, body: podBody("p-other", { app: "other" }) })
  const list = await core.listNamespacedPod({ namespace, labelSelector: "app=session,tier in (a,b)" })
  out.push(["list with a set-based selector", {
    kind: list.kind,
    hasResourceVersion: (list.metadata?.resourceVersion ?? "") !== "",
    names: list.items.map((p) => p.metadata?.name),
    itemKinds: list.items.map((p) => p.kind ?? null)
  }])
  await step("list by field selector", async () => ({
    names: (await core.listNamespacedPod({ namespace, fieldSelector: "metadata.name=p-other" })).items.map((p) => p.metadata?.name)
  }))
  await step("list by an unsupported field selector", async () => ({
    names: (await core.listNamespacedPod({ namespace, fieldSelector: "spec.image=x" })).items.map((p) => p.metadata?.name)
  }))
  await step("list with limit", async () => {
    const page = await core.listNamespacedPod({ namespace, limit: 1 })
    return { items: page.items.length, hasContinue: (page.metadata?._continue ?? "") !== "" }
  })

  const watched = await watchTranscript(t, list.metadata!.resourceVersion!, async () => {
    await core.createNamespacedPod({ namespace, body: podBody("p2", { app: "session" }) })
    await waitForPromise("p2 running", async () => (await core.readNamespacedPod({ name: "p2", namespace })).status?.phase === "Running", { timeout: 60_000 })
    await core.deleteNamespacedPod({ name: "p2", namespace })
  }, (seen) => seen.get("p2")?.at(-1) === "DELETED")
  // Only p2's events: p1's own status updates (kwok's, whenever it gets to them on a busy machine) may fall in the
  // same window on the real server, and they are not what this step compares.
  out.push(["watch: a pod created, running, then deleted", { p2: watched["p2"] }])

  await waitForPromise("p1 running", async () => (await core.readNamespacedPod({ name: "p1", namespace })).status?.phase === "Running", { timeout: 60_000 })
  await t.desktopFor("p1")
  out.push(["port-forward to a running pod", await portForwardBanner(t, "p1")])
  out.push(["port-forward to a missing pod", await portForwardBanner(t, "nope")])

  await step("create service", async () => {
    const s = await core.createNamespacedService({
      namespace,
      body: { metadata: { name: "p1", labels: { app: "session" } }, spec: { selector: { app: "session" }, ports: [{ name: "vnc", port: 5900 }] } }
    })
    return { kind: s.kind, type: s.spec?.type, targetPort: s.spec?.ports?.[0]?.targetPort, protocol: s.spec?.ports?.[0]?.protocol, hasClusterIP: (s.spec?.clusterIP ?? "") !== "" }
  })
  await step("create service again", async () => ({ kind: (await core.createNamespacedService({ namespace, body: { metadata: { name: "p1" }, spec: { ports: [{ port: 1 }] } } })).kind }))
  await step("delete service", async () => ({ kind: (await core.deleteNamespacedService({ name: "p1", namespace })).kind }))
  await step("create home claim", async () => {
    const c = await core.createNamespacedPersistentVolumeClaim({
      namespace,
      body: { metadata: { name: "home-alice" }, spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } } }
    })
    return { kind: c.kind, hasStorageClass: (c.spec?.storageClassName ?? "") !== "", volumeMode: c.spec?.volumeMode, finalizers: c.metadata?.finalizers }
  })
  await step("delete pod", async () => {
    const p = await core.deleteNamespacedPod({ name: "p1", namespace })
    return { kind: p.kind, terminating: p.metadata?.deletionTimestamp !== undefined }
  })
  await waitForPromise("p1 gone", async () => (await attempt(async () => ({ found: (await core.readNamespacedPod({ name: "p1", namespace })).kind }))).code === 404, { timeout: 60_000 })
  await step("delete missing pod", async () => ({ kind: (await core.deleteNamespacedPod({ name: "p1", namespace })).kind }))
  return out
}

let fake: Awaited<ReturnType<typeof startKubeTestServer>>
let desktops: Awaited<ReturnType<typeof startClusterDesktops>>
let fakeDesktop: Awaited<ReturnType<typeof startVnc>>
let realNamespace: string

beforeAll(async () => {
  realNamespace = await R.createNamespace("diff")
  desktops = await startClusterDesktops(R.cluster().adminKubeconfig, { namespace: realNamespace })
  fake = await startKubeTestServer({ namespaces: ["default", realNamespace], kubelet: { startDelayMs: 50 } })
  fakeDesktop = await startVnc({ name: "fake", log: () => {} })
})

afterAll(async () => {
  await desktops?.stop()
  await fake?.close()
  await fakeDesktop?.close()
})

describe("kube-testserver against the real API server", () => {
  it("gives the same transcript for the calls the agent makes", async () => {
    const realKc = new k8s.KubeConfig()
    realKc.loadFromFile(R.cluster().adminKubeconfig)
    realKc.setCurrentContext(realKc.getCurrentContext())
    const fakeKc = new k8s.KubeConfig()
    fakeKc.loadFromString(fake.kubeconfig)

    const [real, stand] = await Promise.all([
      scenario({
        kc: realKc,
        namespace: realNamespace,
        desktopFor: async (pod) => {
          await waitForPromise(`${pod}'s desktop`, () => desktops.get(realNamespace, pod) !== undefined)
        }
      }),
      scenario({
        kc: fakeKc,
        namespace: realNamespace,
        desktopFor: async (pod) => fake.registerPortForward(realNamespace, pod, 5900, { host: fakeDesktop.host, port: fakeDesktop.port })
      })
    ])
    // Step by step, so a difference names its step.
    for (let i = 0; i < Math.max(real.length, stand.length); i++) {
      expect(stand[i], `step ${i}: ${real[i]?.[0]}`).toEqual(real[i])
    }
    // And the transcript says what we think it says (it is not two identical failures).
    const byStep = new Map(real)
    expect(byStep.get("create pod again")).toMatchObject({ code: 409, reason: "AlreadyExists", name: "p1", kind: "pods" })
    expect(byStep.get("get missing pod")).toMatchObject({ code: 404, reason: "NotFound" })
    expect(byStep.get("create pod with a bad name")).toMatchObject({ code: 422, reason: "Invalid" })
    expect(byStep.get("list by an unsupported field selector")).toMatchObject({ code: 400, reason: "BadRequest" })
    expect(byStep.get("port-forward to a running pod")).toMatchObject({ banner: "RFB 003.008\n" })
  })
})
