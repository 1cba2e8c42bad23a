// Warm pools, the control plane's part: which pools the templates ask for, and telling the agents. Every
// connected, approved agent gets the whole set (`set_warm_pools`) when it connects and whenever a template
// changes; a drained agent gets none, so its warm pods stop taking capacity. The agent keeps the pods and
// hands one to a create whose spec matches (the template's own: no overrides, no persistent home).
import type { AgentId, WarmPool } from "@streamspace/protocol"
import { Effect, FiberSet } from "effect"
import type { AgentHubShape } from "../../AgentHub.ts"
import type { TemplateRecord } from "../../Store.ts"
import type { Book } from "./book.ts"
import { fromRepo } from "./book.ts"

/** The pools of the templates with `warm_pool` > 0, in the spec a session of the template gets. */
export const poolsOf = (templates: ReadonlyArray<TemplateRecord>): ReadonlyArray<WarmPool> =>
  templates.filter((t) => t.warmPool > 0 && !t.persistentHome).map((t) => ({
    template: t.name,
    size: t.warmPool,
    image: t.image,
    ...(Object.keys(t.resources).length > 0 ? { resources: t.resources } : {}),
    ...(Object.keys(t.env).length > 0 ? { env: t.env } : {}),
    vnc_port: t.vncPort
  }))

/** Sends the current pools to `only` (or every connected, approved agent), in the background. */
export const pushWarmPools = (book: Book, hub: AgentHubShape, only?: AgentId) =>
  FiberSet.run(
    book.fibers,
    Effect.gen(function*() {
      const pools = poolsOf(yield* book.repo.listTemplates.pipe(Effect.mapError(fromRepo)))
      for (const a of yield* hub.list) {
        if (!a.connected || a.enrollment !== "approved" || (only !== undefined && a.id !== only)) continue
        yield* book.dispatcher.dispatch(a.id, { action: "set_warm_pools", args: { pools: a.draining ? [] : pools } })
      }
    }).pipe(Effect.catchCause((cause) => Effect.logWarning("could not send the warm pools to the agents", cause)))
  ).pipe(Effect.asVoid)
