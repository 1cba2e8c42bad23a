// One sample of every message (and every command action), the source of the golden fixtures.
import type { AnyMessage, MessageType, PayloadOf } from "../src/index.ts"
import { makeMessage } from "../src/index.ts"

const TS = "2026-11-26T12:00:00.000Z"
const status = {
  session_id: "s-4f2a9c",
  phase: "running",
  user_id: "alice",
  template: "demo",
  pod_ip: "10.0.0.12",
  observed_at: TS
} as PayloadOf<"session_status">
const capacity = { cpu: "8000m", memory: "16Gi", max_sessions: 100 }
const spec = {
  user_id: "alice",
  template: "demo",
  image: "streamspace/demo-desktop:1.0",
  resources: { cpu: "500m", memory: "512Mi" },
  env: { TZ: "UTC", VNC_RESOLUTION: "1280x800" },
  persistent_home: true,
  shared_home: false,
  vnc_port: 5900
}
const command = { command_id: "cmd-0001", deadline: "2026-11-26T12:05:00.000Z", traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" }

const m = <T extends MessageType>(type: T, payload: unknown, id = `m-${type}`): AnyMessage =>
  makeMessage(type, payload as PayloadOf<T>, id, TS) as AnyMessage

export const samples: Record<string, AnyMessage> = {
  hello: m("hello", {
    agent_id: "k8s-prod-us-east-1",
    platform: "kubernetes",
    region: "us-east-1",
    version: "0.1.0",
    protocol_versions: ["v1"],
    capacity,
    sessions: [status]
  }),
  welcome: m("welcome", { protocol_version: "v1", enrollment: "approved", draining: false, heartbeat_interval_ms: 30000, link_window: 1048576 }),
  credential: m("credential", { token: "q1w2e3r4t5y6u7i8o9p0a1s2d3f4g5h6" }),
  heartbeat: m("heartbeat", { status: "warning", capacity, active_sessions: 5, active_tunnels: 2, message: "Kubernetes API answered 503 twice in the last minute", tunnel_ids: [17, 18] }),
  command_create_session: m("command", { ...command, action: "create_session", args: { session_id: "s-4f2a9c", spec } }),
  command_delete_session: m("command", { ...command, action: "delete_session", args: { session_id: "s-4f2a9c" } }),
  command_list_sessions: m("command", { ...command, action: "list_sessions", args: {} }),
  command_vnc_connect: m("command", { ...command, action: "vnc_connect", args: { session_id: "s-4f2a9c", tunnel_id: 17, window: 1048576 } }),
  command_vnc_disconnect: m("command", { ...command, action: "vnc_disconnect", args: { tunnel_id: 17 } }),
  command_hibernate_session: m("command", { ...command, action: "hibernate_session", args: { session_id: "s-4f2a9c" } }),
  command_resume_session: m("command", { ...command, action: "resume_session", args: { session_id: "s-4f2a9c", spec } }),
  command_list_homes: m("command", { ...command, action: "list_homes", args: {} }),
  command_delete_home: m("command", { ...command, action: "delete_home", args: { name: "home-alice", user_id: "alice" } }),
  command_set_warm_pools: m("command", {
    ...command,
    action: "set_warm_pools",
    args: { pools: [{ template: "firefox", size: 2, image: "streamspace/firefox:1", resources: { cpu: "1", memory: "2Gi" }, vnc_port: 5900 }] }
  }),
  command_ack: m("command_ack", { command_id: "cmd-0001" }),
  command_completed_create_session: m("command_completed", { command_id: "cmd-0001", result: { action: "create_session", session: { ...status, phase: "creating" } } }),
  command_completed_delete_session: m("command_completed", { command_id: "cmd-0001", result: { action: "delete_session", session_id: "s-4f2a9c" } }),
  command_completed_list_sessions: m("command_completed", { command_id: "cmd-0001", result: { action: "list_sessions", sessions: [status] } }),
  command_completed_vnc_connect: m("command_completed", { command_id: "cmd-0001", result: { action: "vnc_connect", tunnel_id: 17, window: 1048576 } }),
  command_completed_vnc_disconnect: m("command_completed", { command_id: "cmd-0001", result: { action: "vnc_disconnect", tunnel_id: 17 } }),
  command_completed_hibernate_session: m("command_completed", {
    command_id: "cmd-0001",
    result: { action: "hibernate_session", session_id: "s-4f2a9c", home_claim: "home-alice" }
  }),
  command_completed_resume_session: m("command_completed", { command_id: "cmd-0001", result: { action: "resume_session", session: { ...status, phase: "creating" } } }),
  command_completed_list_homes: m("command_completed", {
    command_id: "cmd-0001",
    result: { action: "list_homes", homes: [{ name: "home-alice", user_id: "alice", size: "10Gi", created_at: TS, in_use: true }] }
  }),
  command_completed_set_warm_pools: m("command_completed", { command_id: "cmd-0001", result: { action: "set_warm_pools" } }),
  command_completed_delete_home: m("command_completed", { command_id: "cmd-0001", result: { action: "delete_home", name: "home-alice" } }),
  command_failed: m("command_failed", {
    command_id: "cmd-0001",
    action: "create_session",
    error: { code: "capacity_exceeded", message: "MAX_SESSIONS (100) reached", retryable: true }
  }),
  session_status: m("session_status", { session_id: "s-4f2a9c", phase: "failed", reason: "ImagePullBackOff", message: "Back-off pulling image", observed_at: TS }),
  vnc_closed: m("vnc_closed", { tunnel_id: 17, session_id: "s-4f2a9c", reason: "idle_timeout" }),
  ping: m("ping", { nonce: "n-1" }),
  pong: m("pong", { nonce: "n-1" }),
  drain: m("drain", { draining: true }),
  goaway: m("goaway", { reason: "control plane replica stopping" }),
  goodbye: m("goodbye", { reason: "SIGTERM: shutting down" }),
  error: m("error", { code: "InvalidPayload", message: "invalid heartbeat: payload.capacity.cpu: must be a Kubernetes quantity", ref_id: "m-17" })
}
