// The balancer spreads connections round-robin over its backends, skips one that refuses, follows a change
// of backends (a rolling restart) and relays bytes both ways.
import { createServer, connect, type Server } from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { type RunningBalancer, startBalancer } from "../src/Balancer.ts"
import { freePort } from "../src/internal/process.ts"

const servers: Array<Server> = []
let balancer: RunningBalancer | undefined
afterEach(async () => {
  await balancer?.close()
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r))
})

/** A backend that answers every connection with its name, then echoes. */
const backend = async (name: string) => {
  const s = createServer((c) => {
    c.write(`${name}\n`)
    c.pipe(c)
  })
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()))
  servers.push(s)
  return { host: "127.0.0.1", port: (s.address() as { port: number }).port }
}

/** Connects through the balancer, sends `text`, returns what came back (first line is the backend's name). */
const exchange = (port: number, text: string) =>
  new Promise<string>((resolve) => {
    const c = connect(port, "127.0.0.1")
    let got = ""
    c.on("data", (d) => {
      got += d.toString()
      if (got.endsWith(text)) {
        c.destroy()
        resolve(got)
      }
    })
    c.on("error", () => resolve(got))
    c.on("close", () => resolve(got))
    c.write(text)
  })

describe("TCP balancer", () => {
  it("spreads connections round-robin, relays both ways, skips a refusing backend and follows a new set", async () => {
    const [a, b] = await Promise.all([backend("a"), backend("b")])
    const dead = { host: "127.0.0.1", port: await freePort() }
    balancer = await startBalancer([a, dead, b])
    const names = []
    for (let i = 0; i < 4; i++) names.push((await exchange(balancer.port, "ping")).split("\n")[0])
    expect(names.sort()).toEqual(["a", "a", "b", "b"])
    expect(await exchange(balancer.port, "hello")).toMatch(/^[ab]\nhello$/)

    const c = await backend("c")
    balancer.setBackends([c])
    expect((await exchange(balancer.port, "x")).split("\n")[0]).toBe("c")
    balancer.setBackends([dead])
    expect(await exchange(balancer.port, "x")).toBe("")
  })
})
