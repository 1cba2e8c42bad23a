// Debian packages the tests use, installed when missing (as root) or named in a clear error (otherwise).
import { execFileSync, spawnSync } from "node:child_process"

/** Package -> why the tests need it. */
export const testPackages: Readonly<Record<string, string>> = {
  chromium: "browser tests (driven by playwright-core)",
  "fonts-dejavu-core": "browser tests (a font to render text)",
  postgresql: "store and high-availability tests against a real PostgreSQL",
  "tigervnc-standalone-server": "the session-desktop entrypoint test (Xvnc)",
  "tigervnc-tools": "the session-desktop entrypoint test (vncpasswd)",
  "x11-xserver-utils": "the session-desktop entrypoint test (xsetroot)",
  openssl: "certificates for the real Kubernetes test bed"
}

const installed = (pkg: string): boolean => {
  const r = spawnSync("dpkg-query", ["-W", "-f=${Status}", pkg], { encoding: "utf8" })
  return r.status === 0 && r.stdout.includes("install ok installed")
}

/** Installs the packages that are missing; throws naming them and the command when that is not possible. */
export const ensureDebianPackages = (packages: Readonly<Record<string, string>>, log: (line: string) => void = console.log): void => {
  const missing = Object.keys(packages).filter((p) => !installed(p))
  if (missing.length === 0) return
  const command = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(" ")}`
  const why = missing.map((p) => `  ${p}: ${packages[p]}`).join("\n")
  if (spawnSync("dpkg-query", ["--version"]).status !== 0) {
    throw new Error(`the tests need these Debian packages, and this is not a Debian-based system:\n${why}`)
  }
  if (process.getuid?.() !== 0) {
    throw new Error(`the tests need these Debian packages, which are missing:\n${why}\nInstall them as root: sudo ${command}`)
  }
  log(`installing Debian packages: ${missing.join(" ")}`)
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" }
  execFileSync("apt-get", ["update", "-qq"], { stdio: "inherit", env })
  execFileSync("apt-get", ["install", "-y", "-qq", "--no-install-recommends", ...missing], { stdio: ["ignore", "ignore", "inherit"], env })
}
