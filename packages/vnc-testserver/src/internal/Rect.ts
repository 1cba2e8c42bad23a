// Rectangles and a small dirty-region list, in framebuffer pixels.

export interface Rect {
  readonly x: number
  readonly y: number
  readonly w: number
  readonly h: number
}

export const intersect = (a: Rect, b: Rect): Rect | undefined => {
  const x = Math.max(a.x, b.x)
  const y = Math.max(a.y, b.y)
  const x2 = Math.min(a.x + a.w, b.x + b.w)
  const y2 = Math.min(a.y + a.h, b.y + b.h)
  return x2 > x && y2 > y ? { x, y, w: x2 - x, h: y2 - y } : undefined
}

export const union = (a: Rect, b: Rect): Rect => {
  const x = Math.min(a.x, b.x)
  const y = Math.min(a.y, b.y)
  return { x, y, w: Math.max(a.x + a.w, b.x + b.w) - x, h: Math.max(a.y + a.h, b.y + b.h) - y }
}

const area = (r: Rect): number => r.w * r.h

/**
 * A set of dirty rectangles. Adding a rectangle merges it with any it overlaps or touches when
 * the bounding box wastes little, so a few widgets changing give a few small rectangles rather
 * than one screen-sized one; past a cap everything collapses into the bounding box.
 */
export class Region {
  rects: Array<Rect> = []

  get isEmpty(): boolean {
    return this.rects.length === 0
  }

  add(rect: Rect): void {
    let r = rect
    for (let i = 0; i < this.rects.length;) {
      const other = this.rects[i]!
      const u = union(r, other)
      if (area(u) <= area(r) + area(other) + 64) {
        r = u
        this.rects.splice(i, 1)
        i = 0
      } else {
        i++
      }
    }
    this.rects.push(r)
    if (this.rects.length > 32) this.rects = [this.rects.reduce(union)]
  }

  clear(): void {
    this.rects = []
  }

  /** Removes and returns the parts of the region inside `clip`; parts outside stay. */
  take(clip: Rect): Array<Rect> {
    const taken: Array<Rect> = []
    const kept: Array<Rect> = []
    for (const r of this.rects) {
      const i = intersect(r, clip)
      if (i === undefined) {
        kept.push(r)
        continue
      }
      taken.push(i)
      // the up-to-four pieces of r outside clip
      if (i.y > r.y) kept.push({ x: r.x, y: r.y, w: r.w, h: i.y - r.y })
      if (i.y + i.h < r.y + r.h) kept.push({ x: r.x, y: i.y + i.h, w: r.w, h: r.y + r.h - i.y - i.h })
      if (i.x > r.x) kept.push({ x: r.x, y: i.y, w: i.x - r.x, h: i.h })
      if (i.x + i.w < r.x + r.w) kept.push({ x: i.x + i.w, y: i.y, w: r.x + r.w - i.x - i.w, h: i.h })
    }
    this.rects = kept
    return taken
  }
}
