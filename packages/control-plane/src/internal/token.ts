// Agent tokens: generation, hashing and constant-time comparison. Credentials are 32 random bytes
// (base64url); only their SHA-256 is stored. A plain hash is enough because the tokens are high-entropy:
// there is nothing to brute-force, and a slow KDF would cost CPU on every agent connect.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto"

/** Hex SHA-256 of a token: what the store keeps. */
export type TokenHash = string

export const newCredential = (): string => randomBytes(32).toString("base64url")

export const hashToken = (token: string): TokenHash => createHash("sha256").update(token, "utf8").digest("hex")

/** Compares two hashes in constant time (both are fixed-length hex SHA-256). */
export const hashesEqual = (a: TokenHash, b: TokenHash): boolean => {
  const x = Buffer.from(a, "hex")
  const y = Buffer.from(b, "hex")
  return x.length === 32 && y.length === 32 && timingSafeEqual(x, y)
}

/** The token of an `Authorization: Bearer <token>` header, or undefined. */
export const bearerToken = (header: string | undefined): string | undefined => {
  if (header === undefined) return undefined
  const m = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header)
  return m === null ? undefined : m[1]
}
