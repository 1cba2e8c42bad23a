// The Dockerfiles' promises, checked without a Docker engine: pinned bases, only what runs in the final
// stage (the control plane's production dependencies; the agent's one bundled file), numeric non-root
// users, exec-form entrypoints (signals reach node / tini directly), OCI labels, filtered build contexts,
// and every workspace manifest present for `npm ci`. entrypoints.test.ts runs the entry commands.
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import { assert, describe, it } from "vitest"
import { images } from "@streamspace/testbed"
import { finalStage, type Instruction, instructions } from "../../src/dockerfile.ts"
import { repoRoot } from "./helm.ts"

const args = (ins: Array<Instruction>) => Object.fromEntries(ins.filter((i) => i.op === "ARG" && i.args.includes("=")).map((i) => i.args.split("=") as [string, string]))
const labels = (ins: Array<Instruction>) => ins.filter((i) => i.op === "LABEL").map((i) => i.args).join(" ")

const nodeImages = [
  { name: "agent", workspace: "@streamspace/agent", pkg: "packages/agent" },
  { name: "control-plane", workspace: "@streamspace/control-plane", pkg: "packages/control-plane" }
]

describe("docker/ Node images", () => {
  for (const image of nodeImages) {
    it(`docker/${image.name}/Dockerfile: pinned Node 24 slim, uid 10001, exec-form node entrypoint, no npm at run time`, () => {
      const file = path.join(repoRoot, "docker", image.name, "Dockerfile")
      const ins = instructions(file)
      const nodeVersion = args(ins).NODE_VERSION
      assert.match(nodeVersion ?? "", /^24\.\d+\.\d+$/, "NODE_VERSION pinned to an exact Node 24 release")
      const froms = ins.filter((i) => i.op === "FROM").map((i) => i.args)
      assert.isAtLeast(froms.length, 2, "multi-stage")
      for (const f of froms) assert.match(f, /^node:\$\{NODE_VERSION\}-bookworm-slim( AS \w+)?$/)

      const run = ins.filter((i) => i.op === "RUN").map((i) => i.args).join("\n")
      assert.match(run, new RegExp(`npm ci .*--workspace ${image.workspace}`), "only this workspace's tree is installed")
      // Every workspace manifest is copied so the lockfile matches the workspace set.
      const copies = ins.filter((i) => i.op === "COPY").map((i) => i.args)
      for (const dir of readdirSync(path.join(repoRoot, "packages"))) {
        if (!existsSync(path.join(repoRoot, "packages", dir, "package.json"))) continue
        assert.isTrue(copies.some((c) => c.startsWith(`packages/${dir}/package.json `)), `COPY packages/${dir}/package.json`)
      }
      for (const pkg of ["packages/protocol", image.pkg]) assert.isTrue(copies.some((c) => c === `${pkg} ${pkg}`), `COPY ${pkg}`)

      const final = finalStage(ins)
      const user = final.filter((i) => i.op === "USER").map((i) => i.args)
      assert.deepStrictEqual(user, ["10001:10001"], "numeric non-root user in the final stage")
      const entry = final.filter((i) => i.op === "ENTRYPOINT")
      assert.strictEqual(entry.length, 1)
      assert.strictEqual(JSON.parse(entry[0]!.args)[0], "node", "exec form, node as PID 1, no shell")
      assert.isFalse(final.some((i) => i.op === "CMD"))
      assert.match(run, /rm -rf \/usr\/local\/lib\/node_modules\/npm/, "no npm at run time")
      assert.isTrue(final.some((i) => i.op === "HEALTHCHECK"))
      for (const key of ["title", "description", "source", "licenses", "version", "revision", "created"]) {
        assert.include(labels(final), `org.opencontainers.image.${key}=`)
      }

      const ignore = readFileSync(path.join(repoRoot, "docker", image.name, "Dockerfile.dockerignore"), "utf8").split("\n")
      assert.strictEqual(ignore.find((l) => l !== "" && !l.startsWith("#")), "*", "context starts from nothing")
      for (const keep of ["!package.json", "!package-lock.json", "!packages/*/package.json", "!packages/protocol", `!${image.pkg}`]) assert.include(ignore, keep)
      for (const drop of ["**/node_modules", "**/test"]) assert.include(ignore, drop)
    })
  }

  it("control-plane image: production dependencies and the TypeScript sources, run by Node's type stripping", () => {
    const ins = instructions(path.join(repoRoot, "docker/control-plane/Dockerfile"))
    const run = ins.filter((i) => i.op === "RUN").map((i) => i.args).join("\n")
    assert.match(run, /npm ci --omit=dev .*--workspace @streamspace\/control-plane/)
    const final = finalStage(ins)
    assert.isTrue(final.some((i) => i.op === "COPY" && i.args.startsWith("--from=deps /app /app")))
    assert.deepStrictEqual(JSON.parse(final.find((i) => i.op === "ENTRYPOINT")!.args), ["node", "packages/control-plane/src/main.ts"])
  })

  it("agent image: the build stage bundles the agent; the final stage holds that one file and no node_modules", () => {
    const ins = instructions(path.join(repoRoot, "docker/agent/Dockerfile"))
    const final = finalStage(ins)
    const build = ins.slice(0, ins.length - final.length)
    const buildRun = build.filter((i) => i.op === "RUN").map((i) => i.args)
    // npm ci of the agent workspace with its devDependencies (rolldown) but not the repository root's.
    const ci = buildRun.find((r) => r.startsWith("npm ci "))
    assert.isDefined(ci)
    assert.notMatch(ci!, /--omit=dev|--include-workspace-root/)
    // The bundle is built after the sources are copied, by the package's own build script.
    const buildAt = build.findIndex((i) => i.op === "RUN" && /^npm run build (--workspace|-w) @streamspace\/agent$/.test(i.args))
    assert.isAbove(buildAt, build.findIndex((i) => i.op === "COPY" && i.args === "packages/agent packages/agent"))
    const agentPkg = JSON.parse(readFileSync(path.join(repoRoot, "packages/agent/package.json"), "utf8"))
    assert.match(agentPkg.scripts.build, /^rolldown --config rolldown\.config\.ts$/)
    assert.isString(agentPkg.devDependencies?.rolldown, "rolldown is the agent's devDependency, so the build stage installs it")

    const copies = final.filter((i) => i.op === "COPY").map((i) => i.args)
    assert.deepStrictEqual(copies, ["--from=build /app/packages/agent/dist/main.mjs /app/packages/agent/dist/main.mjs"], "only the bundle")
    const entry = JSON.parse(final.find((i) => i.op === "ENTRYPOINT")!.args) as Array<string>
    assert.strictEqual(entry.at(-1), "packages/agent/dist/main.mjs")
    // Between node and the file only V8 flags (bench/lib/agent-launch.ts runs the benchmark with the same ones).
    for (const flag of entry.slice(1, -1)) assert.match(flag, /^--[a-z-]+(=\S+)?$/)
    assert.include(entry, "--max-semi-space-size=1")
    const env = final.filter((i) => i.op === "ENV").map((i) => i.args).join(" ")
    assert.include(env, "MALLOC_ARENA_MAX=2")

    const ignore = readFileSync(path.join(repoRoot, "docker/agent/Dockerfile.dockerignore"), "utf8").split("\n")
    assert.include(ignore, "**/dist", "a local build never enters the context")
  })

  it("control-plane image: DATA_DIR=/data owned by the runtime user, declared as a volume, port 8000", () => {
    const final = finalStage(instructions(path.join(repoRoot, "docker/control-plane/Dockerfile")))
    const env = final.filter((i) => i.op === "ENV").map((i) => i.args).join(" ")
    assert.include(env, "DATA_DIR=/data")
    assert.include(env, "PORT=8000")
    assert.include(env, "HOST=0.0.0.0")
    assert.isTrue(final.some((i) => i.op === "RUN" && i.args.includes("chown 10001:10001 /data")))
    assert.isTrue(final.some((i) => i.op === "VOLUME" && i.args.includes("/data")))
    assert.isTrue(final.some((i) => i.op === "EXPOSE" && i.args === "8000"))
  })
})

