// A real OpenID provider in the test process: oidc-provider (a certified implementation) with its development
// login and consent pages (any login name, any password; the name picks the account), test accounts with
// groups, a confidential client and RP-initiated logout. Serves on a loopback port.
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

export interface TestProvider {
  readonly issuer: string
  readonly close: () => Promise<void>
  /** Registers the client once the control plane's address is known. */
  readonly start: (client: { readonly redirectUri: string; readonly postLogoutRedirectUri: string }) => void
}

/** Listens first (the issuer URL is needed to configure the control plane); `start` registers the client. */
export const startProvider = async (accounts: Readonly<Record<string, TestAccount>>): Promise<TestProvider> => {
  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined
  const server = createServer((req, res) => {
    if (handler === undefined) {
      res.statusCode = 503
      res.end("provider not started")
    } else handler(req, res)
  })
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
      cookies: { keys: ["test-provider-cookie-key-0123456789abcdef"] }
    })
    provider.on("server_error", (_ctx: unknown, e: Error) => console.error("oidc-provider server_error", e))
    handler = provider.callback()
  }
  return {
    issuer,
    start,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      })
  }
}
