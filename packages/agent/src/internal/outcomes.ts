// A command's outcome as the control plane receives it (`command_completed` / `command_failed`), how each
// service error becomes a wire error code, and the bounded memory of recent outcomes that answers a
// re-delivered command with its first result.
import type { Command, CommandError, CommandErrorCode, CommandId, CommandResult } from "@streamspace/protocol"
import type { SessionStoreError } from "../SessionStore.ts"
import type { TunnelPoolError } from "../TunnelPool.ts"

export type Outcome =
  | { readonly _tag: "completed"; readonly result: CommandResult }
  | { readonly _tag: "failed"; readonly error: CommandError }

export const completed = (result: CommandResult): Outcome => ({ _tag: "completed", result })

export const failure = (code: CommandErrorCode, message: string, retryable = false): Outcome => ({ _tag: "failed", error: { code, message, retryable } })

export const fromStoreError = (e: SessionStoreError): Outcome => {
  switch (e.reason) {
    case "NotFound":
      return failure("session_not_found", e.message)
    case "Rejected":
      return failure("kubernetes_rejected", e.message)
    case "Forbidden":
      return failure("forbidden", e.message)
    case "Unavailable":
      return failure("kubernetes_unavailable", e.message, true)
    case "CapacityExceeded":
      return failure("capacity_exceeded", e.message, true)
    case "HomeInUse":
      return failure("home_in_use", e.message, true)
  }
}

export const fromTunnelError = (e: TunnelPoolError): Outcome => {
  switch (e.reason) {
    case "SessionNotFound":
      return failure("session_not_found", e.message)
    case "SessionNotRunning":
      return failure("session_not_running", e.message, true)
    case "TooManyTunnels":
      return failure("capacity_exceeded", e.message, true)
    case "PortForwardFailed":
      return failure("tunnel_failed", e.message, true)
    case "DuplicateTunnel":
      return failure("invalid_command", e.message)
  }
}

/** Outcomes of this many recent commands are kept to answer re-deliveries. */
export const OUTCOME_MEMORY = 10_000

/** The last OUTCOME_MEMORY outcomes, oldest forgotten first. */
export class OutcomeMemory {
  private readonly entries = new Map<CommandId, { readonly command: Command; readonly outcome: Outcome }>()

  get(id: CommandId) {
    return this.entries.get(id)
  }

  remember(command: Command, outcome: Outcome): void {
    this.entries.set(command.command_id, { command, outcome })
    if (this.entries.size > OUTCOME_MEMORY) this.entries.delete(this.entries.keys().next().value!)
  }
}
