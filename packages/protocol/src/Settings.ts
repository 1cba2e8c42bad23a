// Environment settings for both deployables: one variable, one schema, one default written the way an
// operator writes it ("30s", "true"), and an error that names the variable, the bad value and what is expected.
// Values are read through Effect's ConfigProvider, so tests and embedders supply their own.
import { Config, Effect, Option, Redacted, Result, Schema, SchemaGetter } from "effect"
import { formatSchemaError } from "./Messages.ts"

export class SettingError extends Schema.TaggedError<SettingError>()("SettingError", {
  variable: Schema.String,
  message: Schema.String
}) {}

export interface SettingOptions {
  /** Default, written as the operator would write it; absent means the variable is required. */
  readonly default?: string
  /** What a good value looks like, for the error message. */
  readonly expected: string
  /** Never echo the value in errors. */
  readonly secret?: boolean
}

/** Reads and validates one variable. */
export const setting = <A>(
  name: string,
  schema: Schema.Decoder<A>,
  options: SettingOptions
): Effect.Effect<A, SettingError> =>
  Effect.gen(function*() {
    const raw = yield* Config.option(Config.String(name)).pipe(
      Effect.mapError((e) => new SettingError({ variable: name, message: `${name} could not be read: ${e.message}` }))
    )
    const value = Option.getOrUndefined(raw) ?? options.default
    if (value === undefined) {
      return yield* new SettingError({ variable: name, message: `${name} is required: expected ${options.expected}` })
    }
    const decoded = Schema.decodeUnknownResult(schema)(value)
    if (Result.isFailure(decoded)) {
      const shown = options.secret ? "<redacted>" : JSON.stringify(value)
      return yield* new SettingError({
        variable: name,
        message: `${name}=${shown} is invalid (${formatSchemaError(decoded.failure)}): expected ${options.expected}`
      })
    }
    return decoded.success
  })

/** A secret: never logged, never echoed. Empty means unset. */
export const secretSetting = (name: string): Effect.Effect<Option.Option<Redacted.Redacted<string>>, SettingError> =>
  Config.option(Config.String(name)).pipe(
    Effect.map((o) => Option.filter(o, (s) => s !== "").pipe(Option.map((s) => Redacted.make(s, { label: name })))),
    Effect.mapError((e) => new SettingError({ variable: name, message: `${name} could not be read: ${e.message}` }))
  )

// ---- schemas for settings written as strings ----------------------------------------------------

/** `true`/`false` (also `1`/`0`, `yes`/`no`), any case. */
export const BooleanString = Schema.String.pipe(
  Schema.check(Schema.isPattern(/^(true|false|1|0|yes|no)$/i, { message: "must be true or false" })),
  Schema.decodeTo(Schema.Boolean, {
    decode: SchemaGetter.transform((s: string) => /^(true|1|yes)$/i.test(s)),
    encode: SchemaGetter.transform((b: boolean) => String(b))
  })
)

/** A decimal integer within bounds. */
export const IntString = (minimum: number, maximum: number) =>
  Schema.String.pipe(
    Schema.check(Schema.isPattern(/^-?\d+$/, { message: "must be a whole number" })),
    Schema.decodeTo(
      Schema.Number.pipe(Schema.check(Schema.isBetween({ minimum, maximum }, { message: `must be between ${minimum} and ${maximum}` }))),
      { decode: SchemaGetter.transform((s: string) => Number(s)), encode: SchemaGetter.transform((n: number) => String(n)) }
    )
  )

export const PortString = IntString(1, 65535)

export const LogLevelString = Schema.String.pipe(
  Schema.check(Schema.isPattern(/^(trace|debug|info|warn|warning|error|fatal|none)$/i, { message: "must be debug, info, warn or error" })),
  Schema.decodeTo(Schema.Literals(["Trace", "Debug", "Info", "Warn", "Error", "Fatal", "None"]), {
    decode: SchemaGetter.transform((s: string) => {
      const l = s.toLowerCase()
      return (l === "warning" ? "Warn" : l.charAt(0).toUpperCase() + l.slice(1)) as "Trace" | "Debug" | "Info" | "Warn" | "Error" | "Fatal" | "None"
    }),
    encode: SchemaGetter.transform((l: string) => l.toLowerCase())
  })
)

export const LogFormatString = Schema.Literals(["json", "text"])
