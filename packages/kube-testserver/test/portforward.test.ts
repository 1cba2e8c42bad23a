// `as any` here: client-node's PortForward is typed as returning a union; the test needs the WebSocket it really returns.
import * as k8s from "@kubernetes/client-node"
import * as net from "node:net"
import { PassThrough } from "node:stream"
import { afterEach, describe, expect, it } from "vitest"
import { clientFor, pod, setup } from "./helpers.ts"
import { waitForPromise } from "@streamspace/testbed"

const targets: Array<net.Server> = []
afterEach(async () => {
  await Promise.all(targets.splice(0).map((s) => new Promise((r) => s.close(r))))
})

/** A server-speaks-first TCP target (like RFB): sends a banner, then echoes upper-cased. */
const rfbLike = async () => {
  const server = net.createServer((s) => {
    s.write("RFB 003.008\n")
    s.on("data", (d) => {
      if (d.toString() === "quit") s.end()
      else s.write(d.toString().toUpperCase())
    })
    s.on("error", () => {})
  })
  targets.push(server)
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r))
  return { host: "127.0.0.1", port: (server.address() as net.AddressInfo).port }
}

const running = async (name = "vnc-1", opts: Parameters<typeof setup>[0] = {}) => {
  const s = await setup({ kubelet: { startDelayMs: 0 }, ...opts })
  await s.api.createNamespacedPod({ namespace: "streamspace", body: pod(name) })
  await waitForPromise(`pod ${name} Running`, () => s.server.get("pods", "streamspace", name)?.status.phase === "Running")
  return s
}

const streams = () => {
  const out = new PassThrough()
  const err = new PassThrough()
  const input = new PassThrough()
  let outText = ""
  let errText = ""
  out.on("data", (d: Buffer) => { outText += d.toString() })
  err.on("data", (d: Buffer) => { errText += d.toString() })
  return { out, err, input, text: () => outText, errors: () => errText }
}

const rejection = async (p: Promise<unknown>) => {
  try {
    await p
  } catch (e) {
    return String((e as { message?: string }).message ?? e)
  }
  throw new Error("expected portForward to reject")
}

