// The HA test bed of the issue-15 benchmarks: a real PostgreSQL (Debian's, through the control-plane test
// support's startPostgres), N control-plane replicas on it as separate `node src/main.ts` processes behind the
// testbed's TCP round-robin balancer (the test support's startReplicas), and a psql helper to read which replica
// holds which agent (agent_presence) as the replicas themselves record it.
import { Effect, Redacted } from "effect"
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync } from "node:fs"
import { join } from "node:path"
import { startPostgres } from "../../packages/control-plane/test/support/postgres.ts"
import { type ReplicaSet, startReplicas } from "../../packages/control-plane/test/support/replicas.ts"
import { type ApiTarget, apiTarget, BOOTSTRAP_TOKEN, JWT_SECRET, tmp } from "./system.ts"

export const CLUSTER_SECRET = "bench-cluster-secret-0123456789abcdef0123"

/** Every replica's environment: shared secrets, as an operator sets them; production lease and heartbeat. */
export const HA_ENV: Record<string, string> = {
  JWT_SECRET,
  AGENT_BOOTSTRAP_TOKEN: BOOTSTRAP_TOKEN,
  CLUSTER_SECRET,
  LOG_LEVEL: "warn",
  HEARTBEAT_INTERVAL: "5s",
  REPLICA_LEASE: "15s",
  MAX_VIEWERS_PER_SESSION: "0",
  MAX_VIEWERS_PER_USER: "0"
}

export interface Cluster {
  readonly set: ReplicaSet
  /** One API target per replica (direct), and the balancer's. */
  readonly replicas: ReadonlyArray<ApiTarget>
  readonly lb: ApiTarget
  /** Runs SQL against the replicas' database; rows of tab-separated fields. */
  readonly sql: (query: string) => Array<Array<string>>
  /** Which replica (index) each agent's socket is on, from agent_presence. */
  readonly holders: () => Map<string, number>
}

const psqlBin = (): string => {
  const root = "/usr/lib/postgresql"
  const v = existsSync(root) ? readdirSync(root).filter((d) => existsSync(join(root, d, "bin", "psql"))).sort((a, b) => Number(b) - Number(a)) : []
  if (v.length === 0) throw new Error("psql not found under /usr/lib/postgresql/*/bin (Debian: apt-get install -y postgresql)")
  return join(root, v[0]!, "bin", "psql")
}

const step = (what: string) => console.log(`  [${new Date().toISOString().slice(11, 19)}] ${what}`)

/** Starts PostgreSQL and `count` replicas (plus the balancer), runs `body`, and stops everything. */
export const withCluster = <T>(count: number, body: (c: Cluster) => Promise<T>, env: Record<string, string> = {}): Promise<T> =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    step("starting PostgreSQL")
    const pg = yield* startPostgres
    const db = "bench"
    const url = Redacted.value(pg.createDatabase(db))
    step(`starting ${count} control-plane replicas on it`)
    const set = yield* Effect.acquireRelease(
      Effect.tryPromise({ try: () => startReplicas({ count, databaseUrl: () => url, env: { ...HA_ENV, DATA_DIR: tmp("ha"), ...env } }), catch: (e) => e as Error }),
      (s) => Effect.promise(() => s.close())
    )
    const bin = psqlBin()
    const sql = (query: string) =>
      execFileSync(bin, ["-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", db, "-At", "-F", "\t", "-c", query], { encoding: "utf8" })
        .split("\n").filter((l) => l.length > 0).map((l) => l.split("\t"))
    const byPort = new Map(set.replicas.map((r) => [String(r.port), r.index]))
    const holders = () => {
      const rows = sql("SELECT p.agent_id, r.peer_url FROM agent_presence p JOIN control_plane_replicas r ON r.id = p.replica_id WHERE r.lease_expires_at > now()")
      return new Map(rows.map(([agent, peer]) => [agent!, byPort.get(/:(\d+)\/?$/.exec(peer!)?.[1] ?? "") ?? -1]))
    }
    const cluster: Cluster = {
      set,
      replicas: set.replicas.map((r) => apiTarget(r.url)),
      lb: apiTarget(set.balancer.url("http").replace(/\/$/, "")),
      sql,
      holders
    }
    step(`replicas up on ports ${set.replicas.map((r) => r.port).join(", ")}, balancer on ${set.balancer.port}`)
    return yield* Effect.tryPromise({
      try: () => body(cluster),
      // A replica that died says why in its output: put the start of each one's last run in the error.
      catch: (e) => new Error(`${(e as Error).message}\n${set.replicas.map((r) => `replica ${r.index}${r.running() ? "" : " (exited)"}: ${r.thisRun().slice(0, 800)}`).join("\n")}`)
    })
  })))
