// Entry point of the executable. No top-level await: the bundle is CommonJS (see Makefile).
import process from "node:process";
import v8 from "node:v8";
import { main } from "./cli.ts";

// A log storm makes short-lived garbage at 100+ MB/s; in this mode V8 grows the heap reluctantly,
// which keeps the agent's memory flat (BENCHMARKS.md). Set here rather than as an executable
// flag, so the startup code cache of the single executable stays valid.
v8.setFlagsFromString("--optimize-for-size");

main(process.argv.slice(2)).then(
  (code) => {
    // Exit explicitly once stdout is flushed: a clean stop must not wait on idle keep-alive
    // sockets or timers of libraries.
    process.stdout.write("", () => process.exit(code));
  },
  (err) => {
    process.stderr.write(`ingest-agent: fatal: ${err instanceof Error ? err.message : err}\n`);
    process.exitCode = 1;
  },
);
