// A template's clipboard switches, enforced by the VNC proxy on real RFB streams: RfbClient viewers through the
// control plane, a real agent and kube-testserver to vnc-testserver. With `download: false` the desktop's
// ServerCutText never reaches the viewer while every update still decodes (Raw, RRE, Hextile at 32 and 16 bpp);
// with `upload: false` the viewer's ClientCutText never reaches the desktop while its keys do. A template with
// both allowed passes both.
import { assert, layer } from "@effect/vitest"
import { Effect } from "effect"
import { ENCODING_EXTENDED_DESKTOP_SIZE, ENCODING_HEXTILE, ENCODING_RAW, ENCODING_RRE, type PixelFormat, type RfbClient } from "@streamspace/vnc-testserver"
import { waitFor } from "@streamspace/testbed"
import * as S from "../support/stack.ts"

const RGB565: PixelFormat = { bitsPerPixel: 16, depth: 16, bigEndian: false, trueColour: true, redMax: 31, greenMax: 63, blueMax: 31, redShift: 11, greenShift: 5, blueShift: 0 }

/** Full updates until the desktop's typed text shows `n` more characters' worth of change (the update path works). */
const updates = (client: RfbClient, times: number) => Effect.promise(async () => {
  for (let i = 0; i < times; i++) await client.update(i % 2 === 1)
})

layer(S.SharedControlPlane.layer(), S.layerOptions)("clipboard policy through the proxy", (it) => {
  it.effect("download off: no ServerCutText, updates intact; upload off: no ClientCutText, keys pass; both on: both pass", () =>
    Effect.gen(function*() {
      const cp = yield* S.SharedControlPlane
      const cluster = yield* S.makeCluster()
      yield* S.startApprovedAgent(cp, S.agentEnv(cluster, cp.wsUrl, "agent-clip"))
      for (const [name, clipboard] of [["nodown", { download: false }], ["noup", { upload: false }]] as const) {
        assert.strictEqual((yield* cp.admin.post("/templates", { name, image: "streamspace/demo-desktop:latest", clipboard })).status, 201)
      }
      const shown = (yield* cp.admin.get("/templates/nodown")).body
      assert.deepStrictEqual(shown.clipboard, { upload: true, download: false })
      const token = S.userToken("clio")
      const clio = S.api(cp.url, token)
      const start = (template: string) =>
        Effect.gen(function*() {
          const id: string = (yield* clio.post("/sessions", { template })).body.id
          yield* S.waitForSession(clio, id, ["running"])
          return id
        })
      const [nodown, noup, open] = [yield* start("nodown"), yield* start("noup"), yield* start("demo")]
      const vnc = cluster.vnc

      yield* Effect.scoped(Effect.gen(function*() {
        // ---- download off, for each encoding and pixel format
        for (const [encoding, pf] of [[ENCODING_RAW, undefined], [ENCODING_RRE, RGB565], [ENCODING_HEXTILE, undefined], [ENCODING_HEXTILE, RGB565]] as const) {
          const { client } = yield* S.openViewer(cp.wsUrl, nodown, token)
          if (pf !== undefined) client.setPixelFormat(pf)
          client.setEncodings([encoding, ENCODING_EXTENDED_DESKTOP_SIZE])
          yield* updates(client, 2)
          yield* vnc.setServerCutText(`desktop text ${encoding}`)
          client.type("k")
          yield* updates(client, 4)
          // The cut text was written before the updates that followed it: it would have arrived first.
          assert.deepStrictEqual(client.cutTexts, [], `no cut text (encoding ${encoding})`)
          assert.isAbove(client.width, 0)
          client.close()
        }

        // ---- both allowed: the cut text arrives
        const both = (yield* S.openViewer(cp.wsUrl, open, token)).client
        yield* updates(both, 1)
        yield* vnc.setServerCutText("for everyone")
        assert.strictEqual(yield* Effect.promise(() => both.waitForCutText(0)), "for everyone")
        both.cutText("uploaded")
        yield* waitFor("the upload", Effect.map(vnc.state, (s) => s.clientCutText === "uploaded"))

        // ---- upload off: the text is dropped, the key after it arrives
        const up = (yield* S.openViewer(cp.wsUrl, noup, token)).client
        yield* updates(up, 1)
        const typed = (yield* vnc.state).typedText.length
        up.cutText("must stay here")
        up.type("z")
        yield* waitFor("the key after the text", Effect.map(vnc.state, (s) => s.typedText.length > typed))
        assert.strictEqual((yield* vnc.state).clientCutText, "uploaded")
        // Download is allowed there.
        yield* vnc.setServerCutText("down is fine")
        assert.strictEqual(yield* Effect.promise(() => up.waitForCutText(0)), "down is fine")
      }))
    }), { timeout: 120_000 })
})
