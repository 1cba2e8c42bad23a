// The login settings: OpenID Connect (OIDC_*) and browser login sessions (LOGIN_*), read by ControlPlaneConfig.
import { DurationString, secretSetting, setting, SettingError } from "@streamspace/protocol"
import { Duration, Effect, Option, type Redacted, Schema } from "effect"

export interface OidcSettings {
  readonly issuerUrl: string
  readonly clientId: string
  /** None: a public client (PKCE only, no client authentication). */
  readonly clientSecret: Option.Option<Redacted.Redacted<string>>
  readonly scopes: ReadonlyArray<string>
  /** The claim whose value becomes the user id (e.g. preferred_username). */
  readonly usernameClaim: string
  /** Where the callback is (OIDC_REDIRECT_URL, else PUBLIC_URL or the listening address + /auth/callback). */
  readonly redirectUrl: string | undefined
  /** The name on the login button. */
  readonly providerName: string
  /** When not empty, only members of one of these groups may log in. */
  readonly allowedGroups: ReadonlyArray<string>
}

export interface LoginSettings {
  readonly oidc: OidcSettings | undefined
  /** The claim of bearer JWTs and ID tokens that lists the user's groups (OIDC_GROUPS_CLAIM). */
  readonly groupsClaim: string
  /** Members of any of these groups are admins (OIDC logins, and bearer JWTs with the groups claim). */
  readonly adminGroups: ReadonlyArray<string>
  /** A browser login ends after this long without a request (renewed while the user is active). */
  readonly idleTimeout: Duration.Duration
  /** A browser login ends this long after it began, active or not. */
  readonly maxLifetime: Duration.Duration
}

const list = (s: string) => s.split(",").map((g) => g.trim()).filter((g) => g !== "")

const isLoopback = (u: URL) => ["127.0.0.1", "localhost", "[::1]"].includes(u.hostname)

export const readLoginSettings: Effect.Effect<LoginSettings, SettingError> = Effect.gen(function*() {
  const text = (name: string, def = "") => setting(name, Schema.String, { default: def, expected: "text" }).pipe(Effect.map((s) => s.trim()))
  const duration = (name: string, def: string) => setting(name, DurationString, { default: def, expected: "a duration such as 30m, 8h" })
  const issuer = yield* text("OIDC_ISSUER_URL")
  const clientId = yield* text("OIDC_CLIENT_ID")
  const clientSecret = yield* secretSetting("OIDC_CLIENT_SECRET")
  const scopes = (yield* text("OIDC_SCOPES", "openid profile email")).split(/[\s,]+/).filter((s) => s !== "")
  const redirect = yield* text("OIDC_REDIRECT_URL")
  const settings: LoginSettings = {
    oidc: undefined,
    groupsClaim: yield* text("OIDC_GROUPS_CLAIM", "groups"),
    adminGroups: list(yield* text("OIDC_ADMIN_GROUPS")),
    idleTimeout: yield* duration("LOGIN_IDLE_TIMEOUT", "30m"),
    maxLifetime: yield* duration("LOGIN_MAX_LIFETIME", "12h")
  }
  const fail = (variable: string, message: string) => Effect.fail(new SettingError({ variable, message }))
  if (Duration.toMillis(settings.idleTimeout) <= 0) return yield* fail("LOGIN_IDLE_TIMEOUT", "LOGIN_IDLE_TIMEOUT must be above zero")
  if (Duration.isGreaterThan(settings.idleTimeout, settings.maxLifetime)) {
    return yield* fail("LOGIN_IDLE_TIMEOUT", `LOGIN_IDLE_TIMEOUT (${Duration.format(settings.idleTimeout)}) is longer than LOGIN_MAX_LIFETIME (${Duration.format(settings.maxLifetime)})`)
  }
  if (issuer === "") {
    if (clientId !== "") return yield* fail("OIDC_ISSUER_URL", "OIDC_CLIENT_ID is set but OIDC_ISSUER_URL is not: set both to enable OpenID Connect login")
    return settings
  }
  if (!URL.canParse(issuer)) return yield* fail("OIDC_ISSUER_URL", `OIDC_ISSUER_URL=${JSON.stringify(issuer)} is invalid: expected a URL such as https://login.example.com/realms/main`)
  const issuerUrl = new URL(issuer)
  // Tokens and the client secret travel to the issuer: plain HTTP only to a provider on this machine (tests).
  if (issuerUrl.protocol !== "https:" && !(issuerUrl.protocol === "http:" && isLoopback(issuerUrl))) {
    return yield* fail("OIDC_ISSUER_URL", `OIDC_ISSUER_URL=${JSON.stringify(issuer)} must be https:// (plain http is accepted for localhost only)`)
  }
  if (clientId === "") return yield* fail("OIDC_CLIENT_ID", "OIDC_CLIENT_ID is required with OIDC_ISSUER_URL (the client id registered at the provider)")
  if (!scopes.includes("openid")) return yield* fail("OIDC_SCOPES", `OIDC_SCOPES=${JSON.stringify(scopes.join(" "))} must include openid`)
  if (redirect !== "" && !URL.canParse(redirect)) {
    return yield* fail("OIDC_REDIRECT_URL", `OIDC_REDIRECT_URL=${JSON.stringify(redirect)} is invalid: expected a URL such as https://streamspace.example.com/auth/callback`)
  }
  return {
    ...settings,
    oidc: {
      issuerUrl: issuer,
      clientId,
      clientSecret,
      scopes,
      usernameClaim: yield* text("OIDC_USERNAME_CLAIM", "preferred_username"),
      redirectUrl: redirect === "" ? undefined : redirect,
      providerName: (yield* text("OIDC_PROVIDER_NAME")) || issuerUrl.host,
      allowedGroups: list(yield* text("OIDC_ALLOWED_GROUPS"))
    }
  }
})
