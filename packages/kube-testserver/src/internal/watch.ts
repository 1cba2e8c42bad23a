// Watch streams: chunked JSON events (ADDED / MODIFIED / DELETED, BOOKMARK when allowed, one ERROR 410
// for a resourceVersion older than the kept history), from the list's resourceVersion or from now;
// selector transitions become ADDED / DELETED as the API server sends them. Ends on timeoutSeconds, on
// a fault's dropAfterMs, on the client's close, or when the test drops every watch.
import type * as http from "node:http"
import type { Fault } from "./faults.ts"
import { apiVersionOf, type ResourceInfo } from "./resources.ts"
import { type FieldSelector, type LabelSelector, matchesFields, matchesLabels } from "./selectors.ts"
import { badRequest, failure } from "./status.ts"
import type { Obj, Store, StoreEvent } from "./store.ts"
import type { Timers } from "./timers.ts"

export interface WatchRequest {
  readonly info: ResourceInfo
  /** "" for all namespaces. */
  readonly namespace: string
  readonly query: URLSearchParams
  readonly labels: LabelSelector
  readonly fields: FieldSelector
  readonly fault: Fault | undefined
}

interface ActiveWatch {
  end(reset: boolean): void
}

export class Watches {
  private readonly store: Store
  private readonly timers: Timers
  private readonly bookmarkMs: number
  private readonly active = new Set<ActiveWatch>()

  constructor(store: Store, timers: Timers, bookmarkMs: number) {
    this.store = store
    this.timers = timers
    this.bookmarkMs = bookmarkMs
  }

  /** Ends every open watch: cleanly (informers resume from their last resourceVersion), or by resetting the connection. */
  endAll(reset: boolean): void {
    for (const w of [...this.active]) w.end(reset)
  }

  serve(req: http.IncomingMessage, res: http.ServerResponse, w: WatchRequest): void {
    const { store, timers } = this
    const { info, namespace, query: q } = w
    const rvParam = q.get("resourceVersion") ?? ""
    const fromRv = rvParam === "" || rvParam === "0" ? undefined : Number(rvParam)
    if (fromRv !== undefined && !Number.isInteger(fromRv)) throw badRequest(`invalid resource version: ${rvParam}`)
    const matches = (o: Obj | undefined) =>
      o !== undefined && (namespace === "" || (o.metadata?.namespace ?? "") === namespace) &&
      matchesLabels(w.labels, o.metadata?.labels) && matchesFields(w.fields, o)
    res.writeHead(200, { "Content-Type": "application/json", "Transfer-Encoding": "chunked", "Cache-Control": "no-cache, private" })
    res.flushHeaders()
    const write = (type: string, object: Obj) => {
      if (!res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`)
    }
    const cancels: Array<() => void> = []
    let unsubscribe = () => {}
    const watch: ActiveWatch = {
      end: (reset) => {
        unsubscribe()
        for (const cancel of cancels) cancel()
        this.active.delete(watch)
        if (reset) req.socket.destroy()
        else if (!res.writableEnded) res.end()
      }
    }
    this.active.add(watch)
    const translate = (ev: StoreEvent) => {
      if (ev.info !== info) return
      const now = matches(ev.obj)
      if (ev.type === "ADDED") {
        if (now) write("ADDED", ev.obj)
      } else if (ev.type === "DELETED") {
        if (now) write("DELETED", ev.obj)
      } else {
        const before = matches(ev.prev)
        if (before && now) write("MODIFIED", ev.obj)
        else if (!before && now) write("ADDED", ev.obj)
        else if (before && !now) write("DELETED", ev.obj)
      }
    }
    if (fromRv === undefined) {
      for (const o of store.list(info, namespace)) if (matches(o)) write("ADDED", o)
      if (q.get("sendInitialEvents") === "true") {
        write("BOOKMARK", {
          kind: info.kind,
          apiVersion: apiVersionOf(info),
          metadata: { resourceVersion: String(store.resourceVersion), annotations: { "k8s.io/initial-events-end": "true" } }
        })
      }
    } else {
      const history = store.since(fromRv)
      if (history === undefined) {
        write("ERROR", failure(410, "Expired", `too old resource version: ${fromRv} (${store.compactedRevision})`))
        watch.end(false)
        return
      }
      for (const ev of history) translate(ev)
    }
    unsubscribe = store.subscribe(translate)
    if (q.get("allowWatchBookmarks") === "true") {
      cancels.push(timers.every(this.bookmarkMs, () =>
        write("BOOKMARK", { kind: info.kind, apiVersion: apiVersionOf(info), metadata: { resourceVersion: String(store.resourceVersion) } })))
    }
    const timeout = Number(q.get("timeoutSeconds") ?? "0")
    if (timeout > 0) cancels.push(timers.after(timeout * 1000, () => watch.end(false)))
    const fault = w.fault
    if (fault?.dropAfterMs !== undefined) cancels.push(timers.after(fault.dropAfterMs, () => watch.end(fault.reset === true)))
    req.on("close", () => watch.end(false))
    res.on("close", () => watch.end(false))
  }
}
