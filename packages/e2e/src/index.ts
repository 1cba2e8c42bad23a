// @streamspace/e2e: the quick start stack (control plane, agent, simulated demo cluster) as layers.
export { DemoCluster, DemoClusterError, type DemoClusterOptions, type DemoClusterShape, PERSISTED } from "./DemoCluster.ts"
export { AGENT_ID, LocalStack, LocalStackError, type LocalStackOptions, type LocalStackShape } from "./LocalStack.ts"
