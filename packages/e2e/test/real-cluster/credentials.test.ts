// How the agent authenticates to a real API server, the ways a cluster gives it credentials:
// - in a pod: a bound service-account token the kubelet rotates; the old one stops working (its bound object
//   is deleted) and the agent carries on with the new file, without a restart;
// - outside: a kubeconfig whose user names a `tokenFile` (which @kubernetes/client-node ignores on its own),
//   and an exec credential plugin (what cloud CLIs install).
import { waitForPromise } from "@streamspace/testbed"
import { chmodSync, readFileSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as R from "./support.ts"

let cp: R.ControlPlane
let agent: R.DeployedAgent

beforeAll(async () => {
  cp = await R.startControlPlane("credentials")
  agent = await R.deployAgentWithChart(cp, "creds", { values: ["agent.heartbeatInterval=2s"] })
  const t = await cp.admin.post("/templates", { name: "desktop", image: "streamspace/desktop:1", vnc_port: 5900 })
  expect(t.status).toBe(201)
})

afterAll(async () => {
  await agent?.stop()
  await cp?.stop()
})

/** A session's whole life: proof that every kind of call (create, watch, delete) is authorised. */
const sessionLife = async (user: string) => {
  const client = cp.as(user)
  const r = await client.post("/sessions", { template: "desktop" })
  expect(r.status, JSON.stringify(r.body)).toBe(201)
  await R.waitSession(client, r.body.id, ["running"])
  await client.del(`/sessions/${r.body.id}`)
  await R.waitSession(client, r.body.id, ["terminated"])
}

/** The agent's credential moved from its Secret to a file: what running it outside the cluster needs. */
const credentialFile = async (dir: string) => {
  const secret = await R.getJson(["-n", agent.namespace, "secret", agent.env.AGENT_CREDENTIAL_SECRET!])
  const file = path.join(dir, "credential")
  writeFileSync(file, Buffer.from(secret.data.token, "base64"), { mode: 0o600 })
  return file
}

/** A token bound to a new Secret: deleting the Secret revokes the token. */
const boundToken = async (name: string) => {
  await R.kubectlOk(["-n", agent.agentNamespace, "create", "secret", "generic", name])
  return R.serviceAccountToken(agent.agentNamespace, "agent", name)
}

describe("agent credentials on a real API server", () => {
  it("in a pod: a rotated service-account token is used as soon as the file changes, the revoked one never again", async () => {
    await agent.stop()
    writeFileSync(path.join(agent.saDir, "token"), await boundToken("token-one"))
    await agent.start()
    await R.waitOnline(cp, agent.id)
    await sessionLife("before-rotation")

    // The kubelet writes the new token, then the old one dies with its bound object.
    const old = R.writeKubeconfig(R.tempDir("old-"), { token: readFileSync(path.join(agent.saDir, "token"), "utf8") }, agent.namespace)
    writeFileSync(path.join(agent.saDir, "token"), await boundToken("token-two"))
    await R.kubectlOk(["-n", agent.agentNamespace, "delete", "secret", "token-one"])
    await waitForPromise("the old token refused", async () => (await R.kubectl(["get", "pods"], { kubeconfig: old })).stderr.includes("Unauthorized"))
    await sessionLife("after-rotation")
    // Still the same process: no restart was needed.
    expect(agent.process().proc.child.exitCode).toBeNull()
    expect((await cp.admin.get(`/agents/${agent.id}`)).body.status).toBe("online")
  })

  it("outside a cluster: a kubeconfig user with tokenFile authenticates, and a replaced file is used without a restart", async () => {
    await agent.stop()
    const dir = R.tempDir("tokenfile-")
    const tokenFile = path.join(dir, "token")
    writeFileSync(tokenFile, await boundToken("file-one"))
    const kubeconfig = R.writeKubeconfig(dir, { tokenFile }, agent.namespace)
    await agent.start({ KUBECONFIG: kubeconfig, AGENT_CREDENTIAL_FILE: await credentialFile(dir) })
    await R.waitOnline(cp, agent.id)
    await sessionLife("tokenfile-user")

    writeFileSync(tokenFile, await boundToken("file-two"))
    await R.kubectlOk(["-n", agent.agentNamespace, "delete", "secret", "file-one"])
    await sessionLife("tokenfile-rotated")
  })

  it("outside a cluster: an exec credential plugin's token is used", async () => {
    await agent.stop()
    const dir = R.tempDir("exec-")
    const token = await R.serviceAccountToken(agent.agentNamespace, "agent")
    const plugin = path.join(dir, "credential-plugin.sh")
    writeFileSync(plugin, `#!/bin/sh\necho '${JSON.stringify({
      apiVersion: "client.authentication.k8s.io/v1",
      kind: "ExecCredential",
      status: { token, expirationTimestamp: new Date(Date.now() + 3600_000).toISOString() }
    })}'\n`)
    chmodSync(plugin, 0o755)
    const kubeconfig = R.writeKubeconfig(dir, { exec: { apiVersion: "client.authentication.k8s.io/v1", command: plugin, interactiveMode: "Never" } }, agent.namespace)
    await agent.start({ KUBECONFIG: kubeconfig, AGENT_CREDENTIAL_FILE: await credentialFile(dir) })
    await R.waitOnline(cp, agent.id)
    await sessionLife("exec-user")
  })
})
