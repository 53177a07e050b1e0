/**
 * `make demo`: the agent end to end on the built-in GMS simulator. Starts the simulator with a few
 * demo requests, runs the agent executable with the fake datahub CLI, prints each request's
 * outcome and duration, and stops by itself.
 *
 *   deno run -A test/demo.ts [--agent dist/ingest-agent]
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { makeFakeCli } from "./fixtures/fake_cli.ts";
import { agentCommand, recipe, testConfig } from "./harness.ts";
import { GmsSimulator } from "./sim/gms_simulator.ts";

const agentFlag = Deno.args.indexOf("--agent");
if (agentFlag >= 0 && Deno.args[agentFlag + 1]) {
  Deno.env.set("AGENT_BIN", Deno.args[agentFlag + 1]!);
}

const dir = await mkdtemp(path.join(os.tmpdir(), "ingest-agent-demo-"));
const sim = await GmsSimulator.start({ secrets: { DEMO_DB_PASSWORD: "s3cr3t-'quoted'\"pass\"" } });
const cli = await makeFakeCli(path.join(dir, "bin"));
const demos = [
  {
    name: "mysql ingestion (succeeds)",
    urn: sim.createRequest({
      args: {
        recipe: JSON.stringify({
          source: {
            type: "mysql",
            config: {
              host_port: "db:3306",
              password: "${DEMO_DB_PASSWORD}",
              fixture: { lines: 8, sleep_ms: 1500 },
            },
          },
          sink: { type: "datahub-rest", config: { server: sim.url } },
        }),
      },
    }),
  },
  {
    name: "ingestion that fails (exit code 1)",
    urn: sim.createRequest({ args: { recipe: recipe({ lines: 3, sleep_ms: 800, exit_code: 1 }) } }),
  },
  {
    name: "test connection (succeeds)",
    urn: sim.createRequest({
      task: "TEST_CONNECTION",
      source: { type: "MANUAL_TEST_CONNECTION" },
      args: { recipe: recipe({}) },
    }),
  },
  {
    name: "unknown task (fails clearly)",
    urn: sim.createRequest({ task: "RUN_ASSERTIONS", args: { recipe: recipe({}) } }),
  },
];

const config = path.join(dir, "agent.yml");
const settings = testConfig(dir, sim, cli.path, {
  agent: { poll_interval: "500ms", heartbeat_interval: "1s" },
  observability: { log_format: "text", log_level: "info" },
});
await writeFile(config, stringify(settings));
const { command, args } = agentCommand();
console.log(
  `GMS simulator at ${sim.url}; ${demos.length} requests waiting. Starting ${command} ${
    args.join(" ")
  }\n`,
);
const agent = new Deno.Command(command, {
  args: [...args, "--config", config],
  stdout: "inherit",
  stderr: "inherit",
}).spawn();

let failed = false;
try {
  await sim.waitFor(
    () => demos.every((d) => (sim.result(d.urn)?.value.status ?? "RUNNING") !== "RUNNING"),
    60_000,
    "every demo request to finish",
  );
} catch (err) {
  failed = true;
  console.error(String(err));
}
agent.kill("SIGTERM");
const status = await agent.status;

console.log("\nOutcome                                       status     duration  GMS writes");
for (const d of demos) {
  const r = sim.result(d.urn)?.value;
  const writes = sim.resultWrites(d.urn).length;
  console.log(
    `${d.name.padEnd(45)} ${(r?.status ?? "PENDING").padEnd(10)} ${
      `${r?.durationMs ?? "-"} ms`.padStart(8)
    }  ${writes}`,
  );
}
const first = sim.result(demos[0]!.urn)?.value.report ?? "";
console.log(
  `\nThe secret was resolved, and masked in the report: ${
    first.includes("s3cr3t") ? "NO (leak!)" : "yes"
  }`,
);
console.log(`Agent exited with code ${status.code}.`);
await sim.close();
await rm(dir, { recursive: true, force: true });
Deno.exit(failed || status.code !== 0 ? 1 : 0);
