// CredentialStore: keeps the per-agent credential the control plane issues on approval, in a Kubernetes
// Secret in NAMESPACE (in a cluster) or a file (outside one), so restarts skip enrolment.
import { Context, Effect, Layer, Option, Redacted, Schema } from "effect"
import { chmod, readFile, rename, writeFile } from "node:fs/promises"
import { AgentConfig } from "./AgentConfig.ts"
import { Kubernetes, type KubernetesError } from "./Kubernetes.ts"

export class CredentialStoreError extends Schema.TaggedError<CredentialStoreError>()("CredentialStoreError", {
  reason: Schema.Literals(["Read", "Write"]),
  message: Schema.String
}) {}

export interface CredentialStoreShape {
  readonly load: Effect.Effect<Option.Option<Redacted.Redacted<string>>, CredentialStoreError>
  readonly save: (token: Redacted.Redacted<string>) => Effect.Effect<void, CredentialStoreError>
}

/** The key of the token in the Secret. */
export const SECRET_KEY = "token"

const nonEmpty = (s: string | undefined): Option.Option<Redacted.Redacted<string>> => {
  const t = s?.trim()
  return t === undefined || t === "" ? Option.none() : Option.some(Redacted.make(t))
}

export class CredentialStore extends Context.Service<CredentialStore, CredentialStoreShape>()("agent/CredentialStore") {
  /** The Secret AGENT_CREDENTIAL_SECRET in NAMESPACE (created, or its data replaced). */
  static readonly layerKubernetes: Layer.Layer<CredentialStore, never, Kubernetes | AgentConfig> = Layer.effect(
    CredentialStore,
    Effect.gen(function*() {
      const kube = yield* Kubernetes
      const { credentialSecret } = yield* AgentConfig
      const load = Effect.fn("CredentialStore.load")(function*() {
        const data = yield* kube.readSecret(credentialSecret).pipe(
          Effect.mapError((e) => new CredentialStoreError({ reason: "Read", message: `cannot read Secret ${credentialSecret}: ${e.message}` }))
        )
        return Option.flatMap(data, (d) => nonEmpty(d[SECRET_KEY]))
      })
      const save = Effect.fn("CredentialStore.save")(function*(token: Redacted.Redacted<string>) {
        yield* kube.writeSecret(credentialSecret, { [SECRET_KEY]: Redacted.value(token) }).pipe(
          Effect.mapError((e) => new CredentialStoreError({ reason: "Write", message: `cannot write Secret ${credentialSecret}: ${e.message}` }))
        )
      })
      return CredentialStore.of({ load: load(), save })
    })
  )

  /** The file AGENT_CREDENTIAL_FILE, written atomically with mode 0600. */
  static readonly layerFile: Layer.Layer<CredentialStore, never, AgentConfig> = Layer.effect(
    CredentialStore,
    Effect.gen(function*() {
      const { credentialFile } = yield* AgentConfig
      const load = Effect.fn("CredentialStore.load")(function*() {
        const text = yield* Effect.tryPromise({
          try: () => readFile(credentialFile, "utf8").catch((e: NodeJS.ErrnoException) => e.code === "ENOENT" ? undefined : Promise.reject(e)),
          catch: (e) => new CredentialStoreError({ reason: "Read", message: `cannot read ${credentialFile}: ${(e as Error).message}` })
        })
        return nonEmpty(text)
      })
      const save = Effect.fn("CredentialStore.save")(function*(token: Redacted.Redacted<string>) {
        // Write a private temporary file and rename it, so a crash never leaves a half-written credential.
        const tmp = `${credentialFile}.tmp-${process.pid}`
        yield* Effect.tryPromise({
          try: async () => {
            await writeFile(tmp, Redacted.value(token), { mode: 0o600 })
            await chmod(tmp, 0o600)
            await rename(tmp, credentialFile)
          },
          catch: (e) => new CredentialStoreError({ reason: "Write", message: `cannot write ${credentialFile}: ${(e as Error).message}` })
        })
      })
      return CredentialStore.of({ load: load(), save })
    })
  )

  /** Kubernetes Secret when running in a cluster (KUBECONFIG unset), else the file. */
  static readonly layer: Layer.Layer<CredentialStore, KubernetesError, AgentConfig> = Layer.unwrap(
    Effect.map(AgentConfig, (config) =>
      config.kubeconfig === undefined
        ? CredentialStore.layerKubernetes.pipe(Layer.provide(Kubernetes.layer))
        : CredentialStore.layerFile)
  )

  /** In memory, for tests; starts with `initial` when given. */
  static readonly layerMemory = (initial?: string): Layer.Layer<CredentialStore> =>
    Layer.sync(CredentialStore, () => {
      let current = nonEmpty(initial)
      return CredentialStore.of({
        load: Effect.sync(() => current),
        save: (token) => Effect.sync(() => {
          current = Option.some(token)
        })
      })
    })
}
