// Tunnels through an agent's link. Opening one allocates a tunnel id on that agent, registers the sink and sends
// `vnc_connect` as a `command` frame; the agent's answer (command_completed / command_failed) is matched here by
// command id. None of it goes through the durable command log: a tunnel lives as long as its viewer, so nothing
// about it is persisted, and nothing is redelivered after a reconnect or a restart. Closing the tunnel's scope
// sends `vnc_disconnect` unless the agent closed the tunnel (`vnc_closed`) or went away; a viewer that leaves
// while `vnc_connect` is still out gets its tunnel closed once the agent opens it.
import type { AgentId, BinaryFrame, Command, CommandError, CommandId, CommandResult, PayloadOf, TunnelId } from "@streamspace/protocol"
import { MAX_TUNNEL_ID } from "@streamspace/protocol"
import type { Scope } from "effect"
import { Clock, Deferred, Duration, Effect, FiberSet, Result } from "effect"
import { randomUUID } from "node:crypto"
import { type AgentHubError, type CommandReport, notApproved, notConnected, notFound, type Tunnel, tunnelRefused, type TunnelRequest, type TunnelSink } from "./model.ts"
import { type HubState, type Live, tunnelKey, type TunnelEntry } from "./state.ts"

const allocate = (state: HubState, agentId: AgentId): TunnelId => {
  let next = state.nextTunnelId.get(agentId) ?? 1
  while (state.tunnels.has(tunnelKey(agentId, next))) next = next >= MAX_TUNNEL_ID ? 1 : next + 1
  state.nextTunnelId.set(agentId, next >= MAX_TUNNEL_ID ? 1 : next + 1)
  return next as TunnelId
}

type TunnelCommand = Extract<Command, { readonly action: "vnc_connect" | "vnc_disconnect" }>

/** Sends a tunnel command on `live` and registers it; the answer completes the returned Deferred. */
const send = (state: HubState, agentId: AgentId, live: Live, build: (id: CommandId, deadline: string) => TunnelCommand) =>
  Effect.gen(function*() {
    const id = `vnc-${randomUUID()}` as CommandId
    const deadlineMs = (yield* Clock.currentTimeMillis) + Duration.toMillis(state.config.commandTimeout)
    const done = yield* Deferred.make<Result.Result<CommandResult, CommandError>, AgentHubError>()
    state.requests.set(id, { agentId, done })
    if (live.ended || !(yield* state.sendText(live.out, "command", build(id, new Date(deadlineMs).toISOString())))) {
      state.requests.delete(id)
      return yield* notConnected(agentId)
    }
    return { id, done, deadlineMs }
  })

/**
 * Waits for the answer until the deadline (a timeout is a refusal with code `timeout`, and the request is
 * forgotten). An interrupted wait leaves the request registered for whoever follows it up (see `release`).
 */
const answer = (state: HubState, request: Effect.Success<ReturnType<typeof send>>) =>
  Effect.gen(function*() {
    const left = Math.max(0, request.deadlineMs - (yield* Clock.currentTimeMillis))
    const reply = yield* Deferred.await(request.done).pipe(Effect.timeoutOption(Duration.millis(left)))
    if (reply._tag === "Some") return reply.value
    state.requests.delete(request.id)
    return Result.fail({ code: "timeout" as const, message: "the agent did not answer before the deadline", retryable: true })
  })

/** `vnc_disconnect` for a tunnel the agent has open, in the background (its answer only confirms it). */
export const disconnect = (state: HubState, agentId: AgentId, live: Live, tunnelId: TunnelId) =>
  FiberSet.run(
    state.background,
    send(state, agentId, live, (command_id, deadline) => ({ command_id, deadline, action: "vnc_disconnect", args: { tunnel_id: tunnelId } })).pipe(
      Effect.flatMap((request) => answer(state, request)),
      Effect.flatMap((r) => Result.isFailure(r) ? Effect.logDebug(`AgentHub: vnc_disconnect failed: ${r.failure.code}: ${r.failure.message}`) : Effect.void),
      Effect.catch(() => Effect.void),
      Effect.annotateLogs({ agent_id: agentId, tunnel_id: tunnelId })
    )
  )

/** Unregisters a tunnel when its scope closes, closing it on the agent if it is open there (or once it opens). */
const release = (state: HubState, t: TunnelEntry, live: Live, connect: Effect.Success<ReturnType<typeof send>> | undefined) =>
  Effect.suspend(() => {
    const key = tunnelKey(t.agentId, t.tunnelId)
    if (state.tunnels.get(key) === t) state.tunnels.delete(key)
    const phase = t.phase
    t.phase = "closed"
    if (phase === "open") return Effect.asVoid(disconnect(state, t.agentId, live, t.tunnelId))
    if (phase === "closed" || connect === undefined) return Effect.void
    // Left while vnc_connect was out: the agent may still open the tunnel, so close it once it did.
    return Effect.asVoid(FiberSet.run(
      state.background,
      Effect.gen(function*() {
        const reply = yield* answer(state, connect)
        if (Result.isSuccess(reply)) yield* disconnect(state, t.agentId, live, t.tunnelId)
      }).pipe(Effect.catch(() => Effect.void))
    ))
  })

