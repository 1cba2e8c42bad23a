// Durations as operators write them: `500ms`, `30s`, `5m`, `1h`, `1h30m`. The built-in
// Schema.DurationFromString only takes "30 seconds", so every duration setting goes through this.
import { Duration as D, Effect, Schema, SchemaGetter, SchemaIssue } from "effect"

const FORM = /^(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$/

/** Parses `1h30m`, `30s`, `500ms`...; undefined for anything else (including the empty string). */
export const parseDuration = (input: string): D.Duration | undefined => {
  const m = FORM.exec(input)
  if (m === null || input === "") return undefined
  const [, h, min, s, ms] = m
  const millis = Number(h ?? 0) * 3_600_000 + Number(min ?? 0) * 60_000 + Number(s ?? 0) * 1000 + Number(ms ?? 0)
  return Number.isSafeInteger(millis) ? D.millis(millis) : undefined
}

/** Formats a duration in the same short form (`1h30m`, `250ms`); `0s` for zero. */
export const formatDuration = (d: D.Duration): string => {
  let rest = Math.round(D.toMillis(d))
  if (rest === 0) return "0s"
  let out = ""
  for (const [unit, size] of [["h", 3_600_000], ["m", 60_000], ["s", 1000], ["ms", 1]] as const) {
    const n = Math.floor(rest / size)
    if (n > 0) out += `${n}${unit}`
    rest -= n * size
  }
  return out
}

/** A duration written as `500ms`, `30s`, `5m`, `1h` or combinations in that order (`1h30m`, `1m30s`). */
export const DurationString = Schema.String.pipe(
  Schema.decodeTo(Schema.Duration, {
    decode: SchemaGetter.transformEffect((s: string) => {
      const d = parseDuration(s.trim())
      return d === undefined
        ? Effect.fail(new SchemaIssue.InvalidValue({ message: `invalid duration "${s}": use forms like 500ms, 30s, 5m, 1h or 1h30m` }, s))
        : Effect.succeed(d)
    }),
    encode: SchemaGetter.transform(formatDuration)
  })
)