describe("docker/ images built and run in npm test", () => {
  it("npm run images:build builds every Dockerfile under docker/ (test/images runs each image)", () => {
    const dockerfiles = readdirSync(path.join(repoRoot, "docker")).filter((d) => existsSync(path.join(repoRoot, "docker", d, "Dockerfile"))).map((d) => `docker/${d}/Dockerfile`)
    assert.sameMembers(Object.values(images).map((i) => i.dockerfile), dockerfiles)
  })
})

describe("docker/session-desktop", () => {
  const dir = path.join(repoRoot, "docker/session-desktop")
  const ins = instructions(path.join(dir, "Dockerfile"))

  it("is Debian bookworm with TigerVNC, a desktop and a browser, non-root, home on a volume, tini as PID 1", () => {
    assert.match(ins.find((i) => i.op === "FROM")!.args, /^debian:12\.\d+-slim$/)
    const apt = ins.filter((i) => i.op === "RUN" && i.args.includes("apt-get install")).map((i) => i.args).join(" ")
    for (const pkg of ["tigervnc-standalone-server", "tigervnc-tools", "x11-xserver-utils", "xfce4-session", "firefox-esr", "tini"]) {
      assert.match(apt, new RegExp(`(^|\\s)${pkg}(\\s|$)`), pkg)
    }
    assert.deepStrictEqual(ins.filter((i) => i.op === "USER").map((i) => i.args), ["1000:1000"])
    assert.isTrue(ins.some((i) => i.op === "VOLUME" && i.args.includes("/home/streamspace")))
    assert.isTrue(ins.some((i) => i.op === "EXPOSE" && i.args === "5900"))
    assert.deepStrictEqual(JSON.parse(ins.find((i) => i.op === "ENTRYPOINT")!.args), ["/usr/bin/tini", "--", "/usr/local/bin/streamspace-session"])
    assert.isTrue(ins.some((i) => i.op === "COPY" && /entrypoint\.sh \/usr\/local\/bin\/streamspace-session$/.test(i.args)))
    const env = ins.filter((i) => i.op === "ENV").map((i) => i.args).join(" ")
    assert.match(env, /DESKTOP_COMMAND="dbus-launch --exit-with-session startxfce4"/)
    assert.include(env, "HOME=/home/streamspace")
    assert.include(labels(ins), "org.opencontainers.image.source=")
  })

  it("has an entrypoint that bash accepts", () => {
    execFileSync("bash", ["-n", path.join(dir, "entrypoint.sh")])
  })
})