/**
 * Opens a tunnel to a session on the agent: fails with NotFound / NotConnected / NotApproved for an agent that
 * cannot take one, TunnelRefused with the agent's code when it refuses or does not answer by COMMAND_TIMEOUT.
 */
export const openTunnel = (state: HubState, agentId: AgentId, request: TunnelRequest, sink: TunnelSink): Effect.Effect<Tunnel, AgentHubError, Scope.Scope> =>
  Effect.gen(function*() {
    const entry = state.agents.get(agentId)
    if (entry === undefined) return yield* notFound(agentId)
    const live = entry.live
    if (live === undefined || live.ended) return yield* notConnected(agentId)
    if (!live.approved) return yield* notApproved(agentId)
    const t: TunnelEntry = { agentId, tunnelId: allocate(state, agentId), sessionId: request.sessionId, sink, phase: "connecting", missedBeats: 0 }
    let connect: Effect.Success<ReturnType<typeof send>> | undefined
    yield* Effect.acquireRelease(
      Effect.sync(() => state.tunnels.set(tunnelKey(agentId, t.tunnelId), t)),
      () => release(state, t, live, connect)
    )
    connect = yield* send(state, agentId, live, (command_id, deadline) => ({
      command_id,
      deadline,
      action: "vnc_connect",
      args: { session_id: request.sessionId, tunnel_id: t.tunnelId, window: request.window }
    }))
    const reply = yield* answer(state, connect)
    if (Result.isFailure(reply)) {
      if (t.phase === "connecting") t.phase = "closed"
      return yield* tunnelRefused(reply.failure.code, reply.failure.message)
    }
    if (t.phase === "connecting") t.phase = "open"
    const window = reply.success.action === "vnc_connect" ? reply.success.window : request.window
    return {
      id: t.tunnelId,
      window,
      send: (frame: Uint8Array) =>
        Effect.flatMap(Effect.suspend(() => (live.ended ? Effect.succeed(false) : live.out.send(frame))), (sent) => sent ? Effect.void : Effect.fail(notConnected(agentId)))
    }
  })

/** A binary frame of a tunnel from the agent, to its sink; false when no such tunnel is open (the frame is dropped). */
export const deliverFrame = (state: HubState, agentId: AgentId, live: Live, frame: BinaryFrame): boolean => {
  const t = live.approved ? state.tunnels.get(tunnelKey(agentId, frame.tunnelId)) : undefined
  if (t === undefined) return false
  t.sink.onFrame(frame)
  return true
}

/** The agent's answer to a tunnel command; false when the report is about some other command. */
export const onTunnelReply = (state: HubState, agentId: AgentId, report: CommandReport): Effect.Effect<boolean> =>
  Effect.suspend(() => {
    const id = report.payload.command_id as CommandId
    const pending = state.requests.get(id)
    if (pending === undefined || pending.agentId !== agentId) return Effect.succeed(false)
    if (report.type === "command_ack") return Effect.succeed(true)
    state.requests.delete(id)
    const reply = report.type === "command_completed" ? Result.succeed(report.payload.result) : Result.fail(report.payload.error)
    return Effect.as(Deferred.succeed(pending.done, reply), true)
  })

/** The agent closed a tunnel. */
export const onTunnelClosed = (state: HubState, agentId: AgentId, closed: PayloadOf<"vnc_closed">) =>
  Effect.suspend(() => {
    const t = state.tunnels.get(tunnelKey(agentId, closed.tunnel_id))
    if (t === undefined || t.phase === "closed") return Effect.void
    t.phase = "closed"
    return t.sink.onClosed(closed)
  })

/** The agent's link went away: every tunnel of it ends, every request waiting on it fails. */
export const tunnelsGone = (state: HubState, agentId: AgentId) =>
  Effect.gen(function*() {
    for (const [key, t] of state.tunnels) {
      if (t.agentId !== agentId) continue
      state.tunnels.delete(key)
      t.phase = "closed"
      yield* FiberSet.run(state.background, t.sink.onAgentGone)
    }
    for (const [id, pending] of state.requests) {
      if (pending.agentId !== agentId) continue
      state.requests.delete(id)
      yield* Deferred.fail(pending.done, notConnected(agentId))
    }
  })
