// Pages of the list endpoints: `?limit=N&cursor=C`. A cursor is opaque to clients (base64url of where the
// previous page ended, tagged with the list it belongs to); `next_cursor` in a response fetches the next page
// and is null on the last one. A bad limit or a cursor this API did not issue is a 400 naming it.
import { Effect } from "effect"
import { HttpServerRequest } from "effect/http"
import { ApiError } from "./api.ts"

export const DEFAULT_PAGE_LIMIT = 100
export const MAX_PAGE_LIMIT = 500

export interface PageRequest {
  readonly limit: number
  /** The decoded position after which the page starts, if a cursor was given. */
  readonly after: ReadonlyArray<string> | undefined
}

const bad = (message: string) => new ApiError({ status: 400, code: "invalid_request", message })

export const encodeCursor = (list: string, position: ReadonlyArray<string>) => Buffer.from(JSON.stringify([list, ...position])).toString("base64url")

const decodeCursor = (list: string, cursor: string, parts: number): ReadonlyArray<string> | undefined => {
  if (!/^[A-Za-z0-9_-]{1,1024}$/.test(cursor)) return undefined
  try {
    const value: unknown = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"))
    if (!Array.isArray(value) || value.length !== parts + 1 || value[0] !== list || !value.every((v) => typeof v === "string")) return undefined
    return value.slice(1) as Array<string>
  } catch {
    return undefined
  }
}

/** Reads `limit` and `cursor` from the query string of a request for the list `list` (positions of `parts` strings). */
export const pageRequest = (list: string, parts: number) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const query = new URL(request.url, "http://localhost").searchParams
    const rawLimit = query.get("limit")
    let limit = DEFAULT_PAGE_LIMIT
    if (rawLimit !== null) {
      if (!/^\d{1,6}$/.test(rawLimit) || Number(rawLimit) < 1 || Number(rawLimit) > MAX_PAGE_LIMIT) {
        return Effect.fail(bad(`limit: ${JSON.stringify(rawLimit.slice(0, 20))} is invalid: expected a whole number from 1 to ${MAX_PAGE_LIMIT}`))
      }
      limit = Number(rawLimit)
    }
    const cursor = query.get("cursor")
    if (cursor === null) return Effect.succeed<PageRequest>({ limit, after: undefined })
    const after = decodeCursor(list, cursor, parts)
    return after === undefined
      ? Effect.fail(bad(`cursor: not a cursor of this list; pass the next_cursor of a previous GET ${list} response, or leave it out for the first page`))
      : Effect.succeed<PageRequest>({ limit, after })
  })

/** One page of an in-memory list sorted by `key` (ascending, unique): the items after the cursor's key. */
export const pageOf = <A>(list: string, items: ReadonlyArray<A>, key: (a: A) => string, page: PageRequest) => {
  const from = page.after === undefined ? 0 : items.findIndex((a) => key(a) > page.after![0]!)
  const rest = from === -1 ? [] : items.slice(from)
  const shown = rest.slice(0, page.limit)
  return { items: shown, next: rest.length > page.limit ? encodeCursor(list, [key(shown.at(-1)!)]) : null }
}
