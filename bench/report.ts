/** The text tables: one executable's targets, or a baseline's and a candidate's side by side. */
import type { ScenarioResult, Target } from "./lib/types.ts";

function pad(s: string, n: number): string {
  const len = [...s].length;
  return len >= n ? s : s + " ".repeat(n - len);
}

function fmtValue(t: Pick<Target, "value" | "unit">): string {
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

export function details(results: ScenarioResult[], side?: string): string {
  const out: string[] = [];
  for (const r of results) {
    const bg = r.metrics.background_cores;
    out.push(
      `[${r.name}${side ? `, ${side}` : ""}] ${r.seconds} s${
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

/** What one executable's run gave: the scenarios that ended and those that failed. */
export interface SideOutcome {
  results: ScenarioResult[];
  errors: { name: string; error: string }[];
}

export interface TargetPair {
  id: string;
  label: string;
  bar: string;
  unit: string;
  baseline: number | null;
  baseline_pass: boolean | null;
  candidate: number | null;
  candidate_pass: boolean | null;
}

/** Every target of either side by id, in scenario order (the candidate's, then the baseline's). */
export function pairTargets(baseline: SideOutcome, candidate: SideOutcome): TargetPair[] {
  const b = new Map(baseline.results.flatMap((r) => r.targets).map((t) => [t.id, t]));
  const c = new Map(candidate.results.flatMap((r) => r.targets).map((t) => [t.id, t]));
  const names = [...new Set([...candidate.results, ...baseline.results].map((r) => r.name))];
  const ids: string[] = [];
  for (const name of names) {
    for (const side of [candidate, baseline]) {
      for (const t of side.results.find((r) => r.name === name)?.targets ?? []) {
        if (!ids.includes(t.id)) ids.push(t.id);
      }
    }
  }
  return ids.map((id) => {
    const t = (c.get(id) ?? b.get(id))!;
    return {
      id,
      label: t.label,
      bar: t.bar,
      unit: t.unit,
      baseline: b.get(id)?.value ?? null,
      baseline_pass: b.get(id)?.pass ?? null,
      candidate: c.get(id)?.value ?? null,
      candidate_pass: c.get(id)?.pass ?? null,
    };
  });
}

function pairValue(value: number | null, pass: boolean | null, unit: string): string {
  if (value === null) return "—";
  return `${fmtValue({ value, unit })}${pass === false ? " (MISS)" : ""}`;
}

function pairResult(p: TargetPair, bold: boolean): string {
  if (p.candidate_pass === null) return "—";
  const r = p.candidate_pass ? "PASS" : bold ? "**MISS**" : "MISS";
  if (p.baseline_pass === null || p.baseline_pass === p.candidate_pass) return r;
  return `${r} (was ${p.baseline_pass ? "PASS" : "MISS"})`;
}

function sideErrors(baseline: SideOutcome, candidate: SideOutcome): string[][] {
  const names = [...new Set([...baseline.errors, ...candidate.errors].map((e) => e.name))];
  return names.map((name) => {
    const b = baseline.errors.some((e) => e.name === name);
    const c = candidate.errors.some((e) => e.name === name);
    return [`${name} (scenario failed)`, "", b ? "ERROR" : "", c ? "ERROR" : "", c ? "ERROR" : "—"];
  });
}

/** target | bar | baseline | candidate | result (the candidate's, and the baseline's if it differs). */
export function sideBySide(baseline: SideOutcome, candidate: SideOutcome): string {
  const rows: string[][] = [["target", "bar", "baseline", "candidate", "result"]];
  for (const p of pairTargets(baseline, candidate)) {
    rows.push([
      p.label,
      p.bar,
      pairValue(p.baseline, p.baseline_pass, p.unit),
      pairValue(p.candidate, p.candidate_pass, p.unit),
      pairResult(p, false),
    ]);
  }
  rows.push(...sideErrors(baseline, candidate));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => [...r[i]!].length)));
  const line = (r: string[]) => r.map((c, i) => pad(c, widths[i]!)).join("  ");
  const out = [line(rows[0]!), widths.map((w) => "-".repeat(w)).join("  ")];
  for (const r of rows.slice(1)) out.push(line(r));
  return out.join("\n");
}

/** The side-by-side table as Markdown (for pasting into BENCHMARKS.md). */
export function sideBySideMarkdown(baseline: SideOutcome, candidate: SideOutcome): string {
  const out = [
    "| target | bar | baseline | candidate | result |",
    "| --- | --- | --- | --- | --- |",
  ];
  for (const p of pairTargets(baseline, candidate)) {
    out.push(
      `| ${p.label} | ${p.bar} | ${pairValue(p.baseline, p.baseline_pass, p.unit)} | ${
        pairValue(p.candidate, p.candidate_pass, p.unit)
      } | ${pairResult(p, true)} |`,
    );
  }
  for (const r of sideErrors(baseline, candidate)) out.push(`| ${r.join(" | ")} |`);
  return out.join("\n");
}
