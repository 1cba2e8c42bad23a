// Three control-plane processes (`node src/main.ts`) on one real PostgreSQL, behind a TCP round-robin balancer,
// with protocol-level fake agents over real WebSockets that redial through the balancer. What an operator
// relies on when running several replicas: a request reaches an agent whichever replica it lands on, commands
// complete exactly once, a starting replica leaves the others' agents alone, a killed replica's agents come
// back on a survivor with nothing lost, and a replica cut off from PostgreSQL lets its agents go.
import { Effect, Exit, Layer, ManagedRuntime, Redacted, Scope } from "effect"
import type { SqlClient } from "effect/sql/SqlClient"
import { SqlClient as SqlClientTag } from "effect/sql/SqlClient"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { AgentId } from "@streamspace/protocol"
import * as Database from "../src/Database.ts"
import { hashToken } from "../src/internal/token.ts"
import { Store } from "../src/Store.ts"
import { type ClusterAgent, startClusterAgent } from "./support/clusterAgent.ts"
import { sign } from "./support/jwt.ts"
import { startPostgres } from "./support/postgres.ts"
import { type Cuttable, type Replica, type ReplicaSet, startProxy, startReplicas } from "./support/replicas.ts"

const scope = Effect.runSync(Scope.make())
let set: ReplicaSet
let pgPort: number
let runtime: ManagedRuntime.ManagedRuntime<SqlClient | Store, unknown>
let partitionProxy: Cuttable
const agents: Array<ClusterAgent> = []
/** Every agent started, stopped ones included (what each executed). */
const everyAgent: Array<ClusterAgent> = []
const credentials = new Map<string, string>()
let userToken: string
let adminToken: string

const sql = <A extends object>(text: string, params: ReadonlyArray<unknown> = []): Promise<ReadonlyArray<A>> =>
  runtime.runPromise(Effect.flatMap(SqlClientTag, (s: SqlClient) => Effect.map(s.unsafe(text, params), (rows) => rows as unknown as ReadonlyArray<A>)))

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Polls `check` (real time) until it returns a value; fails naming `what`. */
const until = async <A>(what: string, check: () => Promise<A | undefined | false>, timeoutMs = 30_000): Promise<A> => {
  const deadline = Date.now() + timeoutMs
  while (true) {
    const a = await check()
    if (a !== undefined && a !== false) return a
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(50)
  }
}

const api = async (base: string, method: string, path: string, token: string, body?: unknown) => {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })
  const text = await res.text()
  return { status: res.status, body: text === "" ? undefined : JSON.parse(text) }
}

/** The replica holding the agent's socket, by the presence table (live leases only). */
const holderOf = async (agentId: string): Promise<Replica | undefined> => {
  const rows = await sql<{ peer_url: string }>(
    `SELECT r.peer_url FROM agent_presence p JOIN control_plane_replicas r ON r.id = p.replica_id WHERE p.agent_id = $1 AND r.lease_expires_at > now()`,
    [agentId]
  )
  return rows.length === 0 ? undefined : set.replicas.find((r) => r.url === rows[0]!.peer_url)
}

/** Approved agents recorded before the replicas start, each with its credential. */
const seedAgents = (ids: ReadonlyArray<string>) =>
  runtime.runPromise(Effect.gen(function*() {
    const store = yield* Store
    for (const id of ids) {
      yield* store.agents.register({ id: id as AgentId, platform: "kubernetes", region: "eu-west", version: "0.1.0", capacity: { cpu: "1000", memory: "4000Gi", max_sessions: 100_000 } })
      const token = `credential-${id}-0123456789abcdef0123456789`
      yield* store.agents.approve(id, hashToken(token))
      credentials.set(id, token)
    }
  }))

const startAgent = (id: string) => {
  const agent = startClusterAgent({ url: set.balancer.url(), id, token: credentials.get(id)! })
  agents.push(agent)
  everyAgent.push(agent)
  return agent
}

const AGENT_IDS = Array.from({ length: 8 }, (_, i) => `ha-agent-${i}`)

beforeAll(async () => {
  const pg = await Effect.runPromise(Scope.provide(scope)(startPostgres))
  pgPort = pg.port
  const url = pg.createDatabase("replicas")
  runtime = ManagedRuntime.make(Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerPostgres({ url, maxConnections: 2 }))))
  await runtime.runPromise(Effect.void)
  await seedAgents(AGENT_IDS)
  // Replica 2 reaches PostgreSQL through a proxy the partition test cuts.
  partitionProxy = await startProxy({ host: "127.0.0.1", port: pgPort })
  const plain = Redacted.value(url)
  set = await startReplicas({
    count: 3,
    databaseUrl: (i) => (i === 2 ? plain.replace(`:${pgPort}/`, `:${partitionProxy.port}/`) : plain)
  })
  userToken = await sign({ sub: "ann", role: "user" })
  adminToken = await sign({ sub: "admin", role: "admin" })
}, 180_000)

