// Bearer tokens read from files, re-read when the file changes: the in-cluster service-account token (the
// kubelet rotates it about hourly) and kubeconfig users with `tokenFile:`, which @kubernetes/client-node
// ignores (requests then go out without a token). Plain objects only: Kubernetes.ts hands them to the client.
import { existsSync, readFileSync, statSync } from "node:fs"
import * as path from "node:path"

/** The auth-provider name our authenticator answers to. */
export const TOKEN_FILE_PROVIDER = "streamspace-token-file"

/** The standard place of a pod's service-account files (token, ca.crt, namespace). */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

interface UserLike {
  readonly name: string
  readonly authProvider?: { readonly name?: string; readonly config?: { readonly file?: string } }
}

interface Cached {
  readonly token: string
  readonly stamp: string
}

/**
 * A client-node authenticator (`KubeConfig.addAuthenticator`) for users whose auth provider is
 * TOKEN_FILE_PROVIDER: the token is read from `config.file`, and read again whenever the file's
 * identity, size or modification time changes, so a rotated token is used from the next request on.
 */
export const tokenFileAuthenticator = () => {
  const cache = new Map<string, Cached>()
  const token = (file: string): string => {
    const s = statSync(file)
    const stamp = `${s.ino}:${s.size}:${s.mtimeMs}`
    const cached = cache.get(file)
    if (cached !== undefined && cached.stamp === stamp) return cached.token
    const fresh = { token: readFileSync(file, "utf8").trim(), stamp }
    cache.set(file, fresh)
    return fresh.token
  }
  return {
    isAuthProvider: (user: UserLike) => user.authProvider?.name === TOKEN_FILE_PROVIDER,
    applyAuthentication: async (user: UserLike, opts: { headers?: Record<string, string> | undefined }) => {
      const file = user.authProvider?.config?.file
      if (file === undefined) return
      opts.headers = { ...opts.headers, Authorization: `Bearer ${token(file)}` }
    },
    /** Forgets what was read, so the next request reads every token file again (after a 401). */
    invalidate: () => cache.clear()
  }
}

/**
 * The auth provider that makes a user's token come from `file`. (Not `config.tokenFile`: client-node's own
 * FileAuth claims any provider with that key, and keeps a token for a minute whatever happens to the file.)
 */
export const tokenFileProvider = (file: string) => ({ name: TOKEN_FILE_PROVIDER, config: { file } })

/**
 * The kubeconfig users that name a token file (`tokenFile`, as kubectl reads it), keyed by user name, with
 * paths made absolute against the kubeconfig's folder.
 */
export const kubeconfigTokenFiles = (kubeconfig: unknown, kubeconfigPath: string): ReadonlyMap<string, string> => {
  const out = new Map<string, string>()
  const users = (kubeconfig as { users?: ReadonlyArray<{ name?: unknown; user?: { tokenFile?: unknown } }> } | null)?.users ?? []
  for (const u of users) {
    const file = u.user?.tokenFile
    if (typeof u.name === "string" && typeof file === "string" && file !== "") {
      out.set(u.name, path.resolve(path.dirname(kubeconfigPath), file))
    }
  }
  return out
}

/** `users`, with those that name a token file (`kubeconfigTokenFiles`) authenticating through it. */
export const withTokenFiles = <U extends { readonly name: string }>(users: ReadonlyArray<U>, files: ReadonlyMap<string, string>) =>
  users.map((u) => {
    const file = files.get(u.name)
    return file === undefined ? u : { name: u.name, authProvider: tokenFileProvider(file) }
  })

/** The API server's URL from the in-cluster environment (an IPv6 host in brackets). */
export const inClusterServer = (host: string, port: string): string => `https://${host.includes(":") ? `[${host}]` : host}:${port}`

/**
 * The in-cluster client options (for KubeConfig.loadFromOptions): the API server from KUBERNETES_SERVICE_HOST
 * and _PORT, the service account's token (re-read when it changes), CA and namespace from `dir`.
 */
export const inClusterOptions = (host: string | undefined, port: string | undefined, dir: string) => {
  if (host === undefined || port === undefined) {
    throw new Error("KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not running in a pod?): set KUBECONFIG")
  }
  const token = path.join(dir, "token")
  readFileSync(token) // fail now, naming the file, rather than on the first call
  const namespaceFile = path.join(dir, "namespace")
  return {
    clusters: [{ name: "in-cluster", server: inClusterServer(host, port), caFile: path.join(dir, "ca.crt"), skipTLSVerify: false }],
    users: [{ name: "in-cluster", authProvider: tokenFileProvider(token) }],
    contexts: [{
      name: "in-cluster",
      cluster: "in-cluster",
      user: "in-cluster",
      ...(existsSync(namespaceFile) ? { namespace: readFileSync(namespaceFile, "utf8").trim() } : {})
    }],
    currentContext: "in-cluster"
  }
}
