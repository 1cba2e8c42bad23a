// WebSocket close codes on the agent connection (and `reconnect`, which viewers see too). 1000-range codes are
// the standard ones; the 4000 range is ours, so an agent can tell "reconnect now" from "back off" from "fix
// your configuration".
export const CloseCode = {
  /** Graceful close. */
  normal: 1000,
  /** The peer is shutting down (agent goodbye, control-plane restart). */
  goingAway: 1001,
  /** A frame over Limits.MAX_FRAME_BYTES. */
  tooBig: 1009,
  /** The control plane failed while admitting the agent; retry later. */
  internal: 1011,
  /** Approval issued a credential: reconnect at once with it. */
  credentialIssued: 4000,
  /**
   * A newer connection with the same agent id took over after this one failed a liveness check (no pong within
   * a few seconds): redial soon, with a short jittered delay (if the newcomer is alive, that dial gets 4007).
   */
  replaced: 4001,
  /** Handshake failed: no common protocol version. */
  protocol: 4002,
  /** Not allowed: bootstrap token for an enrolled agent, rejected, revoked, or another agent's credential. */
  forbidden: 4003,
  /** No `hello` within the handshake timeout. */
  helloTimeout: 4004,
  /** No heartbeat for HEARTBEAT_MISSED_LIMIT x HEARTBEAT_INTERVAL. */
  heartbeatTimeout: 4005,
  /** No pong to the previous transport ping (dead or blackholed link). */
  pingTimeout: 4006,
  /**
   * Refused: another socket of this agent id is connected and answered a ping (for a pending id: the socket
   * that presented the bootstrap token first). Another process may be running with this AGENT_ID; retry soon.
   */
  alreadyConnected: 4007,
  /**
   * Go elsewhere: this control-plane replica is stopping (draining). Reconnect at once, without backoff; the
   * load balancer sends the new connection to another replica. Sent to agents after `goaway` and to viewers
   * (VNC WebSockets) it hands over or refuses while draining; the web UI reconnects and resumes the session.
   */
  reconnect: 4307
} as const
