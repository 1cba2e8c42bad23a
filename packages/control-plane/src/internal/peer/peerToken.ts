// Peer tokens: how the replica a viewer reached (B) asks the replica holding the agent (A) to open the session's
// tunnel for a viewer B has already authenticated. Signed with a key derived from CLUSTER_SECRET, bound to one
// session and the viewer's user, valid for PEER_TOKEN_TTL, sent in the PEER_HEADER of the upgrade. The peer
// endpoint reads nothing else: a user JWT, an agent credential or a VNC ticket never verifies as a peer token
// (different header, different key, different `typ`).
import type { SessionId, UserId } from "@streamspace/protocol"
import type { User } from "../../Auth.ts"
import { sign, verify } from "./signing.ts"

/** The upgrade header carrying the peer token. */
export const PEER_HEADER = "x-streamspace-peer-token"
/** A peer token is used at once; a short life bounds what a leaked one is worth. */
export const PEER_TOKEN_TTL_MS = 30_000

export interface PeerClaims {
  readonly sessionId: SessionId
  readonly user: User
  /** The viewer's id in the session's presence list, and the share link it came through, if any. */
  readonly viewerId: string
  readonly linkId: string | undefined
}

export const issuePeerToken = (key: Buffer, claims: PeerClaims, now: number): string =>
  sign(key, {
    typ: "peer-vnc",
    sid: claims.sessionId,
    uid: claims.user.id,
    role: claims.user.role,
    grp: claims.user.groups,
    vid: claims.viewerId,
    ...(claims.linkId === undefined ? {} : { lid: claims.linkId }),
    exp: now + PEER_TOKEN_TTL_MS
  })

const isStrings = (u: unknown): u is ReadonlyArray<string> => Array.isArray(u) && u.every((g) => typeof g === "string")

/** The claims of a valid peer token for `sessionId`, or a message saying why it is refused. */
export const checkPeerToken = (key: Buffer, token: string | undefined, sessionId: string, now: number): PeerClaims | { readonly refused: string } => {
  if (token === undefined || token === "") return { refused: `replica-to-replica endpoint: the ${PEER_HEADER} header is required` }
  const c = verify(key, token)
  if (c === undefined || c.typ !== "peer-vnc" || typeof c.uid !== "string" || (c.role !== "admin" && c.role !== "user") || typeof c.exp !== "number" ||
    !isStrings(c.grp) || typeof c.vid !== "string" || (c.lid !== undefined && typeof c.lid !== "string")) {
    return { refused: "replica-to-replica endpoint: invalid peer token" }
  }
  if (c.exp <= now) return { refused: "replica-to-replica endpoint: the peer token has expired" }
  if (c.sid !== sessionId) return { refused: "replica-to-replica endpoint: the peer token was issued for another session" }
  return { sessionId: c.sid as SessionId, user: { id: c.uid as UserId, role: c.role, groups: c.grp }, viewerId: c.vid, linkId: c.lid }
}
