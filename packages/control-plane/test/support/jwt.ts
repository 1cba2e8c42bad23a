// Signs JWTs for auth tests: good ones, expired, not yet valid, wrong key, other algorithms, and `alg: none`.
import { SignJWT, type JWTPayload } from "jose"
import { createSecretKey, generateKeyPairSync } from "node:crypto"

export const TEST_JWT_SECRET = "test-secret-0123456789abcdef0123456789abcdef"
/** The replicas' CLUSTER_SECRET in tests (required with DATABASE_URL; at least 32 bytes). */
export const TEST_CLUSTER_SECRET = "test-cluster-secret-0123456789abcdef0123456789"

export const sign = (
  claims: JWTPayload & { readonly role?: string },
  options: { readonly secret?: string; readonly alg?: string; readonly expiresIn?: number; readonly nowSec?: number } = {}
): Promise<string> => {
  const now = options.nowSec ?? Math.floor(Date.now() / 1000)
  const alg = options.alg ?? "HS256"
  const jwt = new SignJWT(claims).setProtectedHeader({ alg, typ: "JWT" }).setIssuedAt(now)
  if (claims.exp === undefined) jwt.setExpirationTime(now + (options.expiresIn ?? 3600))
  if (alg.startsWith("HS")) return jwt.sign(createSecretKey(Buffer.from(options.secret ?? TEST_JWT_SECRET)))
  if (alg === "RS256") return jwt.sign(generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey)
  throw new Error(`unsupported test alg ${alg}`)
}

/** An unsecured JWT (`alg: none`), as an attacker would send it. */
export const unsecured = (claims: JWTPayload & { readonly role?: string }): string => {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url")
  return `${part({ alg: "none", typ: "JWT" })}.${part({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}.`
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })
