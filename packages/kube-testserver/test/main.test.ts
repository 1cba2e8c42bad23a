import * as k8s from "@kubernetes/client-node"
import { spawn } from "node:child_process"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"
import { apiError } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

const mainTs = fileURLToPath(new URL("../src/main.ts", import.meta.url))

describe("CLI", () => {
  it("starts, writes kubeconfigs (admin and a bound service account), and stops on SIGTERM", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kube-testserver-"))
    const out = join(dir, "kubeconfig")
    const rules = join(dir, "rules.yaml")
    writeFileSync(rules, `- apiGroups: [""]\n  resources: ["pods"]\n  verbs: ["list"]\n`)
    const child = spawn(process.execPath, [mainTs, "--port", "0", "--kubeconfig-out", out, "--rbac", rules, "--service-account", "streamspace/agent", "--start-delay-ms", "0"], { stdio: ["ignore", "pipe", "pipe"] })
    let stderr = ""
    child.stderr.on("data", (d) => { stderr += d.toString() })
    try {
      // Cold start of a second Node process (effect + client-node imports) is slow on a loaded machine.
      await waitForPromise(`kubeconfig (stderr: ${stderr})`, () => existsSync(out), { timeout: 80_000 })
      const kc = new k8s.KubeConfig()
      kc.loadFromString(readFileSync(out, "utf8"))
      const api = kc.makeApiClient(k8s.CoreV1Api)
      const names = await waitForPromise("the namespace list", async () => (await api.listNamespace()).items.map((n) => n.metadata?.name))
      expect(names).toContain("streamspace")
      const sa = new k8s.KubeConfig()
      sa.loadFromFile(`${out}.agent`)
      const saApi = sa.makeApiClient(k8s.CoreV1Api)
      expect((await saApi.listNamespacedPod({ namespace: "streamspace" })).items).toEqual([])
      expect((await apiError(saApi.listNamespacedService({ namespace: "streamspace" }))).code).toBe(403)
      expect(readFileSync(`${out}.agent.token`, "utf8")).not.toMatch(/\n$/)
    } finally {
      const exited = new Promise((r) => child.on("exit", r))
      child.kill("SIGTERM")
      await exited
      rmSync(dir, { recursive: true, force: true })
    }
  }, 100_000)
})
