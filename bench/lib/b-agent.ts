import type { BenchResult } from "./util.ts"
export const agentFootprint = async (_o: { long: boolean; reps: number; command: string }): Promise<BenchResult> => {
  throw new Error("not yet")
}
