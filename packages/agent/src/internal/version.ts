// The agent software version, from its package.json, for `hello`.
import pkg from "../../package.json" with { type: "json" }

export const agentVersion: string = pkg.version
