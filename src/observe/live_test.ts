import assert from "node:assert/strict";
import { LiveState } from "./live.ts";

function live() {
  let now = 0;
  const state = new LiveState({
    version: "0.0.0",
    executorId: "default",
    instance: "host-1",
    server: "http://gms",
    slotsMax: 2,
    pollIntervalMs: 1_000,
    monotonic: () => now,
  });
  return { state, advance: (ms: number) => now += ms };
}

Deno.test("live: healthy until the loop starts; then red once it misses max(3 × interval, 2 × backoff)", () => {
  const { state, advance } = live();
  advance(60_000); // recovery at start, `once` reading its set: not a wedged loop
  assert.deepEqual(state.health(), { ok: true });
  state.loopStarted();
  advance(3_000);
  assert.deepEqual(state.health(), { ok: true });
  advance(1);
  const red = state.health();
  assert.equal(red.ok, false);
  assert.match((red as { reason: string }).reason, /wedged/);
  // A failed iteration that backs off 10 s is alive for 20 s.
  state.pollIteration(false, 10_000);
  advance(19_000);
  assert.deepEqual(state.health(), { ok: true }, "GMS down is not a wedged loop");
  advance(1_001);
  assert.equal(state.health().ok, false);
  state.draining();
  assert.deepEqual(state.health(), { ok: true }, "draining stops the loop on purpose");
});

Deno.test("live: ready after an answer; two failures → gms_unreachable; one 401/403 → unauthorized; back on success", () => {
  const { state } = live();
  assert.equal((state.readiness() as { reason: string }).reason, "starting");
  state.gmsExchange("ok");
  assert.deepEqual(state.readiness(), { ready: true });
  state.gmsExchange("failed");
  assert.deepEqual(state.readiness(), { ready: true }, "one failure is not enough");
  state.gmsExchange("failed");
  assert.equal((state.readiness() as { reason: string }).reason, "gms_unreachable");
  state.gmsExchange("ok");
  assert.deepEqual(state.readiness(), { ready: true });
  state.gmsExchange("unauthorized");
  assert.equal((state.readiness() as { reason: string }).reason, "unauthorized");
  state.gmsExchange("ok");
  state.draining();
  assert.equal((state.readiness() as { reason: string }).reason, "draining");
});

Deno.test("live: a memory admission block is on /status (admission.blocked), not on /readyz", () => {
  const { state } = live();
  state.gmsExchange("ok");
  assert.deepEqual(state.status().admission, { blocked: null });
  state.admission("the host's MemAvailable (1.0 GiB) is below agent.min_available_memory");
  assert.deepEqual(state.readiness(), { ready: true });
  assert.match(
    (state.status().admission as { blocked: string }).blocked,
    /min_available_memory/,
  );
  state.runtime("ingestion.datahub_command: cannot start 'datahub': not found");
  assert.match((state.status().admission as { blocked: string }).blocked, /datahub_command/);
  state.runtime(undefined);
  state.admission(undefined);
  assert.deepEqual(state.status().admission, { blocked: null });
});
