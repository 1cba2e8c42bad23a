// The synthetic desktop: a 0xRRGGBB framebuffer showing the session name, a clock, a frame counter,
// the text typed so far, the pointer and a mark at every click. Input only changes the model;
// `render` repaints just the character cells and marks that changed and reports them as dirty.
import { CELL_HEIGHT, CELL_WIDTH, GLYPH_HEIGHT, GLYPH_WIDTH, glyphPixel } from "./font.ts"
import { type Rect, Region, intersect } from "./Rect.ts"

export const BACKGROUND = 0x204060
export const TITLE_BAR = 0x102030
export const TEXT = 0xf0f0f0
export const CLOCK = 0xffd040
export const MARK = 0xff4040

export interface Click {
  readonly x: number
  readonly y: number
  /** 1 = left, 2 = middle, 3 = right, ... (bit index + 1 of the RFB button mask). */
  readonly button: number
}

export interface KeyRecord {
  readonly keysym: number
  readonly down: boolean
}

/** What the desktop has seen, for tests. */
export interface DesktopState {
  readonly name: string
  readonly width: number
  readonly height: number
  /** Printable characters typed (key-down), with BackSpace applied; Return adds "\n". */
  readonly typedText: string
  /** The most recent key events, oldest first (at most 256). */
  readonly keys: ReadonlyArray<KeyRecord>
  readonly pointer: { readonly x: number; readonly y: number; readonly buttonMask: number }
  /** Every button press, oldest first (at most 256). */
  readonly clicks: ReadonlyArray<Click>
  /** The last ClientCutText received. */
  readonly clientCutText: string
  /** Number of rendered frames (ticks that changed something). */
  readonly frame: number
}

interface TextWidget {
  readonly x: number
  readonly y: number
  readonly columns: number
  readonly fg: number
  readonly bg: number
  text: string
}

const HISTORY = 256
const MARK_RADIUS = 6

/** Maps an X11 keysym to the character it types, if any. */
export const keysymToChar = (keysym: number): string | undefined => {
  if ((keysym >= 0x20 && keysym <= 0x7e) || (keysym >= 0xa0 && keysym <= 0xff)) return String.fromCharCode(keysym)
  if (keysym >= 0x01000100 && keysym <= 0x0110ffff) return String.fromCodePoint(keysym - 0x01000000)
  if (keysym === 0xff0d || keysym === 0xff8d) return "\n"
  return undefined
}

const pad2 = (n: number): string => String(n).padStart(2, "0")

export class Desktop {
  readonly width: number
  readonly height: number
  readonly name: string
  readonly fb: Uint32Array
  private readonly scale: number
  private readonly dirty = new Region()
  private readonly title: TextWidget
  private readonly clock: TextWidget
  private readonly keysLine: TextWidget
  private readonly pointerLine: TextWidget
  private readonly clipLine: TextWidget
  private readonly widgets: Array<TextWidget>
  private typedText = ""
  private keys: Array<KeyRecord> = []
  private clicks: Array<Click> = []
  private pointer = { x: 0, y: 0, buttonMask: 0 }
  private clientCutText = ""
  private frame = 0

  constructor(width: number, height: number, name: string) {
    this.width = width
    this.height = height
    this.name = name
    this.fb = new Uint32Array(width * height)
    this.scale = width >= 640 && height >= 400 ? 2 : 1
    const cw = CELL_WIDTH * this.scale
    const ch = CELL_HEIGHT * this.scale
    const margin = 4 * this.scale
    const columns = Math.max(1, Math.floor((width - 2 * margin) / cw))
    const line = (row: number, fg: number, bg: number): TextWidget => ({
      x: margin,
      y: margin + row * (ch + margin),
      columns,
      fg,
      bg,
      text: ""
    })
    this.title = line(0, TEXT, TITLE_BAR)
    this.clock = line(1, CLOCK, BACKGROUND)
    this.keysLine = line(2, TEXT, BACKGROUND)
    this.pointerLine = line(3, TEXT, BACKGROUND)
    this.clipLine = line(4, TEXT, BACKGROUND)
    this.widgets = [this.title, this.clock, this.keysLine, this.pointerLine, this.clipLine]
    this.title.text = name
    this.paint({ x: 0, y: 0, w: width, h: height })
  }

  /** The title bar: the first text row plus its margins. */
  private get titleBar(): Rect {
    return { x: 0, y: 0, w: this.width, h: this.title.y + CELL_HEIGHT * this.scale + 4 * this.scale - this.scale }
  }

  /** The same desktop (typed text, keys, clicks, pointer, clipboard, frame count) on a framebuffer of another size. */
  resized(width: number, height: number): Desktop {
    const next = new Desktop(width, height, this.name)
    next.typedText = this.typedText
    next.keys = this.keys.slice()
    next.clicks = this.clicks.filter((c) => c.x < width && c.y < height)
    next.pointer = { x: Math.min(this.pointer.x, width - 1), y: Math.min(this.pointer.y, height - 1), buttonMask: this.pointer.buttonMask }
    next.clientCutText = this.clientCutText
    next.frame = this.frame
    next.paint({ x: 0, y: 0, w: width, h: height })
    return next
  }

  keyEvent(keysym: number, down: boolean): void {
    this.keys.push({ keysym, down })
    if (this.keys.length > HISTORY) this.keys.shift()
    if (!down) return
    if (keysym === 0xff08) this.typedText = this.typedText.slice(0, -1)
    else {
      const ch = keysymToChar(keysym)
      if (ch !== undefined) this.typedText += ch
    }
    if (this.typedText.length > 4096) this.typedText = this.typedText.slice(-4096)
  }

