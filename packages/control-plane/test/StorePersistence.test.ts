// The embedded database across restarts: Store.layer from the environment (DATA_DIR,
// DATABASE_IN_MEMORY, DATABASE_URL), closed and reopened on the same directory.
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import { SqlClient } from "effect/sql/SqlClient"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import type { AgentId, CommandId, SessionId, TemplateName, UserId } from "@streamspace/protocol"
import * as Database from "../src/Database.ts"
import { Store } from "../src/Store.ts"
import { MIGRATIONS } from "../src/internal/store/migrations.ts"

const provider = (env: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromEnv({ env }))
const withEnv = (env: Record<string, string>) => Store.layer.pipe(Layer.provide(provider(env)))
/** Store.layer plus the SqlClient under it, to look at the migrations table. */
const withEnvAndSql = (env: Record<string, string>) =>
  Store.layerNoDeps.pipe(Layer.provideMerge(Database.layerFromEnv), Layer.provide(provider(env)))

const capacity = { cpu: "4", memory: "8Gi", max_sessions: 5 }
const spec = { user_id: "ada" as UserId, template: "firefox" as TemplateName, image: "ff:1", persistent_home: false, vnc_port: 5900 }
const create = {
  command_id: "c1" as CommandId,
  deadline: new Date(Date.now() + 60_000).toISOString(),
  action: "create_session" as const,
  args: { session_id: "s1" as SessionId, spec }
}

/** Every path under `dir` whose mode lets anyone but the owner in, with its mode. */
const looseModes = (dir: string): Array<string> => {
  const out: Array<string> = []
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      const mode = fs.lstatSync(p).mode & 0o777
      if (e.isDirectory()) {
        if (mode !== 0o700) out.push(`${p} ${mode.toString(8)}`)
        walk(p)
      } else if (e.isFile() && mode !== 0o600) out.push(`${p} ${mode.toString(8)}`)
    }
  }
  walk(dir)
  return out
}

describe("DATA_DIR permissions", () => {
  it.live("a new DATA_DIR is 0700 and the database files in it 0600, even under a permissive umask; an existing open one is tightened", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-perm-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const previous = process.umask(0) // what a container often runs with: PGlite would write 0666 files
      yield* Effect.addFinalizer(() => Effect.sync(() => process.umask(previous)))
      const dataDir = path.join(dir, "data")
      yield* Effect.gen(function*() {
        const store = yield* Store
        yield* store.users.insert({ id: "ada" as UserId, name: "Ada", role: "admin" })
        // While open the directory already keeps everyone else out.
        assert.strictEqual(fs.statSync(dataDir).mode & 0o777, 0o700)
      }).pipe(Effect.provide(withEnv({ DATA_DIR: dataDir })))
      assert.strictEqual(fs.statSync(dataDir).mode & 0o777, 0o700)
      assert.isTrue(fs.existsSync(path.join(dataDir, "PG_VERSION")))
      assert.deepStrictEqual(looseModes(dataDir), [])

      // An existing directory that others can read is tightened when the control plane opens it.
      fs.chmodSync(dataDir, 0o755)
      fs.chmodSync(path.join(dataDir, "PG_VERSION"), 0o666)
      yield* Effect.gen(function*() {
        assert.strictEqual(fs.statSync(dataDir).mode & 0o777, 0o700)
        assert.strictEqual(fs.statSync(path.join(dataDir, "PG_VERSION")).mode & 0o777, 0o600)
        assert.strictEqual((yield* (yield* Store).users.get("ada")).name, "Ada")
      }).pipe(Effect.provide(withEnv({ DATA_DIR: dataDir })))
      assert.deepStrictEqual(looseModes(dataDir), [])
    }), { timeout: 120_000 })
})

