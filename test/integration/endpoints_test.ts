/**
 * The agent's endpoints (issue 10, part): /healthz, /readyz, /status and /metrics on
 * observability.listen, through the executable and the simulator.
 */
import assert from "node:assert/strict";
import parsePrometheusTextFormat from "parse-prometheus-text-format";
import { recipe, setup, terminal } from "../harness.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
type S = Awaited<ReturnType<typeof setup>>;

async function address(agent: { logs(): { msg: string; address?: unknown }[] }, s: S) {
  const line = await s.sim.waitFor(
    () => agent.logs().find((l) => l.msg === "endpoints listening"),
    15_000,
    "endpoints listening",
  );
  return `http://${line.address}`;
}

async function get(base: string, path: string) {
  const res = await fetch(base + path);
  return { status: res.status, text: await res.text() };
}

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const families = parsePrometheusTextFormat(text) as {
    name: string;
    metrics: { value?: string; labels?: Record<string, string> }[];
  }[];
  const family = families.find((f) => f.name === name);
  assert.ok(family, `${name} is exposed`);
  const m = family.metrics.find((x) =>
    Object.entries(labels).every(([k, v]) => x.labels?.[k] === v)
  );
  return Number(m?.value ?? 0);
}

Deno.test("endpoints: healthz, readyz (GMS down and back), status with runs, metrics moving; no secret", async () => {
  const secret = "endpoint-secret-value-77";
  await using s = await setup({ sim: { secrets: { PW: secret } } });
  const slow = [1, 2].map(() =>
    s.sim.createRequest({
      args: {
        recipe: recipe({ sleep_ms: 4_000, lines_per_second: 5 }, { config: { pw: "${PW}" } }),
      },
    })
  );
  await using a = await s.startAgent({ observability: { listen: "127.0.0.1:0" } });
  const base = await address(a, s);
  assert.equal((await get(base, "/healthz")).status, 200);
  await until(async () => (await get(base, "/readyz")).status === 200 || undefined, "ready");
  const status = await until(async () => {
    const st = JSON.parse((await get(base, "/status")).text);
    return st.runs.length === 2 && st.runs.every((r: { pid: unknown }) => r.pid) ? st : undefined;
  }, "two runs in /status");
  assert.equal(status.executor_id, "default");
  assert.deepEqual(status.slots, { max: 4, used: 2 });
  assert.equal(status.runs[0].task, "RUN_INGEST");
  assert.equal(status.runs[0].source_type, "fake");
  assert.equal(status.last_poll.ok, true);
  assert.equal(status.gms.discovery, "search");
  assert.equal(typeof status.outbox.pending, "number");
  for (const path of ["/status", "/metrics", "/healthz", "/readyz"]) {
    const body = (await get(base, path)).text;
    assert.ok(!body.includes(secret) && !body.includes(s.sim.token), `no secret in ${path}`);
  }
  for (const u of slow) assert.equal((await terminal(s.sim, u, 20_000)).status, "SUCCESS");
  const failing = s.sim.createRequest({ args: { recipe: recipe({ exit_code: 1 }) } });
  assert.equal((await terminal(s.sim, failing)).status, "FAILURE");
  const metrics = await until(async () => {
    const text = (await get(base, "/metrics")).text;
    return sample(text, "ingest_agent_runs_total", { status: "FAILURE" }) >= 1 ? text : undefined;
  }, "metrics");
  assert.equal(
    sample(metrics, "ingest_agent_runs_total", { task: "RUN_INGEST", status: "SUCCESS" }),
    2,
  );
  assert.ok(sample(metrics, "ingest_agent_claims_total", { outcome: "won" }) >= 3);
  assert.ok(sample(metrics, "ingest_agent_polls_total", { outcome: "ok" }) >= 1);
  assert.equal(sample(metrics, "ingest_agent_slots_max"), 4);
  assert.ok(sample(metrics, "ingest_agent_log_bytes_total") > 0);
  assert.ok(sample(metrics, "process_resident_memory_bytes") > 0);
  assert.ok(
    sample(metrics, "ingest_agent_gms_requests_total", {
      operation: "writeResult",
      outcome: "ok",
    }) > 0,
  );

  // GMS down: readyz turns 503 gms_unreachable, healthz stays 200; back: 200 again.
  await s.sim.goDown();
  const down = await until(async () => {
    const r = await get(base, "/readyz");
    return r.status === 503 ? r : undefined;
  }, "readyz 503");
  assert.equal(JSON.parse(down.text).reason, "gms_unreachable");
  assert.equal((await get(base, "/healthz")).status, 200, "GMS down does not make it unhealthy");
  await s.sim.comeBack();
  await until(
    async () => (await get(base, "/readyz")).status === 200 || undefined,
    "ready again",
    30_000,
  );
  a.signal("SIGTERM");
  await a.exited;
});

Deno.test("endpoints: a refused token makes readyz 503 unauthorized", async () => {
  await using s = await setup();
  await using a = await s.startAgent({
    datahub: { token: "wrong-token" },
    observability: { listen: "127.0.0.1:0" },
  });
  const base = await address(a, s);
  const r = await until(async () => {
    const x = await get(base, "/readyz");
    return x.status === 503 && JSON.parse(x.text).reason === "unauthorized" ? x : undefined;
  }, "unauthorized");
  assert.match(r.text, /datahub\.token/);
});

Deno.test("endpoints: a port in use is a start-up error (exit 2)", async () => {
  await using s = await setup();
  const a = await s.startAgent({ observability: { listen: "127.0.0.1:0" } });
  const taken = (await address(a, s)).replace("http://", "");
  const b = await s.startAgent({ observability: { listen: taken } });
  const exit = await b.exited;
  assert.equal(exit.code, 2);
  assert.match(b.stdout, /port is in use/);
  await a.stop();
});
