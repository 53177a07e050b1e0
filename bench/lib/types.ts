/** Shapes shared by the scenarios, the table and latest.json. */

export interface Target {
  /** Short id, e.g. "overhead.p50". */
  id: string;
  /** What is measured, for the table. */
  label: string;
  value: number;
  unit: string;
  op: "<=" | ">=";
  limit: number;
  /** How the bar is stated in the issue, e.g. "≤ 20 ms". */
  bar: string;
  pass: boolean;
}

export interface ScenarioResult {
  name: string;
  seconds: number;
  /** Every reported number (small: summaries, not samples). */
  metrics: Record<string, unknown>;
  targets: Target[];
  /** Informational rows for the table (no bar). */
  info: { label: string; value: string }[];
  notes: string[];
}

export interface BenchContext {
  /** The agent executable benchmarked: a private copy of dist/ingest-agent (see bench.ts). */
  bin: string;
  /** The Node binary the executable is built on, when the checkout has it (startup floor). */
  node?: string;
  quick: boolean;
  log: (msg: string) => void;
}

export function target(
  t: Omit<Target, "pass">,
): Target {
  const pass = Number.isFinite(t.value) &&
    (t.op === "<=" ? t.value <= t.limit : t.value >= t.limit);
  return { ...t, pass };
}

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
