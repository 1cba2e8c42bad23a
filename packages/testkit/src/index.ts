// @streamspace/testkit: stand-ins for what an integration harness points StreamSpace at, as Effect layers —
// an in-process Kubernetes API server and a VNC desktop (TestCluster wires them together), and an RFB client.
export { TestCluster, type TestClusterOptions, type TestClusterShape } from "./TestCluster.ts"
export * from "@streamspace/kube-testserver"
export {
  RfbClient,
  type RfbClientOptions,
  start as startVncTestServer,
  VncTestServer,
  VncTestServerError,
  type VncTestServerOptions
} from "@streamspace/vnc-testserver"
