import assert from "node:assert/strict";
import { formatDuration, parseDuration } from "./duration.ts";

Deno.test("parseDuration: every unit converts to milliseconds", () => {
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("5s"), 5_000);
  assert.equal(parseDuration("2m"), 120_000);
  assert.equal(parseDuration("24h"), 86_400_000);
  assert.equal(parseDuration("7d"), 7 * 86_400_000);
});

Deno.test("parseDuration: a bare number (number or string) is seconds", () => {
  assert.equal(parseDuration(5), 5_000);
  assert.equal(parseDuration("5"), 5_000);
  assert.equal(parseDuration(0), 0);
  assert.equal(parseDuration("0"), 0);
  assert.equal(parseDuration(1.5), 1_500);
});

Deno.test("parseDuration: fractions and surrounding whitespace are accepted", () => {
  assert.equal(parseDuration("1.5s"), 1_500);
  assert.equal(parseDuration("0.5m"), 30_000);
  assert.equal(parseDuration("  5 s  "), 5_000);
  // String durations are rounded to whole milliseconds.
  assert.equal(parseDuration("1.0004s"), 1_000);
  assert.equal(parseDuration("1.0006s"), 1_001);
});

Deno.test("parseDuration: invalid inputs give undefined", () => {
  for (
    const bad of [
      "",
      " ",
      "s",
      "5x",
      "5 sec",
      "5S",
      "-1s",
      "-5",
      "1e3",
      "5s5",
      "5s 2m",
      ".5s",
      "five",
    ]
  ) {
    assert.equal(parseDuration(bad), undefined, `expected ${JSON.stringify(bad)} to be rejected`);
  }
  for (const bad of [-1, NaN, Infinity, -Infinity, null, undefined, true, {}, [], ["5s"]]) {
    assert.equal(parseDuration(bad), undefined, `expected ${String(bad)} to be rejected`);
  }
});

Deno.test("formatDuration: uses the largest unit that divides exactly", () => {
  assert.equal(formatDuration(1_500), "1500ms");
  assert.equal(formatDuration(250), "250ms");
  assert.equal(formatDuration(1_000), "1s");
  assert.equal(formatDuration(30_000), "30s");
  assert.equal(formatDuration(90_000), "90s");
  assert.equal(formatDuration(120_000), "2m");
  assert.equal(formatDuration(3_600_000), "1h");
  assert.equal(formatDuration(36 * 3_600_000), "36h");
  assert.equal(formatDuration(86_400_000), "1d");
  assert.equal(formatDuration(7 * 86_400_000), "7d");
  assert.equal(formatDuration(0), "0ms");
});

Deno.test("formatDuration output parses back to the same milliseconds", () => {
  for (const ms of [0, 1, 999, 1_000, 1_500, 61_000, 120_000, 5_400_000, 86_400_000, 90_061_001]) {
    assert.equal(parseDuration(formatDuration(ms)), ms, `round trip of ${ms}`);
  }
});
