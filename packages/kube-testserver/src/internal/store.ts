// The object store: one global resourceVersion counter, ordered event history for watches,
// and synchronous listeners (watch streams, the simulated kubelet).
import type { ResourceInfo } from "./resources.ts"

export type Obj = Record<string, any>
export type EventType = "ADDED" | "MODIFIED" | "DELETED"

export interface StoreEvent {
  readonly rv: number
  readonly type: EventType
  readonly info: ResourceInfo
  readonly namespace: string
  /** Full object (with kind/apiVersion) as of this event. */
  readonly obj: Obj
  /** The previous state for MODIFIED, so filtered watches can turn transitions into ADDED/DELETED. */
  readonly prev: Obj | undefined
}

export type Listener = (ev: StoreEvent) => void

/** Canonical JSON (sorted keys) for equality checks that ignore key order. */
export const canonical = (v: unknown): string => {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`
  if (v !== null && typeof v === "object") {
    const o = v as Record<string, unknown>
    return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(",")}}`
  }
  return JSON.stringify(v) ?? "null"
}

export const clone = <A>(v: A): A => structuredClone(v)

const withoutRv = (o: Obj): Obj => ({ ...o, metadata: { ...o.metadata, resourceVersion: undefined } })

export class Store {
  private rv = 1
  private readonly tables = new Map<string, Map<string, Obj>>()
  private history: Array<StoreEvent> = []
  /** Watches from a resourceVersion below this are expired (the "compacted" revision). */
  private compacted = 0
  private readonly listeners = new Set<Listener>()
  private readonly historyLimit: number

  constructor(historyLimit: number) {
    this.historyLimit = historyLimit
  }

  get resourceVersion(): number {
    return this.rv
  }

  get compactedRevision(): number {
    return this.compacted
  }

  private table(info: ResourceInfo): Map<string, Obj> {
    const k = `${info.group}/${info.resource}`
    let t = this.tables.get(k)
    if (t === undefined) {
      t = new Map()
      this.tables.set(k, t)
    }
    return t
  }

  get(info: ResourceInfo, namespace: string, name: string): Obj | undefined {
    return this.table(info).get(`${namespace}/${name}`)
  }

  /** All objects of a resource (optionally one namespace), in key order like etcd. */
  list(info: ResourceInfo, namespace?: string): Array<Obj> {
    const out: Array<[string, Obj]> = []
    for (const [k, o] of this.table(info)) {
      if (namespace === undefined || namespace === "" || (o.metadata?.namespace ?? "") === namespace) out.push([k, o])
    }
    out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    return out.map(([, o]) => o)
  }

  subscribe(l: Listener): () => void {
    this.listeners.add(l)
    return () => {
      this.listeners.delete(l)
    }
  }

  /** Events after `rv`, or undefined when that revision has been compacted away. */
  since(rv: number): ReadonlyArray<StoreEvent> | undefined {
    if (rv < this.compacted) return undefined
    return this.history.filter((e) => e.rv > rv)
  }

  /** Forget all history up to now, as etcd compaction does: older watch RVs become "too old". */
  compact(): void {
    this.compacted = this.rv
    this.history = []
  }

  private emit(type: EventType, info: ResourceInfo, obj: Obj, prev: Obj | undefined) {
    const ev: StoreEvent = { rv: this.rv, type, info, namespace: obj.metadata?.namespace ?? "", obj, prev }
    this.history.push(ev)
    if (this.history.length > this.historyLimit) {
      const dropped = this.history.splice(0, this.history.length - this.historyLimit)
      this.compacted = dropped[dropped.length - 1]!.rv
    }
    for (const l of [...this.listeners]) {
      try {
        l(ev)
      } catch (e) {
        console.error("kube-testserver: listener failed", e)
      }
    }
  }

  create(info: ResourceInfo, obj: Obj): Obj {
    const key = `${obj.metadata?.namespace ?? ""}/${obj.metadata.name}`
    this.rv++
    obj.metadata.resourceVersion = String(this.rv)
    this.table(info).set(key, obj)
    this.emit("ADDED", info, obj, undefined)
    return obj
  }

  /** Stores a new state; a no-op write keeps the old object, its RV, and emits nothing. */
  update(info: ResourceInfo, obj: Obj, prev: Obj): Obj {
    if (canonical(withoutRv(obj)) === canonical(withoutRv(prev))) return prev
    const key = `${obj.metadata?.namespace ?? ""}/${obj.metadata.name}`
    this.rv++
    obj.metadata.resourceVersion = String(this.rv)
    this.table(info).set(key, obj)
    this.emit("MODIFIED", info, obj, prev)
    return obj
  }

  remove(info: ResourceInfo, prev: Obj): Obj {
    const key = `${prev.metadata?.namespace ?? ""}/${prev.metadata.name}`
    this.rv++
    const last = clone(prev)
    last.metadata.resourceVersion = String(this.rv)
    this.table(info).delete(key)
    this.emit("DELETED", info, last, undefined)
    return last
  }
}
