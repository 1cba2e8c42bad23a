// @streamspace/control-plane: the control plane's services and the ControlPlane layer that composes them.
export {
  AGENT_CONNECT_PATH,
  AgentHub,
  AgentHubError,
  type AgentHubShape,
  type AgentReports,
  type AgentView,
  type AgentViewStatus,
  type EnrollmentState,
  type PresenceEvent,
  type Tunnel,
  type TunnelSink
} from "./AgentHub.ts"
export * as Api from "./Api.ts"
export { type Actor, Audit, AuditError, type AuditShape, type AuditTarget } from "./Audit.ts"
export { Auth, AuthError, type AuthShape, requireAdmin, type Role, type User } from "./Auth.ts"
export { CommandDispatcher, CommandDispatcherError, type CommandOutcome, type CommandRecord, type CommandRequest } from "./CommandDispatcher.ts"
export { ControlPlane, type ControlPlaneShape } from "./ControlPlane.ts"
export * from "./ControlPlaneConfig.ts"
export * as Database from "./Database.ts"
export { Teams, TeamsError, type TeamsShape, type TeamRecord } from "./Teams.ts"
export { type HomeRecord, Homes, HomesError, type HomesShape } from "./Homes.ts"
export * as Observability from "./Observability.ts"
export * as Placement from "./Placement.ts"
export { CreateSessionRequest, CreateTemplateRequest, PatchTemplateRequest, SESSION_STATES, type SessionRecord, Sessions, SessionsError, type TemplateRecord } from "./Sessions.ts"
export { type PresenceJson, type SessionAccess, Sharing, SharingError, type SharingShape, type ViewerAccess } from "./Sharing.ts"
export { decodeRecording, fileStorage, memoryPolicyRepo, type PolicyRepo, type RecordingMeta, type RecordingPolicy, Recordings, RecordingsError, type RecordingsShape, type RecordingStorage, RecordingStorageError, Track } from "./Recordings.ts"
export { type AgentRecord, Store, StoreError } from "./Store.ts"
export { type UserRecord } from "./Store.ts"
export { Users, UsersError, type UsersShape } from "./Users.ts"
export * as UsersApi from "./UsersApi.ts"
export { VNC_PATH, VncProxy, VncProxyError, type VncProxyShape, type VncTicket } from "./VncProxy.ts"
export { Drain, type DrainShape, READYZ_PATH } from "./Drain.ts"
export { AgentLocator, type AgentLocatorShape, type ReplicaAddress } from "./internal/peer/locator.ts"
export { PEER_HEADER } from "./internal/peer/peerToken.ts"
export { PEER_VNC_PATH } from "./internal/peer/bridge.ts"
export { ViewerClose } from "./internal/vnc/relay.ts"
