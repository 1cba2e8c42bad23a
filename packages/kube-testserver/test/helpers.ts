// Test helpers: a server per test and the real client-node pointed at it.
import * as k8s from "@kubernetes/client-node"
import { afterEach } from "vitest"
import { type KubeTestServerHandle, type ServerOptions, start } from "../src/index.ts"

const open: Array<KubeTestServerHandle> = []

afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()))
})

export interface Setup {
  readonly server: KubeTestServerHandle
  readonly kc: k8s.KubeConfig
  readonly api: k8s.CoreV1Api
}

export const clientFor = (kubeconfig: string) => {
  const kc = new k8s.KubeConfig()
  kc.loadFromString(kubeconfig)
  return { kc, api: kc.makeApiClient(k8s.CoreV1Api), rbac: kc.makeApiClient(k8s.RbacAuthorizationV1Api) }
}

export const setup = async (options: ServerOptions = {}): Promise<Setup> => {
  const server = await start({ kubelet: { startDelayMs: 20 }, ...options })
  open.push(server)
  const { kc, api } = clientFor(server.kubeconfig)
  return { server, kc, api }
}

/** Awaits a rejected client call and returns the ApiException with its parsed Status body. */
export const apiError = async (p: Promise<unknown>): Promise<{ code: number; status: any; headers: Record<string, string> }> => {
  try {
    await p
  } catch (e) {
    const err = e as k8s.ApiException<unknown>
    if (typeof err.code !== "number") throw e
    return { code: err.code, status: typeof err.body === "string" ? JSON.parse(err.body) : err.body, headers: err.headers as Record<string, string> }
  }
  throw new Error("expected the call to fail")
}

export const pod = (name: string, extra: Record<string, any> = {}): k8s.V1Pod => ({
  metadata: { name, labels: { app: "vnc" }, ...(extra.metadata ?? {}) },
  spec: {
    containers: [{ name: "vnc", image: "streamspace/desktop:1.0", ports: [{ containerPort: 5900 }] }],
    ...(extra.spec ?? {})
  }
})
