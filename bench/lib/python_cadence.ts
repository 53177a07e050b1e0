/**
 * The Python executor's progress cadence (SPEC §4.6), computed for a given output: every 2 s while
 * the CLI runs it writes the result aspect with the whole buffered log (the last 2,000 lines, cut
 * to the last 0.9 × 4 MiB characters), identical or not (GMS treats an identical one as a no-op,
 * but it is still sent), then one terminal write with the logs and the structured report.
 * Sizes are those of the same aspect JSON the agent sends (`{"value": {...}}`) without the
 * agent's systemMetadata and headers, so the comparison does not favour the agent.
 */

export const PY_HEARTBEAT_MS = 2000;
export const PY_TAIL_LINES = 2000;
export const PY_MAX_CHARS = 3_774_873;

export interface TimedLine {
  /** ms since the CLI was started. */
  t: number;
  text: string;
}

const enc = new TextEncoder();

function pyReport(lines: string[]): string {
  if (lines.length === 0) return "No logs yet";
  let text = lines.slice(-PY_TAIL_LINES).join("\n");
  if (lines.length >= PY_TAIL_LINES || text.length > PY_MAX_CHARS) {
    text = "[earlier logs truncated...]\n" + text.slice(-PY_MAX_CHARS);
  }
  return text;
}

export interface Cadence {
  writes: number;
  bytes: number;
  progressWrites: number;
  progressBytes: number;
  finalBytes: number;
  largestWriteBytes: number;
}

/**
 * `lines` sorted by time; `durationMs` the CLI's run time; `structured` the structured report the
 * terminal write carries (the same one the agent sent).
 */
export function pythonCadence(
  lines: TimedLine[],
  durationMs: number,
  structured: string | undefined,
): Cadence {
  const startTimeMs = 1_800_000_000_000;
  let progressWrites = 0;
  let progressBytes = 0;
  let largest = 0;
  let visible = 0;
  const texts = lines.map((l) => l.text);
  for (let t = PY_HEARTBEAT_MS; t < durationMs; t += PY_HEARTBEAT_MS) {
    while (visible < lines.length && lines[visible]!.t <= t) visible++;
    const report = pyReport(texts.slice(Math.max(0, visible - PY_TAIL_LINES), visible));
    const size = enc.encode(JSON.stringify({
      value: { status: "RUNNING", startTimeMs, durationMs: t, report },
    })).length;
    progressWrites++;
    progressBytes += size;
    largest = Math.max(largest, size);
  }
  const final: Record<string, unknown> = {
    status: "SUCCESS",
    startTimeMs,
    durationMs: Math.round(durationMs),
    report: pyReport(texts.slice(-PY_TAIL_LINES)),
  };
  if (structured !== undefined) {
    final.structuredReport = {
      type: "RUN_INGEST",
      serializedValue: structured,
      contentType: "application/json",
    };
  }
  const finalBytes = enc.encode(JSON.stringify({ value: final })).length;
  largest = Math.max(largest, finalBytes);
  return {
    writes: progressWrites + 1,
    bytes: progressBytes + finalBytes,
    progressWrites,
    progressBytes,
    finalBytes,
    largestWriteBytes: largest,
  };
}

/**
 * Stretches a captured output to `durationMs`: the lines before the first work line, work lines
 * continuing at the same rate and size (numbered on), then the closing lines, shifted.
 */
export function stretchOutput(lines: TimedLine[], durationMs: number): TimedLine[] {
  const isWork = (l: TimedLine) => l.text.includes("Processing work unit");
  const work = lines.filter(isWork);
  const first = lines.findIndex(isWork);
  let last = -1;
  lines.forEach((l, i) => {
    if (isWork(l)) last = i;
  });
  if (work.length < 2 || first < 0) return lines;
  const pre = lines.slice(0, first);
  const post = lines.slice(last + 1);
  const period = (work[work.length - 1]!.t - work[0]!.t) / (work.length - 1);
  const template = work[0]!.text;
  const capturedEnd = lines[lines.length - 1]!.t;
  const shift = durationMs - capturedEnd;
  const out: TimedLine[] = [...pre];
  const workEnd = work[work.length - 1]!.t + shift;
  for (let i = 0, t = work[0]!.t; t <= workEnd; i++, t = work[0]!.t + i * period) {
    out.push({
      t,
      text: template.replace(/work unit \d+/, `work unit ${i + 1}`).slice(0, template.length)
        .padEnd(template.length, "."),
    });
  }
  for (const l of post) out.push({ t: l.t + shift, text: l.text });
  return out;
}