describe("port-forward (v4.channel.k8s.io)", () => {
  it("negotiates v4, sends the port preambles, and relays bytes both ways without eating the banner", async () => {
    const { server, kc } = await running()
    server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
    const s = streams()
    const ws = await new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], s.out, s.err, s.input) as any
    expect(ws.protocol).toBe("v4.channel.k8s.io")
    await waitForPromise("the greeting", () => s.text() === "RFB 003.008\n")
    s.input.write("hello")
    await waitForPromise("the echo", () => s.text() === "RFB 003.008\nHELLO")
    expect(s.errors()).toBe("")
    ws.close()
  })

  it("raw frames: the first message on channels 0 and 1 is the port as uint16 little-endian", async () => {
    const { server } = await running()
    server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
    const { WebSocket } = await import("ws")
    const ws = new WebSocket(`${server.url.replace("http", "ws")}/api/v1/namespaces/streamspace/pods/vnc-1/portforward?ports=5900`, ["v5.channel.k8s.io", "v4.channel.k8s.io"], { headers: { authorization: `Bearer ${server.adminToken}` } })
    const frames: Array<Buffer> = []
    ws.on("message", (d: Buffer) => frames.push(d))
    await waitForPromise("three frames", () => frames.length >= 3)
    expect(ws.protocol).toBe("v4.channel.k8s.io")
    expect([...frames[0]!]).toEqual([0, 0x0c, 0x17])
    expect([...frames[1]!]).toEqual([1, 0x0c, 0x17])
    expect(frames[2]![0]).toBe(0)
    expect(frames[2]!.subarray(1).toString()).toBe("RFB 003.008\n")
    ws.close()
  })

  it("closes the WebSocket when the pod side ends the connection", async () => {
    const { server, kc } = await running()
    server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
    const s = streams()
    const ws = await new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], s.out, s.err, s.input) as any
    let closed: number | undefined
    ws.on("close", (code: number) => { closed = code })
    await waitForPromise("an error text", () => s.text().length > 0)
    s.input.write("quit")
    await waitForPromise("closed", () => closed)
    expect(closed).toBe(1000)
  })

  it("portForwardUpstreamClose \"onWrite\": a pod side that ends is silent until the client writes, then broken pipe and close 1000 (the real API server)", async () => {
    const { server, kc } = await running("vnc-1", { portForwardUpstreamClose: "onWrite" })
    server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
    const s = streams()
    const ws = await new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], s.out, s.err, s.input) as any
    let closed: number | undefined
    ws.on("close", (code: number) => { closed = code })
    await waitForPromise("the greeting", () => s.text() === "RFB 003.008\n")
    s.input.write("quit")
    // The target has hung up; the stream stays open and says nothing...
    await new Promise((r) => setTimeout(r, 300))
    expect(closed).toBeUndefined()
    expect(s.errors()).toBe("")
    // ...until the next write.
    s.input.write("anyone?")
    await waitForPromise("closed", () => closed)
    expect(closed).toBe(1000)
    expect(s.errors()).toMatch(/^error forwarding port 5900 to pod [0-9a-f-]+, uid : write tcp4 .*: write: broken pipe$/)
  })

  it("with nothing listening, writes the kubelet's error on the error channel and closes", async () => {
    const { server, kc } = await running()
    const s = streams()
    const ws = await new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], s.out, s.err, s.input) as any
    let closed: number | undefined
    ws.on("close", (code: number) => { closed = code })
    await waitForPromise("closed", () => closed)
    expect(closed).toBe(1000)
    const uid = server.get("pods", "streamspace", "vnc-1")!.metadata.uid
    expect(s.errors()).toBe(`error forwarding port 5900 to pod ${uid}, uid : dial tcp4 127.0.0.1:5900: connect: connection refused`)
    expect(s.text()).toBe("")
  })

  it("a registered target that refuses gives the same error shape", async () => {
    const { server, kc } = await running()
    const t = await rfbLike()
    await new Promise((r) => targets.pop()!.close(r))
    server.registerPortForward("streamspace", "vnc-1", 5900, t)
    const s = streams()
    const ws = await new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], s.out, s.err, s.input) as any
    await waitForPromise("the WebSocket to close", () => ws.readyState === 3)
    expect(s.errors()).toMatch(/^error forwarding port 5900 to pod [0-9a-f-]+, uid : dial tcp4 127\.0\.0\.1:\d+: connect: connection refused$/)
  })

  it("pre-upgrade failures are plain HTTP statuses: 404 missing pod, 400 unscheduled pod, 401", async () => {
    const { server, kc } = await setup({ kubelet: { paused: true } })
    const pf = new k8s.PortForward(kc)
    expect(await rejection(pf.portForward("streamspace", "nope", [5900], new PassThrough(), null, new PassThrough()))).toBe("Unexpected server response: 404")
    server.put("pods", { metadata: { name: "pending", namespace: "streamspace" }, spec: { containers: [{ name: "c", image: "i" }] }, status: { phase: "Pending" } })
    expect(await rejection(pf.portForward("streamspace", "pending", [5900], new PassThrough(), null, new PassThrough()))).toBe("Unexpected server response: 400")
    const bad = new k8s.PortForward(clientFor(server.kubeconfigFor("wrong")).kc)
    expect(await rejection(bad.portForward("streamspace", "pending", [5900], new PassThrough(), null, new PassThrough()))).toBe("Unexpected server response: 401")
  })

  it("RBAC: pods/portforward needs get and create (create check can be switched off for pre-1.35)", async () => {
    const rules = (verbs: string) => `- { apiGroups: [""], resources: ["pods/portforward"], verbs: [${verbs}] }`
    for (const [verbs, createCheck, ok] of [["get", true, false], ["get, create", true, true], ["get", false, true], ["create", false, false]] as const) {
      const { server } = await running("vnc-1", { portForwardCreateCheck: createCheck })
      server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
      server.loadRbac(rules(verbs), { namespace: "streamspace", bindServiceAccount: { namespace: "streamspace", name: "agent" } })
      const { kc } = clientFor(server.kubeconfigFor(server.addServiceAccount("streamspace", "agent")))
      const p = new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], new PassThrough(), null, new PassThrough())
      if (ok) ((await p) as any).close()
      else expect(await rejection(p)).toBe("Unexpected server response: 403")
      await server.close()
    }
  })

  it("a v5-only client is refused (the kubelet speaks v4)", async () => {
    const { server } = await running()
    const { WebSocket } = await import("ws")
    const ws = new WebSocket(`${server.url.replace("http", "ws")}/api/v1/namespaces/streamspace/pods/vnc-1/portforward?ports=5900`, ["v5.channel.k8s.io"], { headers: { authorization: `Bearer ${server.adminToken}` } })
    const msg = await new Promise<string>((resolve) => ws.on("error", (e) => resolve(e.message)))
    expect(msg).toBe("Unexpected server response: 403")
  })

  it("one WebSocket per TCP connection through a local listener (the agent's pattern)", async () => {
    const { server, kc } = await running()
    server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
    const pf = new k8s.PortForward(kc)
    const local = net.createServer((sock) => {
      void pf.portForward("streamspace", "vnc-1", [5900], sock, null, sock).then((ws: any) => ws.on("close", () => sock.destroy()))
    })
    targets.push(local)
    await new Promise<void>((r) => local.listen(0, "127.0.0.1", r))
    const port = (local.address() as net.AddressInfo).port
    const talk = async (word: string) => {
      const c = net.connect(port, "127.0.0.1")
      let got = ""
      c.on("data", (d) => { got += d.toString() })
      await waitForPromise("the greeting", () => got.startsWith("RFB 003.008\n"))
      c.write(word)
      await waitForPromise("the echo", () => got.endsWith(word.toUpperCase()))
      c.destroy()
      return got
    }
    const [a, b] = await Promise.all([talk("one"), talk("two")])
    expect(a).toBe("RFB 003.008\nONE")
    expect(b).toBe("RFB 003.008\nTWO")
  })

  it("open port-forwards end when the pod is deleted", async () => {
    const { server, kc, api } = await running()
    server.registerPortForward("streamspace", "vnc-1", 5900, await rfbLike())
    const s = streams()
    const ws = await new k8s.PortForward(kc).portForward("streamspace", "vnc-1", [5900], s.out, s.err, s.input) as any
    let closed: number | undefined
    ws.on("close", (code: number) => { closed = code })
    await waitForPromise("an error text", () => s.text().length > 0)
    await api.deleteNamespacedPod({ name: "vnc-1", namespace: "streamspace", gracePeriodSeconds: 0 })
    await waitForPromise("closed", () => closed)
    expect(closed).toBe(1000)
  })
})
