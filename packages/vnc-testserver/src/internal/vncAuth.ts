// VNC Authentication: the 16-byte challenge encrypted with DES, keyed by the password's first
// eight bytes with the bit order of every byte reversed (a quirk of the original implementation).
import { createCipheriv, randomBytes, timingSafeEqual } from "node:crypto"

const reverseBits = (b: number): number => {
  let r = 0
  for (let i = 0; i < 8; i++) r |= ((b >> i) & 1) << (7 - i)
  return r
}

const vncKey = (password: string): Buffer => {
  const key = Buffer.alloc(8)
  const bytes = Buffer.from(password, "latin1")
  for (let i = 0; i < 8 && i < bytes.length; i++) key[i] = reverseBits(bytes[i]!)
  return key
}

/** DES-ECB of the challenge; single DES is triple DES with three equal keys. */
export const vncAuthResponse = (password: string, challenge: Uint8Array): Buffer => {
  const key = vncKey(password)
  const cipher = createCipheriv("des-ede3-ecb", Buffer.concat([key, key, key]), null)
  cipher.setAutoPadding(false)
  return Buffer.concat([cipher.update(challenge), cipher.final()])
}

export const makeChallenge = (): Buffer => randomBytes(16)

export const checkVncAuth = (password: string, challenge: Uint8Array, response: Uint8Array): boolean =>
  response.length === 16 && timingSafeEqual(vncAuthResponse(password, challenge), response)
