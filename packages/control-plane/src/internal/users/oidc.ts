// OpenID Connect, relying-party side, with openid-client (v6): discovery of the provider, the authorization
// request (code flow, PKCE S256, state and nonce), the code exchange with the ID token's checks (issuer,
// audience, signature, nonce, expiry: done by openid-client), the user info, and the provider's logout URL.
// Every failure becomes a UsersError whose message says what to check.
import { UserId as UserIdSchema } from "@streamspace/protocol"
import { Effect, Option, Redacted, Schema } from "effect"
import * as client from "openid-client"
import type { OidcSettings } from "../auth/loginSettings.ts"
import { UsersError } from "./error.ts"

/** Who the provider says logged in. */
export interface OidcIdentity {
  /** `<issuer> <sub>`: the account, stable even if the username changes at the provider. */
  readonly subject: string
  readonly username: string
  readonly displayName: string | undefined
  readonly email: string | undefined
  readonly groups: ReadonlyArray<string>
  readonly idToken: string | undefined
}

/** What one authorization request must remember until its callback. */
export interface AuthorizationRequest {
  readonly url: URL
  readonly state: string
  readonly nonce: string
  readonly codeVerifier: string
}

const DISCOVERY_TIMEOUT_SECONDS = 10
const isUserId = Schema.is(UserIdSchema)

/** The text of a provider or protocol error, with its `error` code and description when the provider sent them. */
const describe = (e: unknown): string => {
  if (e instanceof client.ResponseBodyError || e instanceof client.AuthorizationResponseError) {
    return `${e.error}${e.error_description === undefined ? "" : `: ${e.error_description}`}`
  }
  if (e instanceof client.WWWAuthenticateChallengeError) {
    const p = e.cause[0]?.parameters
    return `HTTP ${e.status} ${p?.error ?? "unauthorized"}${p?.error_description === undefined ? "" : `: ${p.error_description}`}`
  }
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? ` (${e.cause.message})` : ""
    return `${e.message}${cause}`
  }
  return String(e)
}

export const makeOidc = (settings: OidcSettings, groupsClaim: string, redirectUrl: string) => {
  const issuer = new URL(settings.issuerUrl)
  const insecure = issuer.protocol === "http:" // loopback only (loginSettings refuses others)
  let discovered: client.Configuration | undefined

  /** The provider's configuration, discovered once (and again after a failure, at the next login). */
  const configuration = Effect.suspend(() =>
    discovered !== undefined
      ? Effect.succeed(discovered)
      : Effect.tryPromise({
        try: () =>
          client.discovery(
            issuer,
            settings.clientId,
            Option.match(settings.clientSecret, { onNone: () => ({}), onSome: (s) => ({ client_secret: Redacted.value(s) }) }),
            Option.isNone(settings.clientSecret) ? client.None() : client.ClientSecretBasic(Redacted.value(settings.clientSecret.value)),
            { timeout: DISCOVERY_TIMEOUT_SECONDS, ...(insecure ? { execute: [client.allowInsecureRequests] } : {}) }
          ),
        catch: (e) =>
          new UsersError({
            reason: "ProviderUnavailable",
            message: `the OpenID provider at OIDC_ISSUER_URL=${settings.issuerUrl} could not be used: discovery failed: ${describe(e)}`
          })
      }).pipe(Effect.tap((c) => Effect.sync(() => void (discovered = c))))
  )

  const begin = Effect.fn("Oidc.begin")(function*() {
    const config = yield* configuration
    const codeVerifier = client.randomPKCECodeVerifier()
    const state = client.randomState()
    const nonce = client.randomNonce()
    const challenge = yield* Effect.promise(() => client.calculatePKCECodeChallenge(codeVerifier))
    const url = client.buildAuthorizationUrl(config, {
      redirect_uri: redirectUrl,
      scope: settings.scopes.join(" "),
      code_challenge: challenge,
      code_challenge_method: "S256",
      state,
      nonce
    })
    return { url, state, nonce, codeVerifier } satisfies AuthorizationRequest
  })

  const failed = (what: string) => (e: unknown) => {
    const text = describe(e)
    const hint = /invalid_client/.test(text)
      ? " (check OIDC_CLIENT_ID and OIDC_CLIENT_SECRET)"
      : /"iss"|issuer/.test(text)
      ? " (the ID token is from another issuer than OIDC_ISSUER_URL)"
      : /"aud"|audience|azp/.test(text)
      ? " (the ID token is for another client than OIDC_CLIENT_ID)"
      : ""
    return new UsersError({ reason: "LoginFailed", message: `login failed: ${what}: ${text}${hint}` })
  }

  /** Exchanges the callback's code (checking state, PKCE and the ID token), then reads the claims. */
  const finish = Effect.fn("Oidc.finish")(function*(callbackUrl: URL, request: Pick<AuthorizationRequest, "state" | "nonce" | "codeVerifier">) {
    const config = yield* configuration
    const tokens = yield* Effect.tryPromise({
      try: () =>
        client.authorizationCodeGrant(config, callbackUrl, {
          pkceCodeVerifier: request.codeVerifier,
          expectedState: request.state,
          expectedNonce: request.nonce,
          idTokenExpected: true
        }),
      catch: failed("the provider's answer was refused")
    })
    const idClaims = tokens.claims()
    if (idClaims === undefined) return yield* new UsersError({ reason: "LoginFailed", message: "login failed: the provider sent no ID token" })
    // Providers put profile claims (and often groups) in the user info rather than the ID token.
    const info = config.serverMetadata().userinfo_endpoint === undefined
      ? {}
      : yield* Effect.tryPromise({
        try: () => client.fetchUserInfo(config, tokens.access_token, idClaims.sub),
        catch: failed("the user info could not be read")
      })
    const claims: Record<string, unknown> = { ...info, ...idClaims }
    const username = claims[settings.usernameClaim]
    if (typeof username !== "string" || !isUserId(username)) {
      return yield* new UsersError({
        reason: "LoginFailed",
        message: `login failed: the provider's ${JSON.stringify(settings.usernameClaim)} claim (OIDC_USERNAME_CLAIM) is ${
          username === undefined ? "missing" : `${JSON.stringify(String(username).slice(0, 80))}, not a usable user id (letters, digits, '-', '_', '.', at most 63)`
        }`
      })
    }
    const rawGroups = claims[groupsClaim] ?? []
    if (!Array.isArray(rawGroups) || !rawGroups.every((g) => typeof g === "string")) {
      return yield* new UsersError({ reason: "LoginFailed", message: `login failed: the provider's ${JSON.stringify(groupsClaim)} claim (OIDC_GROUPS_CLAIM) is not a list of group names` })
    }
    const text = (k: string) => (typeof claims[k] === "string" ? claims[k] : undefined)
    return {
      subject: `${idClaims.iss} ${idClaims.sub}`,
      username,
      displayName: text("name") ?? username,
      email: text("email"),
      groups: rawGroups,
      idToken: tokens.id_token
    } satisfies OidcIdentity
  })

  /** Where to send the browser to end its session at the provider, when the provider supports it. */
  const endSessionUrl = (idToken: string | undefined, postLogoutRedirect: string) =>
    Effect.map(Effect.option(configuration), (config) => {
      if (Option.isNone(config) || config.value.serverMetadata().end_session_endpoint === undefined) return undefined
      return client.buildEndSessionUrl(config.value, {
        post_logout_redirect_uri: postLogoutRedirect,
        ...(idToken === undefined ? { client_id: settings.clientId } : { id_token_hint: idToken })
      })
    })

  return { configuration, begin, finish, endSessionUrl }
}
