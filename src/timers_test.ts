import assert from "node:assert/strict";
import { installClock } from "../test/fake_time.ts";
import { longTimeout, MAX_TIMER_MS, sleep } from "./timers.ts";

Deno.test("fake clock: performance.now() is faked; setSystemTime moves Date only", async () => {
  const clock = installClock();
  try {
    const mono = performance.now();
    const wall = Date.now();
    await clock.tickAsync(1_234);
    assert.equal(performance.now() - mono, 1_234, "performance.now() is faked");
    assert.equal(Date.now() - wall, 1_234, "Date is faked");
    clock.setSystemTime(wall - 3_600_000);
    assert.equal(Date.now(), wall - 3_600_000, "the wall clock stepped back");
    assert.equal(performance.now() - mono, 1_234, "the monotonic clock did not");
  } finally {
    clock.uninstall();
  }
});

Deno.test("fake clock: a plain setTimeout above 2^31-1 ms fires at once", async () => {
  const clock = installClock();
  try {
    let fired = 0;
    setTimeout(() => fired++, MAX_TIMER_MS + 10);
    await clock.tickAsync(5);
    assert.equal(fired, 1, "the fake emulates the runtime's overflow, so the next test can fail");
  } finally {
    clock.uninstall();
  }
});

Deno.test("longTimeout: above 2^31-1 ms it does not fire early, and fires once", async () => {
  const clock = installClock();
  try {
    const due = 2 ** 31 + 5_000;
    let fired = 0;
    longTimeout(() => fired++, due);
    await clock.tickAsync(1);
    assert.equal(fired, 0, "not after 1 ms");
    await clock.tickAsync(2 ** 31 - 1);
    assert.equal(fired, 0, "not after 2^31 ms");
    await clock.tickAsync(due - 2 ** 31 - 1);
    assert.equal(fired, 0, "not 1 ms before it is due");
    await clock.tickAsync(1);
    assert.equal(fired, 1, "fired when due");
    await clock.tickAsync(10 * 2 ** 31);
    assert.equal(fired, 1, "and only once");
  } finally {
    clock.uninstall();
  }
});

Deno.test("longTimeout: chains short timers too (a small max) and clear() stops it", async () => {
  const clock = installClock();
  try {
    let fired = 0;
    longTimeout(() => fired++, 1_000, 300);
    await clock.tickAsync(999);
    assert.equal(fired, 0);
    await clock.tickAsync(1);
    assert.equal(fired, 1);
    const t = longTimeout(() => fired++, 1_000, 300);
    await clock.tickAsync(700);
    t.clear();
    await clock.tickAsync(1_000);
    assert.equal(fired, 1, "cleared mid-chain: never fires");
    assert.equal(clock.countTimers(), 0, "no timer left armed");
  } finally {
    clock.uninstall();
  }
});

Deno.test("sleep: resolves when due, at once on abort, at once when already aborted", async () => {
  const clock = installClock();
  try {
    let slept = false;
    void sleep(30 * 86_400_000).then(() => slept = true);
    await clock.tickAsync(MAX_TIMER_MS + 1);
    assert.equal(slept, false, "a 30-day sleep is not over after 24.8 days");
    await clock.tickAsync(30 * 86_400_000);
    assert.equal(slept, true);

    const ac = new AbortController();
    let woke = false;
    void sleep(60_000, ac.signal).then(() => woke = true);
    await clock.tickAsync(10);
    assert.equal(woke, false);
    ac.abort();
    await clock.tickAsync(0);
    assert.equal(woke, true, "abort ends the sleep without time passing");
    assert.equal(clock.countTimers(), 0, "the aborted sleep's timer was cleared");

    let early = false;
    void sleep(60_000, ac.signal).then(() => early = true);
    await clock.tickAsync(0);
    assert.equal(early, true, "an aborted signal: no sleep at all");
  } finally {
    clock.uninstall();
  }
});
