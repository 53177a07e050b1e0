/**
 * The folders of src/ are the architecture's layers, bottom to top:
 *
 *   vocabulary (src/*.ts: errors, request, identity, version, timers)
 *   → config → observe → gms → state → run → pool → the command line (src/cli.ts, src/main.ts,
 *   src/commands/: one module per command beside `run`)
 *
 * A module may import its own layer and the layers below it, never one above (tests excepted).
 * This test reads every import of src/ and fails on an upward one, naming both files.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

const SRC = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../../src");

export const LAYERS = ["config", "observe", "gms", "state", "run", "pool"] as const;

/** The layer of a source file: 0 vocabulary, 1..6 the folders, 7 the command line. */
export function layerOf(file: string): number {
  const rel = path.relative(SRC, file);
  const [first, ...rest] = rel.split(path.sep);
  if (rest.length === 0) {
    return first === "cli.ts" || first === "main.ts" ? LAYERS.length + 1 : 0;
  }
  if (first === "commands") return LAYERS.length + 1;
  const i = (LAYERS as readonly string[]).indexOf(first!);
  if (i < 0) throw new Error(`${rel}: a folder that is not a layer (add it to LAYERS)`);
  return i + 1;
}

function layerName(n: number): string {
  return n === 0 ? "vocabulary" : n > LAYERS.length ? "command line" : LAYERS[n - 1]!;
}

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith(".ts") && !p.endsWith("_test.ts") ? [p] : [];
  });
}

const IMPORT = /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*["'](\.{1,2}\/[^"']+)["']/g;

/** Every relative import of src/ that goes up a layer: "a → b (run imports pool)". */
export function upwardImports(files: string[] = sources(SRC)): string[] {
  const out: string[] = [];
  for (const file of files) {
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(IMPORT)) {
      const target = path.resolve(path.dirname(file), m[1]!);
      const from = layerOf(file);
      const to = layerOf(target);
      if (to > from) {
        out.push(
          `${path.relative(SRC, file)} → ${path.relative(SRC, target)} (${
            layerName(from)
          } imports ${layerName(to)})`,
        );
      }
    }
  }
  return out;
}

Deno.test("layers: no module of src/ imports upward across the folders' order", () => {
  assert.deepEqual(upwardImports(), []);
});

Deno.test("layers: the check sees an upward import", () => {
  // run/ importing pool/ is upward; gms/ importing the vocabulary is fine.
  assert.equal(layerOf(path.join(SRC, "run/job.ts")), 5);
  assert.equal(layerOf(path.join(SRC, "pool/agent.ts")), 6);
  assert.equal(layerOf(path.join(SRC, "errors.ts")), 0);
  assert.equal(layerOf(path.join(SRC, "cli.ts")), 7);
  const probe = path.join(SRC, "gms/client.ts");
  const found = upwardImports([probe]);
  assert.deepEqual(found, [], "gms/client.ts imports only downward");
  assert.ok(IMPORT.test('\nimport { Job } from "../run/job.ts";'), "the import pattern matches");
});

Deno.test("layers: no source file in src/ is over 400 lines", () => {
  const long = sources(SRC)
    .map((f) => ({
      file: path.relative(SRC, f),
      lines: readFileSync(f, "utf8").replace(/\n$/, "").split("\n").length,
    }))
    .filter((x) => x.lines > 400);
  assert.deepEqual(long, []);
});

/**
 * The agent's runtime dependencies (README "Dependencies"): what src/ may import besides node:
 * built-ins and itself. graphql, zod and undici were dropped for idle memory (issue 15); graphql
 * stays for the contract test only.
 */
export const RUNTIME_PACKAGES = ["p-queue", "prom-client", "valibot", "yaml"];

Deno.test("layers: src/ imports only the runtime packages the README names", () => {
  const PACKAGE =
    /(?:^|\n)\s*(?:import|export)\b[^;]*?\bfrom\s*["']([^."'][^"']*)["']|import\(\s*["']([^."'][^"']*)["']\s*\)/g;
  const found = new Set<string>();
  for (const file of sources(SRC)) {
    for (const m of readFileSync(file, "utf8").matchAll(PACKAGE)) {
      const name = (m[1] ?? m[2])!;
      if (!name.startsWith("node:")) found.add(name.split("/")[0]!);
    }
  }
  assert.ok(found.has("valibot") && found.has("prom-client"), "the pattern sees the imports");
  assert.deepEqual([...found].filter((p) => !RUNTIME_PACKAGES.includes(p)), []);
});
