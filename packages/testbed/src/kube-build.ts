// `npm run kube:build`: builds the test bed's Go tools that are missing from the cache (see goTools.ts).
import { buildGoTools, type GoModule } from "./goTools.ts"

const all: ReadonlyArray<GoModule> = ["kubernetes", "etcd", "kwok", "helm", "jaeger"]
const asked = process.argv.slice(2).filter((a) => a !== "--")
const unknown = asked.filter((a) => !all.includes(a as GoModule))
if (unknown.length > 0) {
  console.error(`unknown module(s) ${unknown.join(", ")}; choose from ${all.join(", ")} (none: all)`)
  process.exit(2)
}
try {
  await buildGoTools(asked.length > 0 ? (asked as Array<GoModule>) : all)
} catch (e) {
  console.error((e as Error).message)
  process.exit(1)
}
