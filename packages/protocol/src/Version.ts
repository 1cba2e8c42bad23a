// Protocol version negotiation: `hello` lists what the agent speaks, `welcome` names the one chosen.
import { Result } from "effect"
import { ProtocolError } from "./ProtocolError.ts"

/** Versions this build speaks, newest first. */
export const PROTOCOL_VERSIONS = ["v1"] as const
export type ProtocolVersion = (typeof PROTOCOL_VERSIONS)[number]

/** WebSocket subprotocol of the agent connection. */
export const AGENT_SUBPROTOCOL = "streamspace.v1"

/** Picks the newest version both sides speak, or fails with `NoCommonVersion`. */
export const negotiateVersion = (
  offered: ReadonlyArray<string>,
  supported: ReadonlyArray<string> = PROTOCOL_VERSIONS
): Result.Result<string, ProtocolError> => {
  const chosen = supported.find((v) => offered.includes(v))
  return chosen === undefined
    ? Result.fail(
      new ProtocolError({
        reason: "NoCommonVersion",
        message: `no common protocol version: offered [${offered.join(", ")}], supported [${supported.join(", ")}]`
      })
    )
    : Result.succeed(chosen)
}