afterAll(async () => {
  for (const a of agents) a.stop()
  await set?.close()
  await partitionProxy?.close()
  await runtime?.dispose()
  await Effect.runPromise(Scope.close(scope, Exit.void))
}, 60_000)

/** Starts the agent (through the balancer) until the replica holding it is `target`. */
const placeOn = async (id: string, target: Replica): Promise<ClusterAgent> => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const agent = startAgent(id)
    const holder = await until(`agent ${id} held`, async () => {
      const h = await holderOf(id)
      return h !== undefined && agent.connected() ? h : undefined
    })
    if (holder === target) return agent
    agent.stop()
    agents.splice(agents.indexOf(agent), 1)
    await until(`agent ${id} released`, async () => (await holderOf(id)) === undefined)
  }
  throw new Error(`agent ${id} never landed on replica ${target.index}`)
}

/** The running replica that leads the singleton `name` (its last word about it in this run is that it leads). */
const leaderOf = (name: string): Replica | undefined =>
  set.replicas.find((r) => {
    if (!r.running()) return false
    const out = r.thisRun()
    return out.lastIndexOf(`leader of ${name}"`) > Math.max(out.lastIndexOf(`no longer leader of ${name}"`), -1) &&
      !out.slice(out.lastIndexOf(`leader of ${name}"`)).includes(`no longer leader of ${name}"`)
  })

const stopAgents = async () => {
  for (const a of agents.splice(0)) a.stop()
  await until("every agent recorded offline", async () => (await sql(`SELECT 1 FROM agent_presence`)).length === 0)
}

