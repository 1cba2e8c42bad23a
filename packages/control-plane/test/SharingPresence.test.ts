// The control rules of the presence list, without sockets: who gets control on joining, what a grant, a take,
// a leave and a change of mode or of a share's access do, and that long polls wake at each change.
import { describe, expect, it } from "@effect/vitest"
import { makePresence, type ViewerAccess, type ViewerEntry } from "../src/internal/sharing/presence.ts"

const entry = (id: string, userId: string, access: ViewerAccess, since = 0): ViewerEntry => ({
  id,
  sessionId: "s-1",
  userId,
  access,
  linkId: undefined,
  since: new Date(since),
  control: false,
  requested: false,
  end: () => {}
})

const controllers = (p: ReturnType<typeof makePresence>) => p.snapshot("s-1", "exclusive").controllers

describe("presence and control", () => {
  it("exclusive: the first viewer that may control gets control; view viewers never; a grant moves it; leaving frees it", () => {
    const p = makePresence()
    p.join(entry("v-bob", "bob", "view"), "exclusive")
    expect(controllers(p)).toEqual([])
    p.join(entry("v-cat", "cat", "control", 1), "exclusive")
    p.join(entry("v-ann", "ann", "owner", 2), "exclusive")
    expect(controllers(p)).toEqual(["v-cat"])
    p.give(p.viewer("v-ann")!)
    expect(controllers(p)).toEqual(["v-ann"])
    expect(p.mayInput("v-cat")).toBe(false)
    p.leave("v-ann")
    expect(controllers(p)).toEqual([])
    // Nobody holds it: the next viewer that may control gets it.
    p.join(entry("v-ann2", "ann", "owner", 3), "exclusive")
    expect(controllers(p)).toEqual(["v-ann2"])
    p.take("s-1")
    expect(controllers(p)).toEqual([])
  })

  it("exclusive control belongs to a person: their second viewer (another tab, a reconnect) has it too, and a grant moves it from all of them", () => {
    const p = makePresence()
    p.join(entry("v-ann", "ann", "owner", 1), "exclusive")
    p.join(entry("v-ann-tab", "ann", "owner", 2), "exclusive")
    p.join(entry("v-cat", "cat", "control", 3), "exclusive")
    expect(controllers(p)).toEqual(["v-ann", "v-ann-tab"])
    p.give(p.viewer("v-cat")!)
    expect(controllers(p)).toEqual(["v-cat"])
    p.join(entry("v-cat-tab", "cat", "control", 4), "exclusive")
    expect(controllers(p)).toEqual(["v-cat", "v-cat-tab"])
    p.give(p.viewer("v-ann-tab")!)
    expect(controllers(p)).toEqual(["v-ann", "v-ann-tab"])
  })

  it("shared mode gives control to every viewer that may control; back to exclusive keeps the owner's", () => {
    const p = makePresence()
    p.join(entry("v-cat", "cat", "control", 1), "exclusive")
    p.join(entry("v-ann", "ann", "owner", 2), "exclusive")
    p.join(entry("v-bob", "bob", "view", 3), "exclusive")
    p.setMode("s-1", "shared")
    expect(controllers(p)).toEqual(["v-cat", "v-ann"])
    p.join(entry("v-dan", "dan", "control", 4), "shared")
    expect(p.mayInput("v-dan")).toBe(true)
    p.setMode("s-1", "exclusive")
    expect(controllers(p)).toEqual(["v-ann"])
  })

  it("a share's access changes on the user's open viewers; downgraded viewers lose control and their request", () => {
    const p = makePresence()
    p.join(entry("v-cat", "cat", "control"), "exclusive")
    p.viewer("v-cat")!.requested = true
    p.setAccess("s-1", "cat", "view")
    expect(p.snapshot("s-1", "exclusive").viewers[0]).toMatchObject({ access: "view", control: false, requested: false })
    p.setAccess("s-1", "cat", "control")
    expect(p.viewer("v-cat")!.access).toBe("control")
  })

  it("wakes each waiter once at the next change, with a version that only grows", () => {
    const p = makePresence()
    let woken = 0
    p.onChange("s-1", () => woken++)
    p.join(entry("v-ann", "ann", "owner"), "exclusive")
    const v1 = p.snapshot("s-1", "exclusive").version
    p.join(entry("v-bob", "bob", "view"), "exclusive")
    expect(woken).toBe(1)
    const off = p.onChange("s-1", () => woken++)
    off()
    p.leave("v-bob")
    expect(woken).toBe(1)
    expect(p.snapshot("s-1", "exclusive").version).toBeGreaterThan(v1)
  })
})