describe("Store persistence (PGlite in DATA_DIR)", () => {
  it.live("keeps every table across close and reopen of the same DATA_DIR, and migrates only once", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-store-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const dataDir = path.join(dir, "data") // does not exist yet: created on first start
      const layer = withEnv({ DATA_DIR: dataDir })

      const written = yield* Effect.gen(function*() {
        const store = yield* Store
        yield* store.users.insert({ id: "ada" as UserId, name: "Ada", role: "admin" })
        yield* store.templates.insert({ name: "firefox" as TemplateName, displayName: "Firefox", image: "ff:1", resources: { cpu: "1", memory: "1Gi" }, env: { A: "1" }, vncPort: 5900 })
        yield* store.agents.register({ id: "agent-1" as AgentId, platform: "kubernetes", region: "eu", version: "1", capacity })
        yield* store.agents.approve("agent-1", "hash")
        const session = yield* store.sessions.insert({ id: "s1" as SessionId, userId: "ada" as UserId, template: "firefox" as TemplateName, agentId: "agent-1" as AgentId, spec, region: undefined })
        yield* store.sessions.transition("s1", "running", { reason: "PodReady" })
        const cmd = yield* store.commands.insert({ agentId: "agent-1" as AgentId, sessionId: "s1" as SessionId, command: create })
        yield* store.commands.transition("c1", "sent")
        // 50 concurrent writes on the file-backed database too
        yield* Effect.forEach(
          Array.from({ length: 50 }, (_, i) => i),
          (i) => store.users.insert({ id: `u${i}` as UserId, name: `U${i}`, role: "user" }),
          { concurrency: "unbounded" }
        )
        return { session, cmd }
      }).pipe(Effect.provide(layer))
      assert.isTrue(fs.existsSync(path.join(dataDir, "PG_VERSION")))

      yield* Effect.gen(function*() {
        const store = yield* Store
        assert.strictEqual((yield* store.users.get("ada")).role, "admin")
        assert.strictEqual((yield* store.users.list()).length, 51)
        assert.deepStrictEqual((yield* store.templates.get("firefox")).env, { A: "1" })
        const agent = yield* store.agents.get("agent-1")
        assert.deepStrictEqual([agent.enrollment, agent.credentialHash, agent.capacity], ["approved", "hash", capacity])
        const session = yield* store.sessions.get("s1")
        assert.deepStrictEqual([session.state, session.reason, session.spec, session.createCommandId], ["running", "PodReady", spec, "c1"])
        assert.strictEqual(session.createdAt.getTime(), written.session.createdAt.getTime())
        assert.deepStrictEqual((yield* store.sessions.history("s1")).map((h) => h.state), ["pending", "running"])
        const unfinished = yield* store.commands.listUnfinished("agent-1")
        assert.deepStrictEqual(unfinished.map((c) => [c.id, c.state, c.attempts]), [["c1", "sent", 1]])
        assert.deepStrictEqual(unfinished[0]!.command, create)
        assert.strictEqual(unfinished[0]!.deadline.getTime(), written.cmd.deadline.getTime())
        const sql = yield* SqlClient
        const recorded = yield* sql<{ n: number }>`SELECT count(*)::int AS n FROM effect_sql_migrations`
        assert.strictEqual(recorded[0]!.n, MIGRATIONS.length)
        assert.strictEqual((yield* store.templates.list()).filter((t) => t.name === "demo").length, 1)
        // and it still takes writes
        assert.isTrue((yield* store.commands.transition("c1", "completed", { result: { action: "create_session", session: { session_id: "s1" as SessionId, phase: "running", observed_at: "2026-01-01T00:00:00.000Z" } } })).changed)
      }).pipe(Effect.provide(withEnvAndSql({ DATA_DIR: dataDir })))
    }), 180_000)

  it.live("a DATA_DIR with other files but no cluster (the quick start's own, a volume's lost+found) gets a new cluster beside them; 16MB shared buffers", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-store-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      fs.mkdirSync(path.join(dir, "quickstart"), { mode: 0o700 })
      fs.writeFileSync(path.join(dir, "quickstart", "jwt-secret"), "kept", { mode: 0o600 })
      yield* Effect.gen(function*() {
        yield* (yield* Store).users.insert({ id: "ada" as UserId, name: "Ada", role: "admin" })
        const sql = yield* SqlClient
        assert.strictEqual((yield* sql<{ shared_buffers: string }>`SHOW shared_buffers`)[0]!.shared_buffers, "16MB")
      }).pipe(Effect.provide(withEnvAndSql({ DATA_DIR: dir })))
      assert.isTrue(fs.existsSync(path.join(dir, "PG_VERSION")))
      assert.strictEqual(fs.readFileSync(path.join(dir, "quickstart", "jwt-secret"), "utf8"), "kept")
      assert.strictEqual((yield* Store.use((s) => s.users.get("ada")).pipe(Effect.provide(withEnv({ DATA_DIR: dir })))).name, "Ada")
    }), 120_000)

  it.live("DATABASE_IN_MEMORY=true keeps nothing on disk and nothing across restarts", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-store-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const layer = withEnv({ DATA_DIR: dir, DATABASE_IN_MEMORY: "true" })
      yield* Store.use((s) => s.users.insert({ id: "ada" as UserId, name: "Ada", role: "user" })).pipe(Effect.provide(layer))
      assert.deepStrictEqual(fs.readdirSync(dir), [])
      const users = yield* Store.use((s) => s.users.list()).pipe(Effect.provide(layer))
      assert.deepStrictEqual(users, [])
    }), 120_000)
})

describe("Store on an unreachable DATABASE_URL", () => {
  it.live("fails to start with a Database error that names DATABASE_URL and hides the password", () =>
    Effect.gen(function*() {
      const layer = withEnv({ DATABASE_URL: "postgres://u:hunter2@127.0.0.1:1/nothing" })
      const error = yield* Effect.flip(Store.use((s) => s.users.list()).pipe(Effect.provide(layer)))
      assert.strictEqual(error._tag, "StoreError")
      assert.strictEqual(error._tag === "StoreError" && error.reason._tag, "Database")
      assert.include(error.message, "DATABASE_URL")
      assert.notInclude(error.message, "hunter2")
    }), 60_000)
})

describe("Database settings", () => {
  const parse = (env: Record<string, string>) => Database.readDatabaseSettings.pipe(Effect.provide(provider(env)))

  it.effect("defaults: ./data, not in memory, no DATABASE_URL", () =>
    Effect.gen(function*() {
      const s = yield* parse({})
      assert.deepStrictEqual([s.dataDir, s.inMemory, s.databaseUrl._tag], ["./data", false, "None"])
    }))

  it.effect("reads the variables; the URL stays redacted", () =>
    Effect.gen(function*() {
      const s = yield* parse({ DATA_DIR: "/var/lib/ss", DATABASE_IN_MEMORY: "yes", DATABASE_URL: "postgres://u:secret@db/ss" })
      assert.deepStrictEqual([s.dataDir, s.inMemory], ["/var/lib/ss", true])
      assert.strictEqual(s.databaseUrl._tag, "Some")
      assert.notInclude(String(s.databaseUrl), "secret")
    }))

  it.effect("a bad value names the variable", () =>
    Effect.gen(function*() {
      const url = yield* Effect.flip(parse({ DATABASE_URL: "mysql://u:pw@db/ss" }))
      assert.include(url.message, "DATABASE_URL")
      assert.include(url.message, "postgres://")
      const mem = yield* Effect.flip(parse({ DATABASE_IN_MEMORY: "perhaps" }))
      assert.include(mem.message, "DATABASE_IN_MEMORY")
    }))
})
