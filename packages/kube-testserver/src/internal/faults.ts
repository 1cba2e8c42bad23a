// Fault injection: rules that make matching requests slow, fail with a status (429, 500, 503...), reset
// the connection, or end a watch stream after a while. The first matching rule applies.
import { failure, type StatusBody } from "./status.ts"

/** One fault-injection rule; the first matching rule applies. */
export interface Fault {
  /** HTTP method to match (GET, POST, ...). Default: any. */
  readonly method?: string
  /** Path to match: a RegExp, or a string the path must start with. Default: any. */
  readonly path?: string | RegExp
  /** Match only watch requests (true) or only non-watch requests (false). Default: both. */
  readonly watch?: boolean
  /** Delay before handling. */
  readonly latencyMs?: number
  /** Answer with this status (e.g. 500, 429, 503) and a Status body instead of handling. */
  readonly status?: number
  /** Adds `Retry-After` (and details.retryAfterSeconds) to a `status` answer. */
  readonly retryAfterSeconds?: number
  readonly message?: string
  /** For watches: end the stream after this many ms (a clean server close, or a reset with `reset`). */
  readonly dropAfterMs?: number
  /** Destroy the connection without answering (or, with dropAfterMs, reset the watch stream). */
  readonly reset?: boolean
  /** Apply to this many matching requests, then retire the rule. Default: unlimited. */
  readonly times?: number
}

/** What `addFault` returns: call it to remove the rule; `hits` counts the requests it applied to so far. */
export interface FaultRule {
  (): void
  readonly hits: number
}

interface Entry {
  readonly fault: Fault
  left: number
  hits: number
}

export class FaultTable {
  private readonly entries: Array<Entry> = []

  add(fault: Fault): FaultRule {
    const entry: Entry = { fault, left: fault.times ?? Number.POSITIVE_INFINITY, hits: 0 }
    this.entries.push(entry)
    const remove = () => {
      const i = this.entries.indexOf(entry)
      if (i >= 0) this.entries.splice(i, 1)
    }
    return Object.defineProperty(remove, "hits", { get: () => entry.hits }) as FaultRule
  }

  clear(): void {
    this.entries.length = 0
  }

  /** The first rule matching this request, counted as used (and retired when used up). */
  match(method: string, path: string, watch: boolean): Fault | undefined {
    for (let i = 0; i < this.entries.length; i++) {
      const entry = this.entries[i]!
      const { fault } = entry
      if (fault.method !== undefined && fault.method.toUpperCase() !== method) continue
      if (fault.watch !== undefined && fault.watch !== watch) continue
      if (fault.path !== undefined) {
        if (typeof fault.path === "string" ? !path.startsWith(fault.path) : !fault.path.test(path)) continue
      }
      entry.hits++
      entry.left--
      if (entry.left <= 0) this.entries.splice(i, 1)
      return fault
    }
    return undefined
  }
}

/** The Status body of an injected `status` answer. */
export const faultStatus = (fault: Fault & { readonly status: number }): StatusBody => {
  const reasons: Record<number, [string, string]> = {
    429: ["TooManyRequests", "Too many requests, please try again later."],
    500: ["InternalError", "Internal error occurred: injected fault"],
    503: ["ServiceUnavailable", "The server is currently unable to handle the request"],
    504: ["Timeout", "The server was unable to return a response in the time allotted, but may still be processing the request"]
  }
  const [reason, defaultMsg] = reasons[fault.status] ?? ["InternalError", `injected fault ${fault.status}`]
  return failure(fault.status, reason, fault.message ?? defaultMsg, fault.retryAfterSeconds !== undefined ? { retryAfterSeconds: fault.retryAfterSeconds } : undefined)
}
