/** Order statistics for benchmark samples (nearest-rank percentiles; no interpolation). */

export interface Summary {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

/** Nearest-rank percentile of an already sorted array (p in 0..100). */
export function percentileSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function percentile(values: readonly number[], p: number): number {
  return percentileSorted([...values].sort((a, b) => a - b), p);
}

export function median(values: readonly number[]): number {
  return percentile(values, 50);
}

export function mean(values: readonly number[]): number {
  return values.length === 0 ? NaN : values.reduce((a, b) => a + b, 0) / values.length;
}

export function summarize(values: readonly number[]): Summary {
  const s = [...values].sort((a, b) => a - b);
  return {
    n: s.length,
    min: s[0] ?? NaN,
    p50: percentileSorted(s, 50),
    p90: percentileSorted(s, 90),
    p99: percentileSorted(s, 99),
    max: s[s.length - 1] ?? NaN,
    mean: mean(s),
  };
}

/** Rounds every number of a summary (for the small JSON file and the table). */
export function rounded(s: Summary, digits = 1): Summary {
  const f = 10 ** digits;
  const r = (x: number) => Math.round(x * f) / f;
  return {
    n: s.n,
    min: r(s.min),
    p50: r(s.p50),
    p90: r(s.p90),
    p99: r(s.p99),
    max: r(s.max),
    mean: r(s.mean),
  };
}

/** "p50 12.3 (p90 14, p99 20, min 10, max 25; n=500)" */
export function fmtSummary(s: Summary, unit = "", digits = 1): string {
  const f = (x: number) => `${Number.isFinite(x) ? x.toFixed(digits) : "n/a"}${unit}`;
  return `p50 ${f(s.p50)} (p90 ${f(s.p90)}, p99 ${f(s.p99)}, min ${f(s.min)}, max ${
    f(s.max)
  }; n=${s.n})`;
}
