// A bounded memory of JWTs that passed verification, so a client sending the same token on every request pays
// for the signature check once (WebCrypto's HMAC, or a JWKS key's signature, plus jose's claim checks: ~4 % of
// the control plane's CPU in a burst of creates). Kept by the SHA-256 of the token (the memory holds no usable
// credential) until the token's `exp`, never longer: past `exp` the token goes through the full check again,
// which refuses it (or accepts it within the clock tolerance, as before). Only successes are remembered; what
// is checked on every request anyway (a disabled user: Auth.checkEnabled) stays out of it. A token verified
// against a JWKS key stays accepted until its `exp` if the key is withdrawn meanwhile, which JWT_MAX_TTL bounds.
import { createHash } from "node:crypto"

export interface VerifiedTokens<A> {
  /** What the token verified as, while `nowSec` is before its `exp`. */
  readonly get: (token: string, nowSec: number) => A | undefined
  /** Remembers a verified token until `exp` (seconds since the epoch). */
  readonly set: (token: string, exp: number, value: A) => void
}

/** Tokens kept at most (a full memory drops its oldest entry). */
export const VERIFIED_TOKENS_MAX = 10_000

export const makeVerifiedTokens = <A>(max = VERIFIED_TOKENS_MAX): VerifiedTokens<A> => {
  const entries = new Map<string, { readonly exp: number; readonly value: A }>()
  const key = (token: string) => createHash("sha256").update(token).digest("base64url")
  return {
    get: (token, nowSec) => {
      const k = key(token)
      const e = entries.get(k)
      if (e === undefined) return undefined
      if (nowSec < e.exp) return e.value
      entries.delete(k)
      return undefined
    },
    set: (token, exp, value) => {
      const k = key(token)
      entries.delete(k)
      if (entries.size >= max) entries.delete(entries.keys().next().value!)
      entries.set(k, { exp, value })
    }
  }
}
