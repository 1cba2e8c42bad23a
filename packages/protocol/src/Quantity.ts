// Kubernetes resource quantities ("500m", "2", "512Mi", "1G"), as they travel in specs and capacity.
import { Schema } from "effect"

const QUANTITY = /^(\d+(?:\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/
const FACTORS: Record<string, number> = {
  "": 1, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60
}

/** The value of a quantity in base units (cores for CPU, bytes for memory); undefined when not a quantity. */
export const parseQuantity = (q: string): number | undefined => {
  const m = QUANTITY.exec(q)
  return m === null ? undefined : Number(m[1]) * FACTORS[m[2] ?? ""]!
}

/** A Kubernetes quantity string such as `500m`, `2`, `512Mi` or `10Gi`. */
export const Quantity = Schema.String.pipe(
  Schema.check(
    Schema.isPattern(QUANTITY, { message: "must be a Kubernetes quantity such as 500m, 2, 512Mi or 10Gi" })
  )
)
