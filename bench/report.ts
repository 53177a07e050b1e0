/** The text table and latest.json. */
import type { ScenarioResult, Target } from "./lib/types.ts";

function pad(s: string, n: number): string {
  const len = [...s].length;
  return len >= n ? s : s + " ".repeat(n - len);
}

function fmtValue(t: Target): string {
  return `${t.value}${t.unit && t.unit !== "×" ? ` ${t.unit}` : t.unit === "×" ? " ×" : ""}`;
}

export function table(
  results: ScenarioResult[],
  errors: { name: string; error: string }[],
): string {
  const rows: string[][] = [["target", "bar", "measured", "result"]];
  for (const r of results) {
    for (const t of r.targets) {
      rows.push([t.label, t.bar, fmtValue(t), t.pass ? "PASS" : "MISS"]);
    }
  }
  for (const e of errors) rows.push([`${e.name} (scenario failed)`, "", "", "ERROR"]);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
  const line = (r: string[]) => r.map((c, i) => pad(c, widths[i]!)).join("  ");
  const out = [line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  ")];
  for (const r of rows.slice(1)) out.push(line(r));
  return out.join("\n");
}

export function details(results: ScenarioResult[]): string {
  const out: string[] = [];
  for (const r of results) {
    const bg = r.metrics.background_cores;
    out.push(
      `[${r.name}] ${r.seconds} s${
        bg !== undefined ? `, other processes used up to ${bg} cores meanwhile` : ""
      }`,
    );
    for (const i of r.info) out.push(`  ${i.label}: ${i.value}`);
    for (const n of r.notes) out.push(`  note: ${n}`);
  }
  return out.join("\n");
}

/** Markdown table (for pasting into BENCHMARKS.md). */
export function markdown(results: ScenarioResult[]): string {
  const out = ["| target | bar | measured | result |", "| --- | --- | --- | --- |"];
  for (const r of results) {
    for (const t of r.targets) {
      out.push(`| ${t.label} | ${t.bar} | ${fmtValue(t)} | ${t.pass ? "PASS" : "**MISS**"} |`);
    }
  }
  return out.join("\n");
}
