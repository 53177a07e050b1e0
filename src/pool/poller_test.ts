import assert from "node:assert/strict";
import { within } from "../../test/async.ts";
import { AgentError, GmsError } from "../errors.ts";
import type { Fields, Logger } from "../observe/log.ts";
import { Poller } from "./poller.ts";

/** A poller named "poll" whose log is discarded. */
function quietPoller(tick: () => Promise<void>, intervalMs: number, maxBackoffMs: number): Poller {
  return new Poller({ name: "poll", intervalMs, maxBackoffMs, tick, log: recordingLogger([]) });
}

interface Logged {
  level: string;
  msg: string;
  fields: Fields | undefined;
  /** Date.now() when logged (the fake clock's, under fake time). */
  at?: number;
}

function recordingLogger(out: Logged[]): Logger {
  const make = (): Logger => ({
    debug: (msg, fields) => out.push({ level: "debug", msg, fields, at: Date.now() }),
    info: (msg, fields) => out.push({ level: "info", msg, fields }),
    warn: (msg, fields) => out.push({ level: "warn", msg, fields, at: Date.now() }),
    error: (msg, fields) => out.push({ level: "error", msg, fields }),
    with: () => make(),
  });
  return make();
}

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A tick that counts calls and lets the test wait for the n-th one. */
function countingTick(behaviour: (n: number) => Promise<void> | void = () => {}) {
  let count = 0;
  const waiters: { n: number; resolve: () => void }[] = [];
  const tick = async () => {
    count++;
    for (const w of waiters.filter((w) => w.n <= count)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
    await behaviour(count);
  };
  return {
    tick,
    get count() {
      return count;
    },
    reached(n: number): Promise<void> {
      if (count >= n) return Promise.resolve();
      return new Promise((resolve) => waiters.push({ n, resolve }));
    },
  };
}

Deno.test("Poller: the first tick runs immediately and stop() interrupts the wait", async () => {
  const t = countingTick();
  const poller = quietPoller(t.tick, 60_000, 60_000);
  poller.start();
  try {
    await within(t.reached(1), 2_000, "first tick");
  } finally {
    // The loop now waits ~60 s; stop() must not.
    await within(poller.stop(), 2_000, "stop while waiting");
  }
  assert.equal(t.count, 1);
});

Deno.test("Poller: start() twice runs one loop", async () => {
  const t = countingTick();
  const poller = quietPoller(t.tick, 60_000, 60_000);
  poller.start();
  poller.start();
  try {
    await within(t.reached(1), 2_000, "first tick");
    await delay(50);
    assert.equal(t.count, 1);
  } finally {
    await within(poller.stop(), 2_000, "stop");
  }
});

Deno.test("Poller: nudge() triggers an early tick", async () => {
  const t = countingTick();
  const poller = quietPoller(t.tick, 60_000, 60_000);
  poller.start();
  try {
    await within(t.reached(1), 2_000, "first tick");
    poller.nudge();
    await within(t.reached(2), 2_000, "nudged tick");
    poller.nudge();
    await within(t.reached(3), 2_000, "second nudged tick");
  } finally {
    await within(poller.stop(), 2_000, "stop");
  }
});

Deno.test("Poller: a nudge during a running tick runs the next tick right after it", async () => {
  const gate = deferred();
  const t = countingTick((n) => n === 1 ? gate.promise : undefined);
  const poller = quietPoller(t.tick, 60_000, 60_000);
  poller.start();
  try {
    await within(t.reached(1), 2_000, "first tick");
    poller.nudge(); // while tick 1 is still running
    gate.resolve();
    await within(t.reached(2), 2_000, "tick after the nudge");
  } finally {
    gate.resolve();
    await within(poller.stop(), 2_000, "stop");
  }
});

Deno.test("Poller: failures back off exponentially (with injected random) up to the cap", async () => {
  const logged: Logged[] = [];
  const t = countingTick(() => {
    throw new GmsError("GMS_UNAVAILABLE", "poll", "HTTP 503", { status: 503 });
  });
  const poller = new Poller({
    name: "poll",
    intervalMs: 20,
    maxBackoffMs: 200,
    tick: t.tick,
    log: recordingLogger(logged),
    random: () => 0.5,
  });
  poller.start();
  try {
    await within(t.reached(5), 5_000, "five failed ticks");
  } finally {
    await within(poller.stop(), 2_000, "stop");
  }
  assert.ok(poller.errors >= 5);
  const waits = logged.filter((l) => l.msg === "poll failed; retrying").map((l) =>
    l.fields?.retry_in_ms
  );
  // backoffDelay(n, 20, 200, () => 0.5) = 0.75 · min(200, 20·2^n)
  assert.deepEqual(waits.slice(0, 5), [30, 60, 120, 150, 150]);
  // The first failure is a warning, the next ones debug.
  assert.equal(logged.find((l) => l.msg === "poll failed; retrying")!.level, "warn");
  assert.equal(logged.filter((l) => l.msg === "poll failed; retrying")[1]!.level, "debug");
});

Deno.test("Poller: failing ticks come far less often than the interval", async () => {
  const failing = countingTick(() => {
    throw new AgentError("GMS_UNREACHABLE", "down");
  });
  const poller = new Poller({
    name: "poll",
    intervalMs: 20,
    maxBackoffMs: 400,
    tick: failing.tick,
    log: recordingLogger([]),
    random: () => 1,
  });
  poller.start();
  try {
    await delay(700);
  } finally {
    await within(poller.stop(), 2_000, "stop");
  }
  // Without backoff 700 ms at 20 ms would be ~35 ticks; with it the waits are 40, 80, 160,
  // 320, 400 ms, so at most 5 ticks fit.
  assert.ok(failing.count >= 1 && failing.count <= 6, `ticks: ${failing.count}`);
});

Deno.test("Poller: Retry-After from a GmsError makes the next tick wait at least that long", async () => {
  const logged: Logged[] = [];
  const t = countingTick((n) => {
    if (n === 1) {
      throw new GmsError("GMS_RATE_LIMITED", "poll", "HTTP 429", {
        status: 429,
        retryAfterMs: 400,
      });
    }
  });
  const poller = new Poller({
    name: "poll",
    intervalMs: 20,
    maxBackoffMs: 100,
    tick: t.tick,
    log: recordingLogger(logged),
    random: () => 0.5,
  });
  poller.start();
  try {
    await within(t.reached(1), 2_000, "first tick");
    assert.equal(logged.find((l) => l.msg === "poll failed; retrying")?.fields?.retry_in_ms, 400);
    await delay(200);
    assert.equal(t.count, 1, "no tick before Retry-After has passed");
    // A nudge during a failing streak does not bypass the wait.
    poller.nudge();
    await delay(50);
    assert.equal(t.count, 1, "a nudge does not bypass Retry-After");
    await within(t.reached(2), 3_000, "tick after Retry-After");
  } finally {
    await within(poller.stop(), 2_000, "stop");
  }
});

Deno.test("Poller: a success after failures resets the error count and logs the recovery", async () => {
  const logged: Logged[] = [];
  const t = countingTick((n) => {
    if (n <= 2) throw new GmsError("GMS_TIMEOUT", "poll", "slow");
  });
  const poller = new Poller({
    name: "poll",
    intervalMs: 20,
    maxBackoffMs: 50,
    tick: t.tick,
    log: recordingLogger(logged),
    random: () => 0,
  });
  poller.start();
  try {
    await within(t.reached(4), 5_000, "four ticks");
  } finally {
    await within(poller.stop(), 2_000, "stop");
  }
  assert.equal(poller.errors, 0);
  const recovered = logged.find((l) => l.msg === "poll: GMS answers again");
  assert.ok(recovered, JSON.stringify(logged));
  assert.equal(recovered.level, "info");
  assert.equal(recovered.fields?.after_failures, 2);
});

Deno.test("Poller: stop() during a tick waits for the tick to finish, then no more ticks", async () => {
  const gate = deferred();
  let finished = false;
  const t = countingTick(async () => {
    await gate.promise;
    finished = true;
  });
  const poller = quietPoller(t.tick, 10, 10);
  poller.start();
  await within(t.reached(1), 2_000, "first tick");
  let stopped = false;
  const stopping = poller.stop().then(() => stopped = true);
  await delay(30);
  assert.equal(stopped, false, "stop() resolved while the tick was still running");
  gate.resolve();
  await within(stopping, 2_000, "stop after the tick");
  assert.equal(finished, true);
  await delay(50);
  assert.equal(t.count, 1);
});

Deno.test("Poller: stop() before start() resolves", async () => {
  const t = countingTick();
  const poller = quietPoller(t.tick, 10, 10);
  await within(poller.stop(), 1_000, "stop");
  assert.equal(t.count, 0);
});

Deno.test("Poller: stop() interrupts an error backoff wait", async () => {
  const t = countingTick(() => {
    throw new GmsError("GMS_RATE_LIMITED", "poll", "HTTP 429", {
      status: 429,
      retryAfterMs: 60_000,
    });
  });
  const poller = quietPoller(t.tick, 20, 100);
  poller.start();
  await within(t.reached(1), 2_000, "first tick");
  await delay(20); // now waiting out the 60 s Retry-After
  await within(poller.stop(), 2_000, "stop during the backoff");
  assert.equal(t.count, 1);
});

Deno.test("Poller: a nudge during a failing tick does not skip the backoff", async () => {
  const gate = deferred();
  const t = countingTick(async (n) => {
    if (n === 1) {
      await gate.promise;
      throw new GmsError("GMS_RATE_LIMITED", "poll", "HTTP 429", {
        status: 429,
        retryAfterMs: 400,
      });
    }
  });
  const poller = quietPoller(t.tick, 20, 100);
  poller.start();
  try {
    await within(t.reached(1), 2_000, "first tick");
    poller.nudge(); // while the failing tick runs
    gate.resolve();
    await delay(200);
    assert.equal(t.count, 1, "the nudge skipped the Retry-After wait");
    await within(t.reached(2), 3_000, "tick after Retry-After");
  } finally {
    gate.resolve();
    await within(poller.stop(), 2_000, "stop");
  }
});

Deno.test("poller: while GMS is down a /health probe ends a long backoff within 0.8 × max(interval, 5 s); refusals and 429 wait it out", async () => {
  const { installClock, advanceUntil } = await import("../../test/fake_time.ts");
  const clock = installClock();
  try {
    for (
      const [name, error, probes] of [
        ["unreachable", new GmsError("GMS_UNREACHABLE", "discover", "connection refused"), true],
        ["401", new GmsError("GMS_AUTH", "discover", "HTTP 401", { status: 401 }), false],
        ["429", new GmsError("GMS_RATE_LIMITED", "discover", "HTTP 429", { status: 429 }), false],
      ] as const
    ) {
      let up = false;
      let probed = 0;
      let ticks = 0;
      const poller = new Poller({
        name: "poll",
        intervalMs: 1_000,
        maxBackoffMs: 300_000,
        tick: () => {
          ticks++;
          return up ? Promise.resolve() : Promise.reject(error);
        },
        probe: () => {
          probed++;
          return Promise.resolve(up);
        },
        log: recordingLogger([]),
        random: () => 0.99, // the longest backoffs
      });
      poller.start();
      // Eight failures: the backoff is now minutes.
      await advanceUntil(clock, () => ticks >= 8, `${name}: 8 ticks`, {
        maxMs: 3_600_000,
        stepMs: 2_000,
      });
      const backAt = clock.now;
      up = true;
      const took = await advanceUntil(clock, () => ticks >= 9, `${name}: a tick once up`, {
        maxMs: 600_000,
        stepMs: 250,
      });
      await poller.stop();
      if (probes) {
        assert.ok(probed > 0, "probed");
        assert.ok(
          clock.now - backAt <= 4_000 + 250,
          `${name}: retried ${took} ms after GMS came back`,
        );
      } else {
        assert.equal(probed, 0, `${name}: no probe`);
        assert.ok(took > 4_200, `${name}: waited its backoff (${took} ms)`);
      }
    }
  } finally {
    clock.uninstall();
  }
});

Deno.test("poller: a lasting failure is logged at the first error and again at least every 5 minutes", async () => {
  const { installClock, advanceUntil } = await import("../../test/fake_time.ts");
  const clock = installClock();
  const logged: Logged[] = [];
  try {
    const error = new GmsError("GMS_AUTH", "discover", "HTTP 401", { status: 401 });
    const poller = new Poller({
      name: "poll",
      intervalMs: 5_000,
      maxBackoffMs: 300_000,
      tick: () => Promise.reject(error),
      log: recordingLogger(logged),
    });
    poller.start();
    const start = clock.now;
    await advanceUntil(clock, () => clock.now - start >= 30 * 60_000, "30 minutes", {
      maxMs: 31 * 60_000,
      stepMs: 5_000,
    });
    await poller.stop();
    const warns = logged.filter((l) => l.level === "warn" && l.msg === "poll failed; retrying");
    assert.equal(warns[0]?.fields?.failures, 1, "the first failure is a warning");
    const failures = logged.filter((l) => l.msg === "poll failed; retrying").length;
    assert.ok(warns.length < failures, `not every failure: ${warns.length} of ${failures}`);
    const at = warns.map((w) => w.at!);
    at.push(clock.now);
    for (let i = 1; i < at.length; i++) {
      assert.ok(at[i]! - at[i - 1]! <= 5 * 60_000 + 5_000, `a gap of ${at[i]! - at[i - 1]!} ms`);
    }
  } finally {
    clock.uninstall();
  }
});
