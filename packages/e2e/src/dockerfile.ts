// Reading a Dockerfile without a Docker engine: its instructions, its final stage, and what that stage runs
// (ENTRYPOINT, ENV, STOPSIGNAL). Shared by the deploy tests and the benchmarks, which start the agent the
// way its image does.
import { readFileSync } from "node:fs"

export interface Instruction {
  readonly op: string
  readonly args: string
}

/** Instructions of a Dockerfile: continuation lines joined, comments dropped, ops upper-cased. */
export const instructions = (file: string): Array<Instruction> =>
  readFileSync(file, "utf8")
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/)
      return { op: op!.toUpperCase(), args: rest.join(" ") }
    })

/** Instructions of the final stage (after the last FROM). */
export const finalStage = (ins: Array<Instruction>): Array<Instruction> => ins.slice(ins.map((i) => i.op).lastIndexOf("FROM"))

export interface ShippedImage {
  readonly entrypoint: ReadonlyArray<string>
  readonly env: Record<string, string>
  readonly stopSignal: string
}

/** ENTRYPOINT (exec form), ENV and STOPSIGNAL of a Dockerfile's final stage. */
export const shippedImage = (file: string): ShippedImage => {
  const final = finalStage(instructions(file))
  const body = (op: string) => final.filter((i) => i.op === op).map((i) => i.args)
  const env: Record<string, string> = {}
  for (const line of body("ENV")) for (const m of line.matchAll(/(\w+)=("[^"]*"|\S+)/g)) env[m[1]!] = m[2]!.replace(/^"|"$/g, "")
  const entrypoint = body("ENTRYPOINT").at(-1)
  if (entrypoint === undefined) throw new Error(`${file}: the final stage has no ENTRYPOINT`)
  return { entrypoint: JSON.parse(entrypoint) as Array<string>, env, stopSignal: body("STOPSIGNAL").at(-1) ?? "SIGTERM" }
}
