/**
 * Kubernetes memory quantities ("512Mi", "1.5Gi", "2G"): the spec's memory sizes and the memory
 * limits of the PostgreSQL container (src/server/memory.ts) are read with this one function.
 */
const QUANTITY = /^([0-9]+(?:\.[0-9]+)?)(?:(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)|e([0-9]+))?$/;
const FACTOR: Record<string, number> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
};

/**
 * Bytes of a Kubernetes memory quantity ("512Mi", "1.5Gi", "2G", "129e6", "1048576"), rounded
 * up to a whole byte; undefined for anything else (a milli-byte "100m" included: no one means
 * that for memory). Written here rather than taken from @kubernetes/client-node, whose
 * quantityToScalar throws on "1.5Gi".
 */
export function parseMemoryQuantity(text: string): number | undefined {
  const m = QUANTITY.exec(text.trim());
  if (!m) return undefined;
  const [, amount, suffix, exponent] = m;
  const factor = suffix ? FACTOR[suffix]! : exponent ? 10 ** Number(exponent) : 1;
  return Math.ceil(Number(amount) * factor);
}
