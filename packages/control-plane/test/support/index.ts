// @streamspace/control-plane/test-support: what other packages' tests use to talk to a control plane the way
// an agent or a user would (a fake agent over a real WebSocket, HS256 user tokens) and a throwaway PostgreSQL.
export {
  type Closed,
  connect,
  connectAndHello,
  type ConnectOptions,
  type FakeAgent,
  heartbeatPayload,
  helloPayload,
  Refused
} from "./fakeAgent.ts"
export { sign, TEST_JWT_SECRET } from "./jwt.ts"
export { startPostgres } from "./postgres.ts"
export { startProvider, TEST_CLIENT_ID, TEST_CLIENT_SECRET, type TestAccount, type TestProvider } from "./oidcProvider.ts"