describe("three control-plane replicas on one PostgreSQL", () => {
  it("an agent connected through the balancer gets a session created through another replica (woken by NOTIFY)", async () => {
    const agent = startAgent(AGENT_IDS[0]!)
    const holder = await until("the agent held by a replica", () => holderOf(agent.id))
    const other = set.replicas.find((r) => r !== holder)!
    const created = await api(other.url, "POST", "/sessions", userToken, { template: "demo" })
    expect(created.status).toBe(201)
    expect(created.body.agent_id).toBe(agent.id)
    const running = await until("the session running on the replica that created it", async () => {
      const s = await api(other.url, "GET", `/sessions/${created.body.id}`, userToken)
      return s.body.state === "running" ? s.body : undefined
    })
    expect(running.agent_id).toBe(agent.id)
    const creates = agent.executed.filter((c) => c.action === "create_session")
    expect(creates.map((c) => c.action === "create_session" && c.args.session_id)).toEqual([created.body.id])
    await stopAgents()
  }, 60_000)

  it("1,000 creates through the balancer for agents spread over the replicas: each command completes exactly once", async () => {
    const fleet = AGENT_IDS.slice(0, 6).map(startAgent)
    const holders = await until("every agent held", async () => {
      const hs = await Promise.all(fleet.map((a) => holderOf(a.id)))
      return hs.every((h) => h !== undefined) ? hs : undefined
    })
    expect(new Set(holders.map((h) => h!.index)).size).toBeGreaterThan(1)
    const ids: Array<string> = []
    const started = Date.now()
    let next = 0
    await Promise.all(Array.from({ length: 16 }, async () => {
      while (next < 1000) {
        next++
        const res = await api(set.balancer.url(), "POST", "/sessions", userToken, { template: "demo" })
        expect(res.status).toBe(201)
        ids.push(res.body.id)
      }
    }))
    expect(ids.length).toBe(1000)
    const commands = await until("every create command finished", async () => {
      const rows = await sql<{ id: string; state: string; session_id: string }>(
        `SELECT id, state, session_id FROM commands WHERE action = 'create_session' AND session_id = ANY($1)`,
        [ids]
      )
      return rows.length === 1000 && rows.every((r) => r.state === "completed" || r.state === "failed") ? rows : undefined
    }, 120_000)
    console.log(`1,000 creates over 3 replicas: all answered and completed in ${Date.now() - started} ms`)
    expect(commands.filter((c) => c.state !== "completed")).toEqual([])
    // Executed exactly once each, by the agent the command was for.
    const executed = fleet.flatMap((a) => a.executed.filter((c) => c.action === "create_session").map((c) => c.command_id as string))
    expect(executed.length).toBe(1000)
    expect(new Set(executed)).toEqual(new Set(commands.map((c) => c.id)))
    const sessions = await until("every session running", async () => {
      const rows = await sql<{ state: string }>(`SELECT state FROM sessions WHERE id = ANY($1)`, [ids])
      return rows.every((r) => r.state === "running") ? rows : undefined
    }, 60_000)
    expect(sessions.length).toBe(1000)
    await stopAgents()
  }, 240_000)

  it("a starting replica does not mark the agents held by the others offline", async () => {
    const agent = startAgent(AGENT_IDS[6]!)
    const holder = await until("the agent held", () => holderOf(agent.id))
    const restarted = set.replicas.find((r) => r !== holder && r.index !== 2)!
    await restarted.kill("SIGTERM")
    await restarted.start()
    const seen = await api(restarted.url, "GET", `/agents/${agent.id}`, adminToken)
    expect(seen.status).toBe(200)
    expect({ connected: seen.body.connected, status: seen.body.status }).toEqual({ connected: true, status: "online" })
    const [row] = await sql<{ status: string }>(`SELECT status FROM agents WHERE id = $1`, [agent.id])
    expect(row!.status).not.toBe("offline")
    expect((await holderOf(agent.id))?.index).toBe(holder.index)
    await stopAgents()
  }, 90_000)

  it("an administrator's drain through a replica without the agent's socket is made where the socket is", async () => {
    const agent = startAgent(AGENT_IDS[4]!)
    const holder = await until("the agent held", () => holderOf(agent.id))
    const [elsewhere, third] = set.replicas.filter((r) => r !== holder)
    const drained = await api(elsewhere!.url, "PATCH", `/agents/${agent.id}`, adminToken, { status: "offline" })
    expect({ status: drained.status, agent: drained.body.status }).toEqual({ status: 200, agent: "draining" })
    await until("the drain frame at the agent", async () => agent.drains.length > 0)
    expect(agent.drains).toEqual([true])
    const onHolder = await api(holder.url, "GET", `/agents/${agent.id}`, adminToken)
    expect(onHolder.body.status).toBe("draining")
    const refused = await api(third!.url, "POST", "/sessions", userToken, { template: "demo" })
    expect(refused.status).toBe(503)
    const undrained = await api(third!.url, "PATCH", `/agents/${agent.id}`, adminToken, { status: "online" })
    expect({ status: undrained.status, agent: undrained.body.status }).toEqual({ status: 200, agent: "online" })
    await until("the undrain frame at the agent", async () => agent.drains.length > 1)
    expect(agent.drains).toEqual([true, false])
    await stopAgents()
  }, 60_000)

  it("a replica partitioned from PostgreSQL stops claiming its agents: they move to a live replica", async () => {
    const cutOff = set.replicas[2]!
    const agent = await placeOn(AGENT_IDS[5]!, cutOff)
    partitionProxy.cut()
    const moved = await until("the agent held by a replica that reaches PostgreSQL", async () => {
      const h = await holderOf(agent.id)
      return h !== undefined && h !== cutOff && agent.connected() ? h : undefined
    }, 60_000)
    expect(moved).not.toBe(cutOff)
    // The cut-off replica is alive, and it let the agent go itself (before its lease could run out).
    expect(cutOff.running()).toBe(true)
    expect(agent.closes.some((c) => /lost its lease/.test(c.reason))).toBe(true)
    partitionProxy.heal()
    await set.waitForLog(cutOff, /lease regained/, 30_000)
    await stopAgents()
  }, 120_000)

  it("SIGKILL of the replica holding an agent during creates: nothing lost, the agent back on a survivor, the singleton moves", async () => {
    const leader = await until("a leader of agent-presence", async () => leaderOf("agent-presence"))
    const agent = await placeOn(AGENT_IDS[7]!, leader)
    const accepted: Array<string> = []
    let failed = 0
    let attempts = 0
    await Promise.all(Array.from({ length: 3 }, async () => {
      while (attempts < 150) {
        attempts++
        if (attempts === 40) await leader.kill("SIGKILL")
        try {
          const res = await api(set.balancer.url(), "POST", "/sessions", userToken, { template: "demo" })
          if (res.status === 201) accepted.push(res.body.id)
          else failed++
        } catch {
          failed++ // the connection was to the killed replica
        }
      }
    }))
    console.log(`creates around a SIGKILL: ${accepted.length} accepted, ${failed} failed (in flight on the killed replica)`)
    expect(accepted.length).toBeGreaterThan(100)
    const survivor = await until("the agent back on a survivor", async () => {
      const h = await holderOf(agent.id)
      return h !== undefined && h !== leader && agent.connected() ? h : undefined
    }, 60_000)
    expect(survivor.running()).toBe(true)
    const commands = await until("every accepted create completed", async () => {
      const rows = await sql<{ session_id: string; state: string }>(
        `SELECT session_id, state FROM commands WHERE action = 'create_session' AND session_id = ANY($1)`,
        [accepted]
      )
      return rows.length === accepted.length && rows.every((r) => r.state === "completed") ? rows : undefined
    }, 60_000)
    expect(commands.length).toBe(accepted.length)
    const created = everyAgent.flatMap((a) => a.executed.flatMap((c) => (c.action === "create_session" ? [c.args.session_id as string] : [])))
    expect(created.length).toBe(new Set(created).size) // none executed twice
    expect(accepted.filter((id) => !created.includes(id))).toEqual([])
    await until("every accepted session running", async () => {
      const rows = await sql<{ state: string }>(`SELECT state FROM sessions WHERE id = ANY($1)`, [accepted])
      return rows.every((r) => r.state === "running")
    }, 60_000)
    const next = await until("a survivor leading agent-presence", async () => leaderOf("agent-presence"), 30_000)
    expect(next).not.toBe(leader)
    await leader.start()
    await stopAgents()
  }, 240_000)
})
