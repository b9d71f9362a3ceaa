/**
 * The Prometheus text exposition format, just enough to read the operator's and the
 * kube-apiserver's /metrics: samples, sums over label matches, and histogram quantiles
 * computed like PromQL's histogram_quantile (linear interpolation inside the bucket).
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseProm(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3]) {
      for (const l of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
        labels[l[1]!] = l[2]!.replace(/\\(.)/g, "$1");
    }
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

function matches(s: Sample, name: string, match: Record<string, string | RegExp>): boolean {
  if (s.name !== name) return false;
  return Object.entries(match).every(([k, v]) =>
    typeof v === "string" ? s.labels[k] === v : v.test(s.labels[k] ?? ""),
  );
}

export function sumOf(samples: readonly Sample[], name: string, match: Record<string, string | RegExp> = {}): number {
  return samples.filter((s) => matches(s, name, match)).reduce((a, s) => a + s.value, 0);
}

/** The samples of `name` grouped by one label, summed. */
export function sumBy(
  samples: readonly Sample[],
  name: string,
  label: string,
  match: Record<string, string | RegExp> = {},
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const s of samples)
    if (matches(s, name, match)) out[s.labels[label] ?? ""] = (out[s.labels[label] ?? ""] ?? 0) + s.value;
  return out;
}

export interface Histogram {
  /** Cumulative counts by upper bound, ascending, +Inf last. */
  buckets: Array<{ le: number; count: number }>;
  count: number;
  sum: number;
}

export function histogramOf(
  samples: readonly Sample[],
  name: string,
  match: Record<string, string | RegExp> = {},
): Histogram {
  const byLe = new Map<number, number>();
  for (const s of samples) {
    if (!matches(s, `${name}_bucket`, match)) continue;
    const le = s.labels.le === "+Inf" ? Number.POSITIVE_INFINITY : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) ?? 0) + s.value);
  }
  return {
    buckets: [...byLe.entries()].sort((a, b) => a[0] - b[0]).map(([le, count]) => ({ le, count })),
    count: sumOf(samples, `${name}_count`, match),
    sum: sumOf(samples, `${name}_sum`, match),
  };
}

/** after − before, bucket by bucket (both from the same process). */
export function histogramDelta(before: Histogram, after: Histogram): Histogram {
  const prior = new Map(before.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: after.buckets.map((b) => ({ le: b.le, count: b.count - (prior.get(b.le) ?? 0) })),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}

/** histogram_quantile(q, …): NaN without observations. */
export function histogramQuantile(h: Histogram, q: number): number {
  const total = h.buckets.at(-1)?.count ?? 0;
  if (total === 0) return Number.NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of h.buckets) {
    if (b.count >= rank) {
      if (!Number.isFinite(b.le)) return prevLe; // in +Inf: the highest finite bound, as PromQL does
      if (b.count === prevCount) return b.le;
      return prevLe + ((b.le - prevLe) * (rank - prevCount)) / (b.count - prevCount);
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}

/** The smallest bucket bound that holds at least a fraction q of the observations: an upper bound on the quantile. */
export function histogramQuantileBound(h: Histogram, q: number): number {
  const total = h.buckets.at(-1)?.count ?? 0;
  if (total === 0) return Number.NaN;
  for (const b of h.buckets) if (b.count >= q * total) return b.le;
  return Number.POSITIVE_INFINITY;
}
