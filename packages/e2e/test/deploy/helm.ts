// Helpers for the deployment tests: find and run the real `helm`, parse its output, and validate
// rendered objects against the Kubernetes OpenAPI schemas (kubernetes-models).
import { execFile } from "node:child_process"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { toolPath } from "@streamspace/testbed"
import { parseAllDocuments } from "yaml"

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../../..")
export const agentChart = path.join(repoRoot, "helm/streamspace-agent")
export const controlPlaneChart = path.join(repoRoot, "helm/streamspace-control-plane")
export const manifestsDir = path.join(repoRoot, "helm/manifests")

const run = (file: string, args: ReadonlyArray<string>, env?: NodeJS.ProcessEnv) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { maxBuffer: 32 * 1024 * 1024, env: env ?? process.env }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1
      resolve({ code, stdout, stderr: stderr || (err !== null && typeof err.code !== "number" ? err.message : "") })
    })
  })

/** The helm the test bed builds (pinned in packages/testbed/go/helm); fails naming what to run when missing. Never skips. */
export const helmBinary = async (): Promise<string> => toolPath("helm")

export const helm = async (...args: ReadonlyArray<string>) => run(await helmBinary(), args)

const rendered = new Map<string, Promise<string>>()

/** `helm template` that must succeed; returns the raw YAML. Memoised per arguments: the charts do not
 *  change during a run, and each helm process costs a few hundred milliseconds. */
export const template = (chart: string, args: ReadonlyArray<string> = [], release = "streamspace-k8s-agent", namespace = "streamspace") => {
  const key = JSON.stringify([chart, args, release, namespace])
  let out = rendered.get(key)
  if (out === undefined) {
    out = helm("template", release, chart, "--namespace", namespace, ...args).then((r) => {
      if (r.code !== 0) throw new Error(`helm template failed (exit ${r.code}):\n${r.stderr}`)
      return r.stdout
    })
    rendered.set(key, out)
  }
  return out
}

/** `helm template` that must fail; returns its error output. */
export const templateError = async (chart: string, args: ReadonlyArray<string>) => {
  const r = await helm("template", "streamspace-k8s-agent", chart, "--namespace", "streamspace", ...args)
  if (r.code === 0) throw new Error(`helm template succeeded but should have failed for: ${args.join(" ")}`)
  return r.stderr
}

export interface K8sObject {
  readonly apiVersion: string
  readonly kind: string
  // Loosely typed on purpose: tests read rendered YAML and assert on its shape.
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels: Record<string, string>; readonly annotations: Record<string, string> }
  readonly [key: string]: any
}

export const parseObjects = (yamlText: string): Array<K8sObject> =>
  parseAllDocuments(yamlText)
    .map((doc) => {
      if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors.map((e) => e.message).join("; ")}`)
      return doc.toJSON() as K8sObject | null
    })
    .filter((o): o is K8sObject => o !== null)

export const find = (objects: ReadonlyArray<K8sObject>, kind: string, name?: string): K8sObject => {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name))
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ""}, found ${found.length}`)
  return found[0]!
}

/** Validates against the Kubernetes schema of its apiVersion/kind; returns the error, or undefined. */
export const validateObject = async (obj: K8sObject): Promise<string | undefined> => {
  const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/") : [undefined, obj.apiVersion]
  const modulePath = group === undefined ? `kubernetes-models/${version}/${obj.kind}` : `kubernetes-models/${group}/${version}/${obj.kind}`
  let mod: Record<string, any>
  try {
    mod = await import(modulePath)
  } catch {
    return `no Kubernetes schema for ${obj.apiVersion} ${obj.kind}`
  }
  const Model = mod[obj.kind]
  try {
    new Model(obj).validate()
    return undefined
  } catch (err) {
    return `${obj.kind}/${obj.metadata.name}: ${(err as Error).message}`
  }
}

/** Every object must pass its schema; CRD kinds (ServiceMonitor) have no built-in schema. */
export const validateAll = async (objects: ReadonlyArray<K8sObject>) => {
  const errors: Array<string> = []
  for (const obj of objects) {
    if (obj.apiVersion === "monitoring.coreos.com/v1") continue
    const e = await validateObject(obj)
    if (e !== undefined) errors.push(e)
  }
  return errors
}

/** `--set` flags from a flat map (strings are passed with --set-string so "1000m" stays a string). */
export const setFlags = (values: Record<string, string | number | boolean>): Array<string> =>
  Object.entries(values).flatMap(([k, v]) => (typeof v === "string" ? ["--set-string", `${k}=${v}`] : ["--set", `${k}=${v}`]))
