// A real OpenID provider in the test process: oidc-provider (a certified implementation) with its development
// login and consent pages (any login name, any password; the name picks the account), test accounts with
// groups, a confidential client and RP-initiated logout. Serves on a loopback port.
import { decodeJwt, exportJWK, generateKeyPair, type JWTPayload, SignJWT } from "jose"
import Provider from "oidc-provider"
import { createServer, type IncomingMessage, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"

export interface TestAccount {
  readonly name: string
  readonly email: string
  readonly groups: ReadonlyArray<string>
  /** Overrides preferred_username (default: the account id). */
  readonly username?: string
}

export const TEST_CLIENT_ID = "streamspace"
export const TEST_CLIENT_SECRET = "a-client-secret-of-the-test-provider-0123456789"

/** Changes the claims of the ID tokens the token endpoint returns (re-signed with the provider's own key). */
export type IdTokenRewrite = (claims: JWTPayload) => JWTPayload

export interface TestProvider {
  readonly issuer: string
  readonly close: () => Promise<void>
  /** Registers the client once the control plane's address is known. */
  readonly start: (client: { readonly redirectUri: string; readonly postLogoutRedirectUri: string }) => void
  /** From now on, ID tokens from the token endpoint are rewritten (a misbehaving or impersonated provider). */
  readonly rewriteIdTokens: (rewrite: IdTokenRewrite | undefined) => void
}

/** Listens first (the issuer URL is needed to configure the control plane); `start` registers the client. */
export const startProvider = async (accounts: Readonly<Record<string, TestAccount>>): Promise<TestProvider> => {
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  let rewrite: IdTokenRewrite | undefined
  const { privateKey } = await generateKeyPair("RS256", { extractable: true })
  const jwk = { ...(await exportJWK(privateKey)), kid: "test-key", alg: "RS256", use: "sig" }
  const server = createServer((req, res) => {
    if (handler === undefined) {
      res.statusCode = 503
      res.end("provider not started")
      return
    }
    if (rewrite !== undefined && req.url === "/token") interceptTokens(res, rewrite)
    handler(req, res)
  })
  /** Replaces the body of a token response with one whose id_token carries the rewritten claims. */
  const interceptTokens = (res: ServerResponse, change: IdTokenRewrite) => {
    const end = res.end.bind(res)
    res.end = ((chunk?: unknown) => {
      const text = chunk === undefined ? "" : Buffer.from(chunk as Uint8Array).toString("utf8")
      let body: { id_token?: string } | undefined
      try {
        body = JSON.parse(text)
      } catch {}
      if (body?.id_token === undefined) return end(chunk as never)
      const claims = change(decodeJwt(body.id_token))
      void new SignJWT(claims).setProtectedHeader({ alg: "RS256", kid: "test-key" }).sign(privateKey).then((idToken) => {
        const out = JSON.stringify({ ...body, id_token: idToken })
        res.setHeader("content-length", Buffer.byteLength(out))
        end(out)
      })
      return res
    }) as typeof res.end
  }
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const start = (client: { readonly redirectUri: string; readonly postLogoutRedirectUri: string }) => {
    const provider = new Provider(issuer, {
      clients: [{
        client_id: TEST_CLIENT_ID,
        client_secret: TEST_CLIENT_SECRET,
        redirect_uris: [client.redirectUri],
        post_logout_redirect_uris: [client.postLogoutRedirectUri],
        response_types: ["code"],
        grant_types: ["authorization_code"],
        token_endpoint_auth_method: "client_secret_basic"
      }],
      findAccount: (_ctx: unknown, id: string) => {
        const account = accounts[id]
        if (account === undefined) return undefined
        return {
          accountId: id,
          claims: () => ({ sub: id, preferred_username: account.username ?? id, name: account.name, email: account.email, groups: account.groups })
        }
      },
      scopes: ["openid", "profile", "email", "groups"],
      claims: { openid: ["sub"], profile: ["name", "preferred_username"], email: ["email"], groups: ["groups"] },
      features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
      pkce: { required: () => true },
      cookies: { keys: ["test-provider-cookie-key-0123456789abcdef"] },
      jwks: { keys: [jwk] }
    })
    provider.on("server_error", (_ctx: unknown, e: Error) => console.error("oidc-provider server_error", e))
    handler = provider.callback()
  }
  return {
    issuer,
    start,
    rewriteIdTokens: (r) => void (rewrite = r),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
