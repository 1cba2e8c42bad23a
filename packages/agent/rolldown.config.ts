// The agent's production build (`npm run build -w @streamspace/agent`): src/main.ts and every dependency in one
// ESM file, dist/main.mjs, that `node dist/main.mjs` runs with no node_modules next to it. What it saves over
// `node src/main.ts` (bench/results/agent.json): no type stripping at run time, and only the parts of the
// `effect` barrel and @kubernetes/client-node the agent reaches are loaded (roughly half the RSS).
//
// Readable on purpose (no mangling, one module per `// node_modules/...` marker), so stack traces stay useful:
// only comments go (the sources' JSDoc is most of their size), and non-ASCII characters are escaped so V8 keeps
// the ~4 MB source as a one-byte string instead of a two-byte one.
import { fileURLToPath } from "node:url"
import { defineConfig } from "rolldown"

const here = (file: string) => fileURLToPath(new URL(file, import.meta.url))

export default defineConfig({
  input: here("./src/main.ts"),
  platform: "node",
  // ws's and debug's optional add-ons: ws `require`s these inside try/catch and works without them (the image
  // does not install them). External so that a machine that has them installed still never bundles a native addon.
  external: ["bufferutil", "utf-8-validate", "supports-color"],
  logLevel: "warn",
  output: {
    file: here("./dist/main.mjs"),
    format: "esm",
    comments: false,
    minify: { compress: false, mangle: false, codegen: { asciiOnly: true, removeWhitespace: false } }
  }
})
