// A throwaway PostgreSQL cluster for tests: initdb in a temp dir, pg_ctl start on a free port,
// stopped and deleted when the scope closes. Uses Debian's postgresql package
// (/usr/lib/postgresql/<version>/bin), which .ci/run installs. As root the server runs as the
// `postgres` user (PostgreSQL refuses to run as root).
import { Effect, Redacted } from "effect"
import type { Scope } from "effect"
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"

const findBinDir = (): string => {
  const root = "/usr/lib/postgresql"
  const versions = fs.existsSync(root)
    ? fs.readdirSync(root).filter((v) => fs.existsSync(path.join(root, v, "bin", "pg_ctl")))
      .sort((a, b) => Number(b) - Number(a))
    : []
  if (versions.length === 0) {
    throw new Error(
      "pg_ctl not found under /usr/lib/postgresql/*/bin: install PostgreSQL to run the real-PostgreSQL store tests " +
        "(Debian: apt-get install -y postgresql; .ci/run does this in CI)"
    )
  }
  return path.join(root, versions[0]!, "bin")
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const isRoot = typeof process.getuid === "function" && process.getuid() === 0

/** Runs a PostgreSQL binary, as `postgres` when we are root. */
const run = (bin: string, args: ReadonlyArray<string>): string => {
  const [cmd, argv] = isRoot ? ["runuser", ["-u", "postgres", "--", bin, ...args]] : [bin, [...args]]
  try {
    return execFileSync(cmd, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 120_000 })
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string }
    throw new Error(`${path.basename(bin)} failed: ${err.message}\n${err.stdout ?? ""}${err.stderr ?? ""}`)
  }
}

export interface PostgresServer {
  readonly port: number
  /** A URL for a new, empty database on the server. */
  readonly createDatabase: (name: string) => Redacted.Redacted<string>
}

/** Starts a cluster for the current scope. Fails with a clear message when PostgreSQL is not installed. */
export const startPostgres: Effect.Effect<PostgresServer, Error, Scope.Scope> = Effect.acquireRelease(
  Effect.tryPromise({
    try: async () => {
      const bin = findBinDir()
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "streamspace-pgtest-"))
      fs.chmodSync(dir, 0o755)
      const data = path.join(dir, "data")
      if (isRoot) execFileSync("chown", ["-R", "postgres:postgres", dir])
      const port = await freePort()
      try {
        run(path.join(bin, "initdb"), ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        run(path.join(bin, "pg_ctl"), [
          "-D",
          data,
          "-l",
          path.join(dir, "log"),
          "-w",
          "-t",
          "60",
          "-o",
          `-p ${port} -h 127.0.0.1 -k ${dir} -c fsync=off -c max_connections=50`,
          "start"
        ])
      } catch (e) {
        fs.rmSync(dir, { recursive: true, force: true })
        throw e
      }
      return { bin, dir, data, port }
    },
    catch: (e) => (e instanceof Error ? e : new Error(String(e)))
  }),
  ({ bin, data, dir }) =>
    Effect.sync(() => {
      try {
        run(path.join(bin, "pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"])
      } finally {
        fs.rmSync(dir, { recursive: true, force: true })
      }
    })
).pipe(
  Effect.map(({ bin, port }): PostgresServer => ({
    port,
    createDatabase: (name) => {
      run(path.join(bin, "psql"), ["-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", `CREATE DATABASE "${name}"`])
      return Redacted.make(`postgres://postgres@127.0.0.1:${port}/${name}`)
    }
  }))
)
