// Synthetic RFB 3.8 streams for recording tests: a server's handshake and updates, a client's handshake and
// messages, for a small 32x16 true-colour framebuffer.
export const WIDTH = 32
export const HEIGHT = 16

const cat = (...parts: ReadonlyArray<ArrayLike<number>>): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}
const u16 = (n: number) => [n >> 8, n & 255]
const u32 = (n: number) => [(n >>> 24) & 255, (n >> 16) & 255, (n >> 8) & 255, n & 255]
const s32 = (n: number) => u32(n >>> 0)
const ascii = (s: string) => [...new TextEncoder().encode(s)]

/** 32 bpp, depth 24, little endian, true colour, max 255, shifts 0/8/16 (what noVNC asks for). */
export const PIXEL_FORMAT = [32, 24, 0, 1, ...u16(255), ...u16(255), ...u16(255), 0, 8, 16, 0, 0, 0]

/** ProtocolVersion, security types [None], SecurityResult OK, ServerInit. */
export const serverHandshake = cat(ascii("RFB 003.008\n"), [1, 1], u32(0), u16(WIDTH), u16(HEIGHT), PIXEL_FORMAT, u32(4), ascii("test"))
/** ProtocolVersion, chosen security None, ClientInit (shared), SetPixelFormat, SetEncodings [Hextile, Raw], a full update request. */
export const clientHandshake = cat(ascii("RFB 003.008\n"), [1], [1])
export const setPixelFormat = cat([0, 0, 0, 0], PIXEL_FORMAT)
export const setEncodings = cat([2, 0], u16(2), s32(5), s32(0))
export const updateRequest = (incremental: boolean) => cat([3, incremental ? 1 : 0], u16(0), u16(0), u16(WIDTH), u16(HEIGHT))
export const keyEvent = (keysym: number, down = true) => cat([4, down ? 1 : 0, 0, 0], u32(keysym))

const rectHeader = (x: number, y: number, w: number, h: number, enc: number) => cat(u16(x), u16(y), u16(w), u16(h), s32(enc))
/** One Raw rectangle filled with `fill`. */
export const rawUpdate = (x: number, y: number, w: number, h: number, fill = 7) =>
  cat([0, 0], u16(1), rectHeader(x, y, w, h, 0), new Uint8Array(w * h * 4).fill(fill))
export const fullRawUpdate = (fill = 7) => rawUpdate(0, 0, WIDTH, HEIGHT, fill)
/** The whole screen in Hextile: every tile a background colour, one with a coloured subrectangle. */
export const fullHextileUpdate = () => {
  const tiles: Array<ArrayLike<number>> = []
  for (let ty = 0; ty < HEIGHT; ty += 16) {
    for (let tx = 0; tx < WIDTH; tx += 16) {
      tiles.push(tx === 0 ? [2 | 8 | 16, 1, 2, 3, 4, 1, 9, 9, 9, 9, 0x11, 0x22] : [2, 5, 6, 7, 8])
    }
  }
  return cat([0, 0], u16(1), rectHeader(0, 0, WIDTH, HEIGHT, 5), ...tiles)
}
/** A CopyRect of the whole screen: repaints it, but from earlier content, so no keyframe. */
export const fullCopyRect = () => cat([0, 0], u16(1), rectHeader(0, 0, WIDTH, HEIGHT, 1), u16(0), u16(0))
export const bell = new Uint8Array([2])
export const serverCutText = (text: string) => cat([3, 0, 0, 0], u32(text.length), ascii(text))
export const tightUpdate = () => cat([0, 0], u16(1), rectHeader(0, 0, 4, 4, 7), [0x80, 0, 0, 0])
export { cat }
