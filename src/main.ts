// Entry point of the executable. No top-level await: the bundle is CommonJS (see Makefile).
import process from "node:process";
import { main } from "./cli.ts";

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
