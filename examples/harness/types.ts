// Type-level checks of the public API as a harness sees it (tsc --noEmit; nothing runs). Against the published
// .d.ts they prove no `any` leaks out of the packages' entry points and Effect's types come through intact:
// each line fails to compile if a type widened to `any` or lost its error or requirement channel.
import { Agent, AgentConfig, type AgentConfigShape, readAgentConfig } from "@streamspace/agent"
import { ControlPlane, ControlPlaneConfig, type ControlPlaneConfigShape, Sessions } from "@streamspace/control-plane"
import { SessionId, SettingError, type TelemetrySettings } from "@streamspace/protocol"
import { KubeTestServerError, TestCluster, VncTestServerError } from "@streamspace/testkit"
import type { Effect, Layer } from "effect"
import type { main, program } from "./harness.ts"

type IsAny<T> = 0 extends 1 & T ? true : false
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false
type Expect<T extends true> = T
type NotAny<T> = IsAny<T> extends false ? true : false

export type Checks = [
  // Nothing in the entry points is `any`.
  Expect<NotAny<typeof Agent>>,
  Expect<NotAny<typeof Agent.layer>>,
  Expect<NotAny<typeof ControlPlane.layerNoDeps>>,
  Expect<NotAny<ControlPlane["Service"]>>,
  Expect<NotAny<Sessions["Service"]>>,
  Expect<NotAny<TestCluster["Service"]>>,
  Expect<NotAny<AgentConfigShape>>,
  Expect<NotAny<TelemetrySettings>>,
  Expect<NotAny<typeof SessionId>>,
  // Services keep their shapes.
  Expect<Equal<ControlPlane["Service"]["url"], string>>,
  Expect<Equal<AgentConfig["Service"], AgentConfigShape>>,
  Expect<Equal<ControlPlaneConfig["Service"], ControlPlaneConfigShape>>,
  Expect<Equal<TestCluster["Service"]["kubeconfigPath"], string>>,
  // Layers keep what they provide, how they fail and what they need.
  Expect<Equal<Layer.Success<ReturnType<typeof TestCluster.layer>>, TestCluster>>,
  Expect<Equal<Layer.Error<ReturnType<typeof TestCluster.layer>>, KubeTestServerError | VncTestServerError>>,
  Expect<Equal<Layer.Services<ReturnType<typeof TestCluster.layer>>, never>>,
  Expect<Equal<Layer.Services<typeof Agent.layer>, never>>,
  Expect<NotAny<Layer.Error<typeof Agent.layer>>>,
  Expect<SettingError extends Layer.Error<typeof Agent.layer> ? true : false>,
  Expect<Equal<Layer.Services<typeof ControlPlane.layer>, never>>,
  Expect<ControlPlane extends Layer.Success<typeof ControlPlane.layer> ? true : false>,
  Expect<Equal<Effect.Success<typeof readAgentConfig>, AgentConfigShape>>,
  Expect<Equal<Effect.Error<typeof readAgentConfig>, SettingError>>,
  // The harness program: its result, and everything it needs is provided by `main`.
  Expect<Equal<Effect.Success<typeof program>, { sessionId: string; banner: string }>>,
  Expect<Equal<Effect.Services<typeof main>, never>>
]
