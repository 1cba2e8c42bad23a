import type { BenchResult } from "./util.ts"
type O = { long: boolean; reps: number; command: string }
export const controlPlaneScale = async (_o: O): Promise<BenchResult> => { throw new Error("not yet") }
export const sessionStart = async (_o: O): Promise<BenchResult> => { throw new Error("not yet") }
export const reconnectStorm = async (_o: O): Promise<BenchResult> => { throw new Error("not yet") }
