import { describe, expect, it } from "vitest"
import { PROTOCOL_VERSIONS } from "../src/index.ts"
describe("smoke", () => { it("versions", () => { expect(PROTOCOL_VERSIONS).toContain("v1") }) })
