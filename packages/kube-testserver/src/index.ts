export { KubeTestServer, KubeTestServerError } from "./KubeTestServer.ts"
export { start } from "./internal/server.ts"
export type {
  Fault,
  FaultRule,
  KubeconfigOptions,
  KubeletOptions,
  KubeTestServerHandle,
  LoadRbacOptions,
  PortForwardTarget,
  ServerOptions,
  UserInfo
} from "./internal/server.ts"
export type { Obj as KubeObject } from "./internal/store.ts"
