// Signed tokens any replica can check: base64url(JSON claims) "." base64url(HMAC-SHA256). Each purpose (VNC
// tickets, peer tokens) signs with its own key derived from CLUSTER_SECRET, so a token of one purpose never
// verifies as another. Claims carry their own expiry (`exp`, ms since the epoch) and purpose (`typ`).
import { Option, Redacted } from "effect"
import { createHmac, randomBytes, timingSafeEqual } from "node:crypto"

export type Purpose = "vnc-ticket" | "peer-vnc"

/** The key of one purpose: HMAC(CLUSTER_SECRET, purpose), or a random per-process key without a cluster secret. */
export const deriveKey = (clusterSecret: Option.Option<Redacted.Redacted<string>>, purpose: Purpose): Buffer =>
  Option.match(clusterSecret, {
    onNone: () => randomBytes(32),
    onSome: (secret) => createHmac("sha256", Redacted.value(secret)).update(`streamspace/${purpose}`).digest()
  })

const mac = (key: Buffer, body: string) => createHmac("sha256", key).update(body).digest()

export const sign = (key: Buffer, claims: object): string => {
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url")
  return `${body}.${mac(key, body).toString("base64url")}`
}

/** The claims of a token signed with `key`, or undefined when it is malformed or its signature does not match. */
export const verify = (key: Buffer, token: string): Record<string, unknown> | undefined => {
  if (token.length > 4096) return undefined
  const dot = token.indexOf(".")
  if (dot <= 0) return undefined
  const body = token.slice(0, dot)
  const given = Buffer.from(token.slice(dot + 1), "base64url")
  const expected = mac(key, body)
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined
  try {
    const claims: unknown = JSON.parse(Buffer.from(body, "base64url").toString("utf8"))
    return typeof claims === "object" && claims !== null && !Array.isArray(claims) ? claims as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}