  pointerEvent(x: number, y: number, buttonMask: number): void {
    const pressed = buttonMask & ~this.pointer.buttonMask
    this.pointer = { x, y, buttonMask }
    for (let bit = 0; bit < 8; bit++) {
      if ((pressed & (1 << bit)) === 0) continue
      this.clicks.push({ x, y, button: bit + 1 })
      if (this.clicks.length > HISTORY) this.clicks.shift()
      this.markDirty(this.markRect(x, y))
    }
  }

  cutText(text: string): void {
    this.clientCutText = text
  }

  state(): DesktopState {
    return {
      name: this.name,
      width: this.width,
      height: this.height,
      typedText: this.typedText,
      keys: this.keys.slice(),
      pointer: { ...this.pointer },
      clicks: this.clicks.slice(),
      clientCutText: this.clientCutText,
      frame: this.frame
    }
  }

  /** Brings the text up to date for time `now` and repaints what changed; returns the dirty rectangles. */
  render(now: number): Array<Rect> {
    const d = new Date(now)
    const visible = (s: string, w: TextWidget) => {
      const flat = s.replaceAll("\n", "|")
      return flat.length > w.columns ? flat.slice(flat.length - w.columns) : flat
    }
    const frame = this.frame + 1
    this.setText(this.clock, `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}  frame ${frame}`)
    this.setText(this.keysLine, visible(`keys: ${this.typedText}`, this.keysLine))
    const p = this.pointer
    this.setText(this.pointerLine, `pointer ${p.x},${p.y} buttons ${p.buttonMask}  clicks ${this.clicks.length}`)
    this.setText(this.clipLine, visible(`clipboard: ${this.clientCutText}`, this.clipLine))
    if (this.dirty.isEmpty) return []
    this.frame = frame
    const rects = this.dirty.rects
    this.dirty.clear()
    for (const r of rects) this.paint(r)
    return rects
  }

  private cellRect(w: TextWidget, from: number, to: number): Rect {
    const cw = CELL_WIDTH * this.scale
    return { x: w.x + from * cw, y: w.y, w: (to - from) * cw, h: CELL_HEIGHT * this.scale }
  }

  private markRect(x: number, y: number): Rect {
    const r = MARK_RADIUS * this.scale
    return intersect({ x: x - r, y: y - r, w: 2 * r + 1, h: 2 * r + 1 }, { x: 0, y: 0, w: this.width, h: this.height }) ??
      { x: 0, y: 0, w: 1, h: 1 }
  }

  /** Changes a widget's text, marking dirty only the span of cells that differ. */
  private setText(w: TextWidget, text: string): void {
    const next = text.length > w.columns ? text.slice(0, w.columns) : text
    const prev = w.text
    if (next === prev) return
    const n = Math.max(prev.length, next.length)
    let first = 0
    while (first < n && prev.charCodeAt(first) === next.charCodeAt(first)) first++
    let last = n
    while (last > first && prev.charCodeAt(last - 1) === next.charCodeAt(last - 1)) last--
    w.text = next
    this.markDirty(this.cellRect(w, first, last))
  }

  /** Text rows may run past the bottom of a small framebuffer: keep only the visible part. */
  private markDirty(r: Rect): void {
    const visible = intersect(r, { x: 0, y: 0, w: this.width, h: this.height })
    if (visible !== undefined) this.dirty.add(visible)
  }

  /** Repaints everything inside `clip` from the model. */
  private paint(clip: Rect): void {
    this.fill(clip, BACKGROUND)
    const bar = intersect(clip, this.titleBar)
    if (bar !== undefined) this.fill(bar, TITLE_BAR)
    for (const w of this.widgets) this.drawText(w, clip)
    for (const c of this.clicks) {
      if (intersect(this.markRect(c.x, c.y), clip) !== undefined) this.drawMark(c, clip)
    }
  }

  private fill(r: Rect, colour: number): void {
    for (let y = r.y; y < r.y + r.h; y++) this.fb.fill(colour, y * this.width + r.x, y * this.width + r.x + r.w)
  }

  private drawText(w: TextWidget, clip: Rect): void {
    const s = this.scale
    const area = intersect(clip, this.cellRect(w, 0, w.columns))
    if (area === undefined) return
    const cw = CELL_WIDTH * s
    for (let y = area.y; y < area.y + area.h; y++) {
      const row = Math.floor((y - w.y) / s)
      const rowBase = y * this.width
      for (let x = area.x; x < area.x + area.w; x++) {
        const cell = Math.floor((x - w.x) / cw)
        const col = Math.floor((x - w.x - cell * cw) / s)
        const code = cell < w.text.length ? w.text.charCodeAt(cell) : 0x20
        const on = col < GLYPH_WIDTH && row < GLYPH_HEIGHT && glyphPixel(code, col, row)
        this.fb[rowBase + x] = on ? w.fg : w.bg
      }
    }
  }

  /** A cross centred on the click. */
  private drawMark(c: Click, clip: Rect): void {
    const r = MARK_RADIUS * this.scale
    const t = this.scale
    const area = intersect(clip, this.markRect(c.x, c.y))
    if (area === undefined) return
    for (let y = area.y; y < area.y + area.h; y++) {
      for (let x = area.x; x < area.x + area.w; x++) {
        const dx = Math.abs(x - c.x)
        const dy = Math.abs(y - c.y)
        if ((dx < t && dy <= r) || (dy < t && dx <= r)) this.fb[y * this.width + x] = MARK
      }
    }
  }
}
