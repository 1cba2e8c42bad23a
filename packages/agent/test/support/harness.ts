// Shared test wiring: agent config from a record, and waiting on streams without fixed sleeps.
import { ConfigProvider, Effect, Layer, Stream } from "effect"
import { createServer } from "node:net"
import type { AddressInfo } from "node:net"
import { AgentConfig, readAgentConfig } from "../../src/AgentConfig.ts"
import type { AgentConfigShape } from "../../src/AgentConfig.ts"

export const TOKEN = "test-token-0123456789"

export const baseEnv = (url: string, extra: Record<string, string> = {}): Record<string, string> => ({
  AGENT_ID: "test-agent",
  CONTROL_PLANE_URL: url,
  AGENT_TOKEN: TOKEN,
  REGION: "eu-test-1",
  ...extra
})

/** AgentConfig from env vars, with fields the environment cannot express (port 0) overridden. */
export const configLayer = (env: Record<string, string>, overrides: Partial<AgentConfigShape> = {}) =>
  Layer.effect(
    AgentConfig,
    readAgentConfig.pipe(
      Effect.map((config): AgentConfigShape => ({ ...config, ...overrides })),
      Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({ env }))),
      Effect.orDie
    )
  )

/** Waits until a status stream emits `value`. */
export const awaitStatus = (status: Stream.Stream<boolean>, value: boolean) =>
  status.pipe(Stream.filter((b) => b === value), Stream.runHead, Effect.asVoid)

/** A TCP port that was free a moment ago (for a child process, whose ports cannot be read back). */
export const freePort = Effect.callback<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const port = (server.address() as AddressInfo).port
    server.close(() => resume(Effect.succeed(port)))
  })
})
